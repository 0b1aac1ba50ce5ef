import type { QueryResultRow } from 'pg'
import pg from 'pg'

/** Where and as whom the admin connections of the test harness go. */
export interface AdminTarget {
  readonly host: string
  readonly port: number
  readonly user: string
  readonly password: string
  /** Default `postgres`, which always exists (the test database may not yet). */
  readonly database?: string
}

/**
 * Opens a short-lived connection, runs `fn`, closes it. Every step is bounded: a server that
 * is starting, stopping or killed must make the harness poll again, never hang.
 */
export async function withClient<T>(
  target: AdminTarget,
  timeoutMs: number,
  fn: (client: pg.Client) => Promise<T>,
): Promise<T> {
  const bound = Math.max(500, Math.min(timeoutMs, 10_000))
  const client = new pg.Client({
    host: target.host,
    port: target.port,
    user: target.user,
    password: target.password,
    database: target.database ?? 'postgres',
    connectionTimeoutMillis: bound,
    query_timeout: bound,
    application_name: 'pgsplit-testing',
  })
  // A server killed while we hold the connection emits 'error'; without a listener that would crash.
  client.on('error', () => {})
  try {
    await client.connect()
    return await fn(client)
  } finally {
    await Promise.race([client.end().catch(() => {}), new Promise((resolve) => setTimeout(resolve, 1_000))])
  }
}

/** Runs one statement on a fresh connection and returns its rows. */
export function queryRows<R extends QueryResultRow>(
  target: AdminTarget,
  timeoutMs: number,
  sql: string,
  params: unknown[] = [],
): Promise<R[]> {
  return withClient(target, timeoutMs, async (client) => (await client.query<R>(sql, params)).rows)
}

/** `"name"` with inner quotes doubled: a safe SQL identifier. */
export const quoteIdent = (name: string): string => `"${name.replaceAll('"', '""')}"`

/** `'text'` with inner quotes doubled: a safe SQL string literal (standard_conforming_strings is on). */
export const quoteLiteral = (text: string): string => `'${text.replaceAll("'", "''")}'`
