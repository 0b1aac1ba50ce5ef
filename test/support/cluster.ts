import type { RoleTarget } from '../../src/index.js'

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
