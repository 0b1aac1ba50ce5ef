import type { ListLinks } from './intrusive-list.js'
import { IntrusiveList } from './intrusive-list.js'

/** A wait under a client-side deadline: a lease running a statement, or queued for a client. */
export interface Deadlined {
  /** `Date.now()` after which the wait has failed; 0 for an item with no deadline of its own. */
  deadline: number
  expire(): void
}

/** A statement on a lease, in a node's list of statements in flight. */
export interface DeadlineItem extends ListLinks<DeadlineItem>, Deadlined {}

/** Sweeps are 5 ms to 1 s apart: a tenth of the bound. */
function sweepPeriodMs(timeoutMs: number): number {
  return Math.min(1_000, Math.max(5, Math.floor(timeoutMs / 10)))
}

/**
 * One timer per list instead of one per wait (a timer set and cleared per statement or per
 * queued checkout, with its closures, cost about a microsecond of client CPU per query). An item
 * fails at most a tenth of the bound late (at most 1 s), never early. The sweep runs only while
 * the list has items, unref'd: it never keeps the process alive.
 */
export class DeadlineSweep<T extends ListLinks<T> & Deadlined> {
  readonly #list: IntrusiveList<T>
  readonly #periodMs: number
  #timer: NodeJS.Timeout | null = null

  constructor(list: IntrusiveList<T>, timeoutMs: number) {
    this.#list = list
    this.#periodMs = sweepPeriodMs(timeoutMs)
  }

  /** Time between sweeps: an item fails at most this late. */
  get periodMs(): number {
    return this.#periodMs
  }

  /** Starts sweeping, if it is not already: call after giving an item of the list a deadline. */
  arm(): void {
    if (this.#timer !== null) return
    this.#timer = setInterval(() => this.#sweep(), this.#periodMs)
    this.#timer.unref()
  }

  #sweep(): void {
    const now = Date.now()
    this.#list.drain(
      (item) => item.deadline !== 0 && item.deadline <= now,
      (item) => item.expire(),
    )
    if (this.#list.size === 0 && this.#timer !== null) {
      clearInterval(this.#timer)
      this.#timer = null
    }
  }
}

/** The pool's `query_timeout` for statements on leases, kept by one {@link DeadlineSweep} per node. */
export class StatementDeadlines {
  readonly timeoutMs: number
  readonly #items = new IntrusiveList<DeadlineItem>()
  readonly #sweep: DeadlineSweep<DeadlineItem>

  /** `timeoutMs` 0: no bound (the statement list is never used). */
  constructor(timeoutMs: number) {
    this.timeoutMs = timeoutMs
    this.#sweep = new DeadlineSweep(this.#items, timeoutMs)
  }

  /** Time between sweeps: a statement fails at most this late. */
  get periodMs(): number {
    return this.#sweep.periodMs
  }

  /** `timeoutMs`: the statement's own bound when shorter (see Statement.deadlineMs). */
  add(item: DeadlineItem, timeoutMs = this.timeoutMs): void {
    item.deadline = Date.now() + timeoutMs
    this.#items.add(item)
    this.#sweep.arm()
  }

  remove(item: DeadlineItem): void {
    this.#items.remove(item)
  }
}
