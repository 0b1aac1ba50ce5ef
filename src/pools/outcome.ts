import type pg from 'pg'

/**
 * What a failure means, for every path (read, write, transaction, Submittable, causal wait,
 * Kysely). Decided from the phase, the state of the client it happened on and the SQLSTATE;
 * the few pg errors that carry no SQLSTATE are recognised here and nowhere else.
 *
 * - `not-sent`: nothing reached the server (dead client, pool replaced): safe to send again.
 * - `exhausted`: the pool had no free client within `connectionTimeoutMillis`: nothing sent.
 * - `too-many-connections`: the server refused a new session (53300): nothing sent.
 * - `node-gone`: the node refused or dropped a new connection (ECONNREFUSED, 57P03, ...): nothing sent.
 * - `read-only`: 25006, the statement did not run.
 * - `timeout`: the client-side `query_timeout` fired: the statement may still be running.
 * - `outcome-unknown`: the connection broke after the statement was sent.
 * - `recovery-conflict`: a replica cancelled the statement for replay (40001 / 57P04).
 * - `sql`: the server's answer to the statement (or a setup error): the caller's business.
 */
export type Outcome =
  | 'not-sent'
  | 'exhausted'
  | 'too-many-connections'
  | 'node-gone'
  | 'read-only'
  | 'timeout'
  | 'outcome-unknown'
  | 'recovery-conflict'
  | 'sql'

/** Where the failure happened: getting a client, or running a statement on one. */
export type Phase = 'connect' | 'query'

interface ClientFlags {
  _queryable?: boolean
  _ending?: boolean
}

/** pg-pool's message when a full pool had no client for `connectionTimeoutMillis`. */
export const POOL_TIMEOUT_MESSAGE = 'timeout exceeded when trying to connect'
/** pg-pool's message for connect() on a pool that was ended. */
const POOL_ENDED = 'Cannot use a pool after calling end on the pool'
/** pg's message for a query refused before it was written (the client is dead or closing). */
const NOT_QUERYABLE = /not queryable/
/** pg's client-side `query_timeout`. */
const READ_TIMEOUT = 'Query read timeout'
/** pg and Node messages, without a SQLSTATE, for a connection that failed or broke. */
const CONNECTION_MESSAGE =
  /Connection terminated|connection timeout|timeout expired|ECONNREFUSED|ECONNRESET|EPIPE|socket hang up|read ECONNRESET/i

const CONNECTION_CODES = new Set([
  '57P01', // admin shutdown / unexpected postmaster exit
  '57P02', // crash shutdown
  '57P03', // cannot connect now (starting up, shutting down)
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
])

/** Marks an error made by pgsplit for a client that was never used (a replaced pool's waiter). */
export const NOT_SENT = Symbol('pgsplit.notSent')

/** A client pg has given up on (its socket failed, or it is closing): nothing can be sent on it. */
export function isDead(client: pg.PoolClient | pg.Client): boolean {
  const flags = client as unknown as ClientFlags
  return flags._queryable === false || flags._ending === true
}

function codeOf(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : ''
}

function messageOf(err: unknown): string {
  const message = (err as { message?: unknown } | null)?.message
  return typeof message === 'string' ? message : ''
}

/** True when the error says the connection (not the statement) failed. */
export function isConnectionLevel(err: unknown): boolean {
  const code = codeOf(err)
  if (code.startsWith('08') || CONNECTION_CODES.has(code)) return true
  return code === '' && CONNECTION_MESSAGE.test(messageOf(err))
}

/**
 * The one outcome rule. `client` is the client the statement ran on (query phase); `onReplica`
 * tells recovery conflicts from the primary's serialization failures (both 40001).
 */
export function outcomeOf(
  err: unknown,
  phase: Phase,
  client: pg.PoolClient | null = null,
  onReplica = false,
): Outcome {
  if ((err as { [NOT_SENT]?: boolean } | null)?.[NOT_SENT] === true) return 'not-sent'
  const code = codeOf(err)
  const message = messageOf(err)
  if (phase === 'connect') {
    if (code === '' && message === POOL_TIMEOUT_MESSAGE) return 'exhausted'
    // A pool ended under the caller (its node's pool was replaced, or the cluster ended).
    if (code === '' && message === POOL_ENDED) return 'not-sent'
    if (code === '53300') return 'too-many-connections'
    if (isConnectionLevel(err) || (code === '' && /timeout/i.test(message))) return 'node-gone'
    return 'sql'
  }
  if (code === '' && NOT_QUERYABLE.test(message)) return 'not-sent'
  if (code === '' && message === READ_TIMEOUT) return 'timeout'
  if (code === '25006') return 'read-only'
  if (onReplica && (code === '40001' || code === '57P04')) return 'recovery-conflict'
  if (isConnectionLevel(err)) return 'outcome-unknown'
  // A client that died with an error of another shape (TLS, protocol): it was sent, then lost.
  if (client !== null && code === '' && isDead(client)) return 'outcome-unknown'
  return 'sql'
}

/** Outcomes after which a read may run again elsewhere: nothing it did can matter. */
export function isNodeFailure(outcome: Outcome): boolean {
  return (
    outcome === 'not-sent' ||
    outcome === 'too-many-connections' ||
    outcome === 'node-gone' ||
    outcome === 'outcome-unknown' ||
    outcome === 'recovery-conflict'
  )
}
