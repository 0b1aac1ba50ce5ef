import type { ListLinks } from './intrusive-list.js'
import { IntrusiveList } from './intrusive-list.js'

/** A statement under a client-side deadline (a lease running it). */
export interface DeadlineItem extends ListLinks<DeadlineItem> {
  /** `Date.now()` after which the statement has failed with pg's `Query read timeout`. */
  deadline: number
  expire(): void
}

/**
 * The pool's `query_timeout` for statements on leases, as one sweep per node instead of one pg
 * timer per query (a timer set and cleared per statement, with its closures, cost about a
 * microsecond of client CPU per query). A statement fails at most a tenth of the bound late (at
 * most 1 s, at least 5 ms between sweeps), never early. The sweep runs only while statements are
 * in flight, unref'd: it never keeps the process alive.
 */
export class StatementDeadlines {
  readonly timeoutMs: number
  readonly #periodMs: number
  readonly #items = new IntrusiveList<DeadlineItem>()
  #timer: NodeJS.Timeout | null = null

  /** `timeoutMs` 0: no bound (the statement list is never used). */
  constructor(timeoutMs: number) {
    this.timeoutMs = timeoutMs
    this.#periodMs = Math.min(1_000, Math.max(5, Math.floor(timeoutMs / 10)))
  }

  /** Time between sweeps: a statement fails at most this late. */
  get periodMs(): number {
    return this.#periodMs
  }

  /** `timeoutMs`: the statement's own bound when shorter (see Statement.deadlineMs). */
  add(item: DeadlineItem, timeoutMs = this.timeoutMs): void {
    item.deadline = Date.now() + timeoutMs
    this.#items.add(item)
    if (this.#timer === null) {
      this.#timer = setInterval(() => this.#sweep(), this.#periodMs)
      this.#timer.unref()
    }
  }

  remove(item: DeadlineItem): void {
    this.#items.remove(item)
  }

  #sweep(): void {
    const now = Date.now()
    this.#items.drain(
      (item) => item.deadline <= now,
      (item) => item.expire(),
    )
    if (this.#items.size === 0 && this.#timer !== null) {
      clearInterval(this.#timer)
      this.#timer = null
    }
  }
}
