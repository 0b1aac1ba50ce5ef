import type { EventEmitter } from 'node:events'
import type { Cluster, RoleTarget } from '../../src/index.js'

/** The port of the server that ran `sql` (a statement returning `inet_server_port() AS p`). */
export async function portOf(
  db: Pick<RoleTarget, 'query'>,
  sql = 'SELECT inet_server_port() AS p',
): Promise<number> {
  const { rows } = await db.query<{ p: number }>(sql)
  return Number(rows[0]?.p)
}

/** Polls `check` every `everyMs` until it returns true, at most `timeoutMs`. */
export async function eventually(
  check: () => boolean | Promise<boolean>,
  { timeoutMs = 20_000, everyMs = 50, what = 'condition' } = {},
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (let i = 0; i < 100_000; i++) {
    if (await check()) return
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, everyMs))
  }
}

/** Counts how often each value occurs. */
export function tally<T>(values: readonly T[]): Map<T, number> {
  const out = new Map<T, number>()
  for (const v of values) out.set(v, (out.get(v) ?? 0) + 1)
  return out
}

/** A node's name in the library's topology and events, for a server on 127.0.0.1. */
export const nodeName = (port: number): string => `127.0.0.1:${port}`

/**
 * Polls `check` until it returns something other than undefined/false and returns that; bounded
 * in time and count. A check that throws ends the wait, unless `retryErrors`: then it counts as
 * "not yet" and the timeout's message names its last error.
 */
export async function until<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 10_000,
  { everyMs = 20, retryErrors = false } = {},
): Promise<T> {
  const started = Date.now()
  let last: unknown
  for (let i = 0; i < 100_000; i++) {
    try {
      const value = await check()
      if (value !== undefined && value !== false) return value as T
    } catch (err) {
      if (!retryErrors) throw err
      last = err
    }
    if (Date.now() - started > timeoutMs) break
    await new Promise((r) => setTimeout(r, everyMs))
  }
  throw new Error(
    `timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}`,
  )
}

/** An event a Cluster emitted, with its payload and when. */
export interface Recorded {
  name: string
  payload: Record<string, unknown>
  at: number
}

/**
 * Records the events `names` of `db` as they come. Also swallows its 'error' events: idle
 * clients of a server that dies report errors (pg.Pool semantics), which must not crash a test.
 */
export function recordEvents(db: Cluster, names: readonly string[]): Recorded[] {
  const list: Recorded[] = []
  for (const name of names) {
    ;(db as unknown as EventEmitter).on(name, (payload: Record<string, unknown>) =>
      list.push({ name, payload, at: Date.now() }),
    )
  }
  db.on('error', () => {})
  return list
}
