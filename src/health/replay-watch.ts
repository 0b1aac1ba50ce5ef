import type { ClusterNode } from '../pools/node.js'
import { parseLsn } from '../pools/node.js'
import type { WriteToken } from '../router/consistency.js'
import { hasReached } from '../router/route.js'
import { isConnectionError, NodeProber } from './probe.js'

/** The position poll: the replica's replay LSN, on a connection of pgsplit's own. */
export const REPLAY_SQL = '/* pgsplit causal wait */ SELECT pg_last_wal_replay_lsn()::text AS lsn'

/**
 * Polls of one replica start at least this far apart while reads wait on it (under load a round
 * trip is longer and polls run back to back); while its position does not move (replay paused,
 * or a long transaction replaying) the spacing doubles up to {@link MAX_POLL_SPACING_MS}.
 */
const POLL_SPACING_MS = 1
const MAX_POLL_SPACING_MS = 16

interface Waiter {
  readonly token: WriteToken
  readonly deadline: number
  readonly done: (reached: boolean) => void
}

/** What the watch tells the rest of the cluster. */
export interface ReplayWatchHooks {
  /** A replica's replay position was read (the monitor keeps the highest). */
  replayed(node: ClusterNode, lsn: bigint): void
  /** A poll failed on the connection, not in SQL: keep reads away from the replica for a while. */
  failed(node: ClusterNode): void
}

/**
 * Causal reads waiting for a replica to replay their token share that replica's position polls.
 *
 * One poll of a replica is in flight at a time, on a connection of its own (never a pooled
 * one, so a waiting read holds no replica connection), and its answer settles every read
 * waiting on that replica: under load the reads of many writes wait for one poll, where a poll
 * per read cost each causal read a statement of client and server CPU. A position observed at
 * any time before the read is sent is a safe proof (replay only moves forward on a timeline,
 * and `hasReached` checks the timeline), so a read sent after its waiter settles sees the write.
 *
 * Every wait is bounded by its deadline, whether or not the poll answers (a blackholed replica
 * holds its poll until the probe timeout, not its waiters).
 */
export class ReplayWatch {
  readonly #timeoutMs: number
  readonly #hooks: ReplayWatchHooks
  readonly #replicas = new Map<ClusterNode, ReplicaWatch>()
  #ended = false
  #polls = 0

  constructor(timeoutMs: number, hooks: ReplayWatchHooks) {
    this.#timeoutMs = timeoutMs
    this.#hooks = hooks
  }

  /** Position polls sent so far (the benchmark reports how many reads shared each). */
  get polls(): number {
    return this.#polls
  }

  /**
   * Resolves `true` once `node`'s known replay position has reached `token`, `false` at
   * `waitMs`, when a poll fails or when the cluster ends. Never rejects.
   *
   * ```ts
   * if (await watch.wait(replica, token, 100)) runReadOn(replica)
   * ```
   */
  wait(node: ClusterNode, token: WriteToken, waitMs: number): Promise<boolean> {
    if (hasReached(node, token)) return Promise.resolve(true)
    if (this.#ended || waitMs <= 0) return Promise.resolve(false)
    let watch = this.#replicas.get(node)
    if (watch === undefined) {
      watch = new ReplicaWatch(node, new NodeProber(node, this.#timeoutMs, null), this.#hooks, () => {
        this.#polls++
      })
      this.#replicas.set(node, watch)
    }
    const w = watch
    return new Promise((resolve) => w.add({ token, deadline: Date.now() + waitMs, done: resolve }))
  }

  /** A node left the topology: its waiters give up (they read elsewhere) and its connection closes. */
  forget(node: ClusterNode): void {
    this.#replicas.get(node)?.end()
    this.#replicas.delete(node)
  }

  end(): void {
    this.#ended = true
    for (const watch of this.#replicas.values()) watch.end()
    this.#replicas.clear()
  }
}

/** The waiters of one replica and its poll loop. */
class ReplicaWatch {
  readonly #node: ClusterNode
  readonly #prober: NodeProber
  readonly #hooks: ReplayWatchHooks
  readonly #counted: () => void
  /** In arrival order; with one `causalWaitMs` for all, deadlines come in order too. */
  #waiters: Waiter[] = []
  #polling = false
  #lastPollAt = 0
  #spacingMs = POLL_SPACING_MS
  #lastLsn: bigint | null = null
  #pollTimer: NodeJS.Timeout | null = null
  #deadlineTimer: NodeJS.Timeout | null = null
  #deadlineAt = 0
  #ended = false

  constructor(node: ClusterNode, prober: NodeProber, hooks: ReplayWatchHooks, counted: () => void) {
    this.#node = node
    this.#prober = prober
    this.#hooks = hooks
    this.#counted = counted
  }

  add(waiter: Waiter): void {
    this.#waiters.push(waiter)
    this.#schedule()
  }

  /** Starts a poll when reads wait and none is in flight; keeps the deadline timer armed. */
  #schedule(): void {
    if (this.#ended || this.#waiters.length === 0) {
      this.#clearDeadline()
      return
    }
    this.#armDeadline()
    if (this.#polling || this.#pollTimer !== null) return
    const wait = this.#lastPollAt + this.#spacingMs - Date.now()
    if (wait > 0) {
      this.#pollTimer = setTimeout(() => {
        this.#pollTimer = null
        this.#poll()
      }, wait)
      this.#pollTimer.unref()
    } else {
      this.#poll()
    }
  }

  #poll(): void {
    if (this.#ended || this.#waiters.length === 0) return
    this.#polling = true
    this.#lastPollAt = Date.now()
    this.#counted()
    this.#prober.query<{ lsn: string | null }>(REPLAY_SQL).then(
      (rows) => {
        this.#polling = false
        const lsn = parseLsn(rows[0]?.lsn)
        const moved = lsn !== null && (this.#lastLsn === null || lsn > this.#lastLsn)
        this.#spacingMs = moved ? POLL_SPACING_MS : Math.min(MAX_POLL_SPACING_MS, this.#spacingMs * 2)
        if (lsn !== null) {
          this.#lastLsn = lsn
          this.#hooks.replayed(this.#node, lsn)
        }
        this.#settle(false)
      },
      (err: unknown) => {
        this.#polling = false
        // An SQL error (a proxy that refuses the function, say) is no sign the replica is down.
        if (isConnectionError(err)) this.#hooks.failed(this.#node)
        this.#settle(true)
      },
    )
  }

  /** Releases the waiters whose token the replica has reached, and those out of time. */
  #settle(giveUp: boolean): void {
    const now = Date.now()
    const waiting: Waiter[] = []
    for (const w of this.#waiters) {
      if (!giveUp && hasReached(this.#node, w.token)) w.done(true)
      else if (giveUp || now >= w.deadline) w.done(false)
      else waiting.push(w)
    }
    this.#waiters = waiting
    this.#schedule()
  }

  #armDeadline(): void {
    const first = this.#waiters[0]!.deadline
    if (this.#deadlineTimer !== null && this.#deadlineAt <= first) return
    this.#clearDeadline()
    this.#deadlineAt = first
    this.#deadlineTimer = setTimeout(
      () => {
        this.#deadlineTimer = null
        this.#expire()
      },
      Math.max(0, first - Date.now()),
    )
    this.#deadlineTimer.unref()
  }

  #clearDeadline(): void {
    if (this.#deadlineTimer !== null) clearTimeout(this.#deadlineTimer)
    this.#deadlineTimer = null
  }

  /** The deadline timer fired: only the waiters out of time leave (a poll may be in flight). */
  #expire(): void {
    const now = Date.now()
    const waiting: Waiter[] = []
    for (const w of this.#waiters) {
      if (now >= w.deadline) w.done(hasReached(this.#node, w.token))
      else waiting.push(w)
    }
    this.#waiters = waiting
    this.#schedule()
  }

  end(): void {
    this.#ended = true
    if (this.#pollTimer !== null) clearTimeout(this.#pollTimer)
    this.#pollTimer = null
    this.#clearDeadline()
    const waiters = this.#waiters
    this.#waiters = []
    for (const w of waiters) w.done(false)
    this.#prober.end()
  }
}
