import type pg from 'pg'
import type { ListLinks } from './intrusive-list.js'
import type { ClusterNode } from './node.js'
import {
  isConnectionLevel,
  isDead,
  NOT_SENT,
  type Outcome,
  outcomeOf,
  POOL_TIMEOUT_MESSAGE,
} from './outcome.js'
import type { Deadlined, DeadlineItem } from './statement-deadlines.js'
import type { StatementHandle } from './statement-handle.js'

/**
 * A client checked out of one node's pool, and the one rule for giving it back. Every path
 * (queries, Submittables, `connect()`, transactions, causal waits, the Kysely connection) gets
 * its client here, so counters, dead-client checks and the release rule cannot drift apart.
 */
export interface Lease {
  readonly node: ClusterNode
  readonly client: pg.PoolClient
  /** A statement on this client failed because the connection did: it is never reused. */
  lost: boolean
  /**
   * Gives the client back. It is destroyed (never reused) when `err` is a connection failure,
   * the client is dead, a statement on it was lost or timed out, or the session is inside a
   * transaction block (open or aborted): nobody inherits another caller's transaction. An SQL
   * error on a healthy idle session costs no reconnect. Idempotent.
   */
  release(err?: unknown): void
}

export type LeaseCallback = (err: Error | null, lease: Lease | null) => void

/**
 * A caller waiting for a client of a node's current pool: settled at once when it goes away.
 * `deadline` is set (and `expire` fails it with pg-pool's timeout) only for a caller queued behind
 * busy clients; the node's queue sweep keeps it (see DeadlineSweep).
 */
export interface Waiter extends ListLinks<Waiter>, Deadlined {
  abandon(err: Error): void
}

type StatementDone = (err: Error | null | undefined, result: pg.QueryResult) => void

/**
 * One checkout: the waiter while the pool has no client for it, then the lease. One object per
 * checkout, because every read passes here.
 */
class NodeLease implements Lease, Waiter, DeadlineItem {
  readonly node: ClusterNode
  // Set once granted; a lease is only handed out after that.
  client!: pg.PoolClient
  lost = false
  // Links of the node's waiter list while waiting, then of its deadline list while a statement
  // runs: a lease leaves the first before it can enter the second.
  prevInList: (Waiter & DeadlineItem) | null = null
  nextInList: (Waiter & DeadlineItem) | null = null
  /** While waiting: when a caller queued behind busy clients times out; then the statement's. */
  deadline = 0
  /** The running statement's completion while it is under the node's deadline sweep. */
  onDeadline: StatementDone | null = null
  #callback: LeaseCallback | null
  #attempts = 0
  /** 0 waiting, 1 granted, 2 released, 3 abandoned (the caller has moved on). */
  #state: 0 | 1 | 2 | 3 = 0

  constructor(node: ClusterNode, callback: LeaseCallback) {
    this.node = node
    this.#callback = callback
  }

  /** Asks the node's current pool for a client (again, after one found dead). */
  request(): void {
    const node = this.node
    const pool = node.pool
    node.waiters.add(this)
    // pg-pool is given no connectionTimeoutMillis (node.ts): a caller that will queue behind
    // busy clients gets the bound here, with pg-pool's own message (the outcome rule reads it
    // as 'exhausted'). A new connection is bounded by the client's connect timeout, and an idle
    // client is handed over on the next tick. The bound is kept by the node's queue sweep, not a
    // timer per checkout. A request made again after a dead client (at most 3) starts a new
    // bound, as pg-pool's own timer did.
    if (
      node.connectTimeoutMs > 0 &&
      pool.totalCount >= (pool.options.max ?? 10) &&
      pool.idleCount <= pool.waitingCount
    ) {
      this.deadline = Date.now() + node.connectTimeoutMs
      node.queueSweep.arm()
    }
    pool.connect((err, client, done) => this.#granted(err, client, done))
  }

  #granted(err: Error | undefined, client: pg.PoolClient | undefined, done: (e?: Error) => void): void {
    if (this.#state !== 0) {
      // Abandoned (the pool was replaced or ended): the caller has moved on.
      if (client !== undefined) done(err ?? undefined)
      return
    }
    this.node.waiters.remove(this)
    this.deadline = 0
    if (err !== undefined && err !== null) {
      this.#fail(err)
      return
    }
    const c = client!
    if (isDead(c) && this.#attempts++ < 3) {
      // Nothing was sent on it: drop it and take another.
      c.release(new Error('connection found dead before use'))
      this.request()
      return
    }
    this.client = c
    this.#state = 1
    const callback = this.#callback!
    this.#callback = null
    callback(null, this)
  }

  /**
   * Queued for a client past `connectionTimeoutMillis` (the queue sweep), or the statement ran
   * past its `query_timeout` (see StatementDeadlines).
   */
  expire(): void {
    if (this.#state === 0) {
      this.node.waiters.remove(this)
      // Still queued in pg-pool: the client it hands over later goes straight back (#granted).
      this.#fail(new Error(POOL_TIMEOUT_MESSAGE))
      return
    }
    const done = this.onDeadline
    this.onDeadline = null
    // pg's own message for its client-side timeout: the outcome rule reads it as 'timeout'.
    done?.(new Error('Query read timeout'), undefined as unknown as pg.QueryResult)
  }

  /** The pool went away under this waiter (see ClusterNode's waiter list). */
  abandon(err: Error): void {
    if (this.#state === 0) this.#fail(err)
  }

  #fail(err: Error): void {
    this.#state = 3
    this.node.inFlight--
    const callback = this.#callback!
    this.#callback = null
    callback(err, null)
  }

  release(err?: unknown): void {
    if (this.#state !== 1) return
    this.#state = 2
    this.node.inFlight--
    const client = this.client
    const status = client.getTransactionStatus?.() ?? 'I'
    const broken =
      this.lost ||
      isDead(client) ||
      (status !== 'I' && status !== null) ||
      (err !== undefined && isConnectionLevel(err))
    if (!broken) {
      client.release()
      return
    }
    client.release(err instanceof Error ? err : new Error('pgsplit: connection not reusable'))
  }
}

/** An error for a waiter whose pool went away before it got a client: nothing was sent. */
export function notSentError(message: string): Error {
  return Object.assign(new Error(message), { [NOT_SENT]: true })
}

/**
 * Checks a client out of `node`'s current pool. A client found dead before use is dropped and
 * another taken (nothing was sent on it), at most a few times.
 */
export function acquire(node: ClusterNode, callback: LeaseCallback): void {
  node.inFlight++
  new NodeLease(node, callback).request()
}

/** {@link acquire} as a promise. */
export function acquireLease(node: ClusterNode): Promise<Lease> {
  return new Promise((resolve, reject) => {
    acquire(node, (err, lease) => (err === null ? resolve(lease!) : reject(err)))
  })
}

/** What a statement on a lease answered: the result, or the error and what it means. */
export type StatementCallback = (
  err: Error | null,
  result: pg.QueryResult | null,
  outcome: Outcome | null,
) => void

/** A QueryConfig or plain text + values, as the paths pass statements around. */
export interface Statement {
  readonly text: string
  readonly values: unknown[] | undefined
  /** The caller's QueryConfig when it carries more than text and values (name, rowMode, types...). */
  readonly config: pg.QueryConfig | null
  /**
   * The caller's way to stop it (see StatementHandle): cancels the statement on its server, or
   * ends the session. A statement aborted before it was sent is not sent.
   */
  readonly handle?: StatementHandle | undefined
  /** pgsplit's own statement (a causal wait's position poll): not counted as a caller's query. */
  readonly internal?: boolean
  /**
   * pgsplit's own bound for this statement when shorter than the pool's `query_timeout` (a
   * write's `failover.writeTimeoutMs`), kept by the node's deadline sweep like the pool's.
   */
  readonly deadlineMs?: number
}

/**
 * Runs one statement on a lease: counts it, and on failure marks the lease (a lost connection,
 * a client-side timeout) and terminates the server-side backend of a timed-out statement so it
 * stops using the node.
 */
export function runStatement(lease: Lease, statement: Statement, callback: StatementCallback): void {
  const node = lease.node
  const client = lease.client
  const handle = statement.handle
  if (handle !== undefined) {
    if (handle.aborted) {
      callback(abortError(handle), null, 'sql')
      return
    }
    const pid = (client as unknown as { processID?: number }).processID
    handle.attach(node, typeof pid === 'number' ? pid : null)
  }
  if (statement.internal !== true) node.queries++
  // The pool's query_timeout is the node's deadline sweep, not a pg timer per statement; a
  // statement with its own query_timeout keeps pg's timer.
  const l = lease as NodeLease
  const deadlineMs = statement.deadlineMs ?? node.deadlines.timeoutMs
  const swept =
    deadlineMs > 0 &&
    (statement.config === null ||
      (statement.config as { query_timeout?: unknown }).query_timeout === undefined)
  let settled = false
  const done: StatementDone = (err, result) => {
    // Once: after the deadline fired, the late answer (or the connection's end) is dropped.
    if (settled) return
    settled = true
    if (swept) {
      l.onDeadline = null
      node.deadlines.remove(l)
    }
    handle?.detach()
    if (err === null || err === undefined) {
      callback(null, result, null)
      return
    }
    node.errors++
    const outcome = outcomeOf(err, 'query', client, node.role === 'replica')
    if (outcome === 'outcome-unknown' || outcome === 'not-sent') lease.lost = true
    if (outcome === 'timeout') {
      lease.lost = true
      const pid = (client as unknown as { processID?: number }).processID
      if (typeof pid === 'number') node.signalBackend(pid, 'terminate')
    }
    callback(err, null, outcome)
  }
  if (swept) {
    l.onDeadline = done
    node.deadlines.add(l, deadlineMs)
  }
  // pg reads the connection's query_timeout synchronously in client.query: 0 for this one call.
  const parameters = swept ? (client as unknown as PgTimeoutParameters).connectionParameters : undefined
  const saved = parameters?.query_timeout
  if (parameters !== undefined) parameters.query_timeout = 0
  try {
    if (statement.config === null) client.query(statement.text, statement.values as unknown[], done)
    else client.query(statement.config, done)
  } catch (err) {
    done(err as Error, undefined as unknown as pg.QueryResult)
  } finally {
    if (parameters !== undefined) parameters.query_timeout = saved
  }
}

interface PgTimeoutParameters {
  connectionParameters?: { query_timeout?: number | false }
}

function abortError(handle: StatementHandle): Error {
  return Object.assign(new Error('statement aborted before it was sent'), {
    name: 'AbortError',
    cause: handle.cause,
  })
}

/** {@link runStatement} as a promise; a rejection carries its outcome as `pgsplitOutcome`. */
export function runOnLease(lease: Lease, statement: Statement): Promise<pg.QueryResult> {
  return new Promise((resolve, reject) => {
    runStatement(lease, statement, (err, result, outcome) => {
      if (err === null) resolve(result!)
      else reject(tagOutcome(err, outcome!))
    })
  })
}

const OUTCOME = Symbol('pgsplit.outcome')

/** Remembers on an error what the outcome rule said of it (for paths that rethrow). */
export function tagOutcome(err: Error, outcome: Outcome): Error {
  ;(err as { [OUTCOME]?: Outcome })[OUTCOME] = outcome
  return err
}

/** The outcome the rule gave this error when it happened, if pgsplit saw it happen. */
export function taggedOutcome(err: unknown): Outcome | undefined {
  return (err as { [OUTCOME]?: Outcome } | null)?.[OUTCOME]
}
