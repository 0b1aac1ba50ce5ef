import { redact } from './pools/connection-string.js'

/**
 * Typed errors of pgsplit. Every error has a stable `code` so callers can branch without
 * parsing messages; none ever carries a password (URLs are redacted before they get here).
 */
export class PgsplitError extends Error {
  readonly code: string
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
    this.code = code
  }
}

/**
 * A configuration value is wrong. `field` is its path as written in the config
 * (`healthCheck.intervalMs`, `nodes[2].maxLag.ms`, `replicas[0]?sslmode` for a URL parameter),
 * `expected` what would have been accepted. The message never shows a password.
 */
export class ConfigError extends PgsplitError {
  readonly field: string
  readonly expected: string | undefined
  constructor(field: string, problem: string, options?: { expected?: string }) {
    super('PGSPLIT_CONFIG', `pgsplit config: ${field} ${problem}`)
    this.field = field
    this.expected = options?.expected
  }
}

/** No writable primary was found within `failover.timeoutMs` (or a split brain has no winner). */
export class NoPrimaryError extends PgsplitError {
  readonly waitedMs: number
  constructor(message: string, waitedMs: number, options?: { cause?: unknown }) {
    super('PGSPLIT_NO_PRIMARY', message, options)
    this.waitedMs = waitedMs
  }
}

/** A read found no eligible replica and `onNoReplica` is `'error'`. */
export class NoReplicaAvailableError extends PgsplitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PGSPLIT_NO_REPLICA', message, options)
  }
}

/**
 * A write reached (or may have reached) the server and its connection broke before the
 * answer came: it may or may not have committed. pgsplit never re-sends it; `cause` is the
 * original error.
 */
export class WriteOutcomeUnknownError extends PgsplitError {
  readonly node: string
  constructor(node: string, cause: unknown) {
    const reason = cause instanceof Error ? cause.message : String(cause)
    super(
      'PGSPLIT_WRITE_OUTCOME_UNKNOWN',
      `write on ${node} may or may not have committed: the connection failed after the statement was sent (${reason}); it was not re-sent`,
      { cause },
    )
    this.node = node
  }
}

/** The cluster was ended with `end()`; no more queries. */
export class ClusterEndedError extends PgsplitError {
  constructor(what: string) {
    super('PGSPLIT_ENDED', `cannot ${what}: the cluster has been ended with end()`)
  }
}

/** `db.query('BEGIN')` and friends: a transaction cannot span pooled statements. */
export class TransactionStatementError extends PgsplitError {
  constructor(statement: string) {
    super(
      'PGSPLIT_TRANSACTION_STATEMENT',
      `'${statement}' sent through db.query() would run on whatever pooled connection the next statement gets; use db.transaction(fn) or a pinned client from db.connect()`,
    )
  }
}

/** Why a write token was refused: see {@link InvalidTokenError}. */
export type InvalidTokenReason = 'malformed' | 'unsigned' | 'bad-signature' | 'ahead' | 'future-timeline'

/**
 * A write token was refused: malformed, unsigned while `tokens.requireSigned` is set, with a
 * signature none of the configured secrets made, or (as {@link TokenAheadError}) pointing past
 * the primary. `reason` says which; the message never echoes more than 40 characters of it.
 */
export class InvalidTokenError extends PgsplitError {
  readonly reason: InvalidTokenReason
  constructor(
    token: unknown,
    reason: InvalidTokenReason = 'malformed',
    detail?: string,
    code = 'PGSPLIT_INVALID_TOKEN',
  ) {
    // Redacted before it is cut: a connection URL pasted as a token must not show its password.
    const shown = typeof token === 'string' ? JSON.stringify(redact(token).slice(0, 40)) : typeof token
    super(
      code,
      `invalid pgsplit write token ${shown}: ${
        detail ?? "expected '<timeline>:<lsn>' like '1:0/3000148' (optionally '.<signature>')"
      }`,
    )
    this.reason = reason
  }
}

/**
 * A well-formed token past the primary's current WAL position, or on a timeline the primary has
 * not reached: no write of this cluster made it, so it is refused rather than waited for.
 */
export class TokenAheadError extends InvalidTokenError {
  constructor(token: string, reason: 'ahead' | 'future-timeline', primary: string) {
    super(
      token,
      reason,
      reason === 'ahead'
        ? `it is past the primary's current WAL position (${primary}); no write of this cluster made it`
        : `its timeline is newer than the primary's (${primary}); no write of this cluster made it`,
      'PGSPLIT_TOKEN_AHEAD',
    )
  }
}

/** Waiting for `ready()` or a node timed out. */
export class TimeoutError extends PgsplitError {
  constructor(message: string) {
    super('PGSPLIT_TIMEOUT', message)
  }
}

/**
 * A node's pool had no free client within `connectionTimeoutMillis` (pg-pool's "timeout
 * exceeded when trying to connect"). Nothing was sent; it is not a failover.
 */
export class PoolExhaustedError extends PgsplitError {
  readonly node: string
  constructor(node: string, waitedMs: number | undefined, options?: { cause?: unknown }) {
    super(
      'PGSPLIT_POOL_EXHAUSTED',
      `no free connection to ${node} within connectionTimeoutMillis${waitedMs === undefined ? '' : `=${waitedMs} ms`}: every client of its pool is in use (raise pool.max, or find what holds clients)`,
      options,
    )
    this.node = node
  }
}

/**
 * The primary is writable (not in recovery) but refused a write as read-only (SQLSTATE 25006),
 * e.g. `default_transaction_read_only = on`. Not a failover: nothing ran, nothing is retried.
 */
export class PrimaryReadOnlyError extends PgsplitError {
  readonly node: string
  readonly sqlState = '25006'
  constructor(node: string, options?: { cause?: unknown }) {
    const reason = options?.cause instanceof Error ? options.cause.message : 'read-only transaction'
    super(
      'PGSPLIT_PRIMARY_READ_ONLY',
      `primary ${node} is not in recovery but refused the write as read-only (25006: ${reason}); check default_transaction_read_only`,
      options,
    )
    this.node = node
  }
}
