import type pg from 'pg'
import type { QueryOptions } from '../cluster-types.js'
import type { Statement } from '../pools/lease.js'
import type { StatementHandle } from '../pools/statement-handle.js'

/**
 * A statement as the caller gave it. Text and values are sent as they are: pg copies a
 * QueryConfig object on every query (property descriptors, ~5 µs here, a tenth of a SELECT's
 * client CPU); a QueryConfig that carries more (name, rowMode, types, ...) is passed through.
 */
class TextStatement implements Statement {
  readonly config = null
  constructor(
    readonly text: string,
    readonly values: unknown[] | undefined,
    readonly handle: StatementHandle | undefined,
  ) {}
}

class ConfigStatement implements Statement {
  constructor(
    readonly text: string,
    readonly values: unknown[] | undefined,
    readonly config: pg.QueryConfig,
    readonly handle: StatementHandle | undefined,
  ) {}
}

/** A QueryConfig with only `text` and `values` (what Kysely's dialect sends). */
function isPlainQueryConfig(config: pg.QueryConfig): boolean {
  const c = config as unknown as Record<string, unknown>
  // Every other field pg's Query reads (prepared statements, row mode, parsers, protocol).
  return (
    c.name === undefined &&
    c.rowMode === undefined &&
    c.types === undefined &&
    c.binary === undefined &&
    c.queryMode === undefined &&
    c.portal === undefined &&
    c.rows === undefined &&
    c.callback === undefined &&
    c.query_timeout === undefined
  )
}

/** The statement of `db.query(text, values)`, or null when `text` is neither SQL nor a QueryConfig. */
export function toStatement(
  text: unknown,
  values: unknown[] | undefined,
  handle?: StatementHandle,
): Statement | null {
  if (typeof text === 'string') return new TextStatement(text, values, handle)
  if (typeof text !== 'object' || text === null) return null
  const config = text as pg.QueryConfig
  if (typeof config.text !== 'string') return null
  const vals = values ?? (config.values as unknown[] | undefined)
  if (isPlainQueryConfig(config)) return new TextStatement(config.text, vals, handle)
  return new ConfigStatement(config.text, vals, values === undefined ? config : { ...config, values }, handle)
}

/** The same statement under pgsplit's own bound of `ms`, kept by the node's deadline sweep. */
export function withDeadline(statement: Statement, ms: number): Statement {
  return {
    text: statement.text,
    values: statement.values,
    config: statement.config,
    handle: statement.handle,
    internal: statement.internal,
    deadlineMs: ms,
  }
}

/** The same statement with a client-side timeout of `ms` (pg's per-query `query_timeout`). */
export function withQueryTimeout(statement: Statement, ms: number): Statement {
  const base = statement.config ?? { text: statement.text }
  return new ConfigStatement(
    statement.text,
    statement.values,
    { ...base, values: statement.values, query_timeout: ms } as pg.QueryConfig,
    statement.handle,
  )
}

/**
 * pgsplit's own callers (the Kysely connection) pass their reusable StatementHandle under this
 * key instead of an AbortSignal: not part of the public options. `Symbol.for`: the ESM and
 * CommonJS builds (or two copies of the package) agree on it.
 */
export const STATEMENT_HANDLE: unique symbol = Symbol.for('pgsplit.statementHandle')

export interface InternalQueryOptions extends QueryOptions {
  [STATEMENT_HANDLE]?: StatementHandle
}
