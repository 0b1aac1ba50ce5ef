import type pg from 'pg'
import type { ClusterNode } from './node.js'
import { isConnectionLevel, isDead, NOT_SENT, type Outcome, outcomeOf } from './outcome.js'
import type { Waiter } from './waiter-list.js'

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
 * One checkout: the waiter while the pool has no client for it, then the lease. One object per
 * checkout, because every read passes here.
 */
class NodeLease implements Lease, Waiter {
  readonly node: ClusterNode
  // Set once granted; a lease is only handed out after that.
  client!: pg.PoolClient
  lost = false
  prevWaiter: Waiter | null = null
  nextWaiter: Waiter | null = null
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
    node.waiters.add(this)
    node.pool.connect((err, client, done) => this.#granted(err, client, done))
  }

  #granted(err: Error | undefined, client: pg.PoolClient | undefined, done: (e?: Error) => void): void {
    if (this.#state !== 0) {
      // Abandoned (the pool was replaced or ended): the caller has moved on.
      if (client !== undefined) done(err ?? undefined)
      return
    }
    this.node.waiters.remove(this)
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

  /** The pool went away under this waiter (see WaiterList.abandonAll). */
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
   * Aborting it cancels the statement on its server (`pg_cancel_backend`), or ends the session
   * when the abort reason is `'terminate'`. A statement aborted before it was sent is not sent.
   */
  readonly signal?: AbortSignal | undefined
  /** pgsplit's own statement (a causal wait's position poll): not counted as a caller's query. */
  readonly internal?: boolean
}

/**
 * Runs one statement on a lease: counts it, and on failure marks the lease (a lost connection,
 * a client-side timeout) and terminates the server-side backend of a timed-out statement so it
 * stops using the node.
 */
export function runStatement(lease: Lease, statement: Statement, callback: StatementCallback): void {
  const node = lease.node
  const client = lease.client
  const signal = statement.signal
  let onAbort: (() => void) | undefined
  if (signal !== undefined) {
    if (signal.aborted) {
      callback(abortError(signal), null, 'sql')
      return
    }
    onAbort = () => {
      const pid = (client as unknown as { processID?: number }).processID
      if (typeof pid === 'number')
        node.signalBackend(pid, signal.reason === 'terminate' ? 'terminate' : 'cancel')
    }
    signal.addEventListener('abort', onAbort, { once: true })
  }
  if (statement.internal !== true) node.queries++
  const done = (err: Error | null | undefined, result: pg.QueryResult) => {
    if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort)
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
  try {
    if (statement.config === null) client.query(statement.text, statement.values as unknown[], done)
    else client.query(statement.config, done)
  } catch (err) {
    done(err as Error, undefined as unknown as pg.QueryResult)
  }
}

function abortError(signal: AbortSignal): Error {
  return Object.assign(new Error('statement aborted before it was sent'), {
    name: 'AbortError',
    cause: signal.reason,
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
