/**
 * Helpers of the reliability and security tests (chaos, network faults, bad input, secrets, TLS):
 * one-shot admin queries that bypass pgsplit, polling, process-level error counters, counts
 * of the library's server connections, and replay paused at random.
 */
import pg from 'pg'
import { expect } from 'vitest'
import type { TestCluster } from '../../src/testing/index.js'

/** One query on a fresh connection of its own (never through pgsplit). */
export async function adminQuery<R extends pg.QueryResultRow = pg.QueryResultRow>(
  url: string,
  sql: string,
  params: unknown[] = [],
  timeoutMs = 10_000,
): Promise<R[]> {
  const client = new pg.Client({
    connectionString: url,
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
  })
  client.on('error', () => {})
  await client.connect()
  try {
    return (await client.query<R>(sql, params)).rows
  } finally {
    await client.end().catch(() => undefined)
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Polls `check` until it stops throwing, for at most `timeoutMs`; then throws its last error. */
export async function eventually<T>(
  check: () => Promise<T> | T,
  timeoutMs = 15_000,
  everyMs = 50,
): Promise<T> {
  const started = Date.now()
  for (;;) {
    try {
      return await check()
    } catch (err) {
      if (Date.now() - started > timeoutMs) throw err
      await sleep(everyMs)
    }
  }
}

/** How long `promise` took to settle, and how. Never rejects. */
export async function timed<T>(
  promise: Promise<T> | (() => Promise<T>),
): Promise<{ ms: number; ok: boolean; value?: T; error?: unknown }> {
  const started = performance.now()
  try {
    const value = await (typeof promise === 'function' ? promise() : promise)
    return { ms: performance.now() - started, ok: true, value }
  } catch (error) {
    return { ms: performance.now() - started, ok: false, error }
  }
}

/**
 * Counts `unhandledRejection` and `uncaughtException` of this process while installed. (Vitest
 * reports them too; the counters make the assertion explicit.)
 */
export function trackProcessErrors(): {
  readonly unhandledRejections: unknown[]
  readonly uncaughtExceptions: unknown[]
  dispose(): void
} {
  const unhandledRejections: unknown[] = []
  const uncaughtExceptions: unknown[] = []
  const onRejection = (reason: unknown) => {
    unhandledRejections.push(reason)
  }
  const onException = (err: unknown) => {
    uncaughtExceptions.push(err)
  }
  process.on('unhandledRejection', onRejection)
  process.on('uncaughtException', onException)
  return {
    unhandledRejections,
    uncaughtExceptions,
    dispose() {
      process.off('unhandledRejection', onRejection)
      process.off('uncaughtException', onException)
    },
  }
}

/**
 * Client connections on the server at `url` whose application_name is one of `names` (the
 * cluster's pools get a distinctive one; the monitor's are `pgsplit-monitor`).
 */
export async function libraryConnections(url: string, names: string[]): Promise<number> {
  const [row] = await adminQuery<{ n: number }>(
    url,
    `SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE application_name = ANY($1::text[]) AND pid <> pg_backend_pid()`,
    [names],
  )
  return row?.n ?? 0
}

/**
 * Waits until none of the servers at `urls` holds a connection of the library: the pools (whose
 * application_name is `app`) and the monitor's (`pgsplit-monitor`).
 */
export async function expectNoLibraryConnections(
  urls: readonly string[],
  app: string,
  timeoutMs: number,
): Promise<void> {
  for (const url of urls) {
    await eventually(async () => {
      expect(await libraryConnections(url, [app, 'pgsplit-monitor'])).toBe(0)
    }, timeoutMs)
  }
}

/**
 * A short name of an error for tallies: `Class(CODE)`, the message of code-less errors, and its
 * cause: `WriteOutcomeUnknownError <- Error: Connection terminated unexpectedly`.
 */
export function errorKey(err: unknown, depth = 0): string {
  if (!(err instanceof Error)) return typeof err
  const code = (err as { code?: unknown }).code
  let key = typeof code === 'string' && !code.startsWith('PGSPLIT_') ? `${err.name}(${code})` : err.name
  if (err.cause !== undefined && depth < 2) key += ` <- ${errorKey(err.cause, depth + 1)}`
  else if (typeof code !== 'string') key += `: ${err.message.slice(0, 60)}`
  return key
}

export function tally(map: Map<string, number>, key: string): void {
  map.set(key, (map.get(key) ?? 0) + 1)
}

export function formatTally(map: Map<string, number>): string {
  if (map.size === 0) return 'none'
  return [...map.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `${k} x${n}`)
    .join(', ')
}

/** Error message, stack and every `cause` down the chain, as one string. */
export function errorText(err: unknown, depth = 0): string {
  if (depth > 10) return ''
  if (!(err instanceof Error)) return String(err)
  const parts = [err.name, err.message, String(err.stack)]
  for (const [key, value] of Object.entries(err)) {
    if (key !== 'cause') parts.push(`${key}=${typeof value === 'string' ? value : safeJson(value)}`)
  }
  if (err.cause !== undefined) parts.push(errorText(err.cause, depth + 1))
  if (err instanceof AggregateError) for (const e of err.errors) parts.push(errorText(e, depth + 1))
  return parts.join('\n')
}

function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)) ?? String(value)
  } catch {
    return String(value)
  }
}

/**
 * Pauses and resumes replay on replicas 1 and 2 at random (every `minMs` to `minMs + spreadMs`)
 * until `stop()`, which leaves both replaying. At most `maxToggles` toggles: the loop is bounded.
 */
export function startReplayChaos(
  cluster: Pick<TestCluster, 'pauseReplay' | 'resumeReplay'>,
  {
    minMs = 5,
    spreadMs = 40,
    maxToggles = 100_000,
  }: { minMs?: number; spreadMs?: number; maxToggles?: number } = {},
): { stop(): Promise<void> } {
  let stopped = false
  const paused = [false, false]
  const loop = (async () => {
    try {
      for (let i = 0; i < maxToggles && !stopped; i++) {
        await sleep(minMs + Math.random() * spreadMs)
        const which = Math.random() < 0.5 ? 1 : 2
        if (paused[which - 1]) await cluster.resumeReplay(which)
        else await cluster.pauseReplay(which)
        paused[which - 1] = !paused[which - 1]
      }
    } finally {
      for (const i of [1, 2]) if (paused[i - 1]) await cluster.resumeReplay(i)
    }
  })()
  return {
    stop: async () => {
      stopped = true
      await loop
    },
  }
}
