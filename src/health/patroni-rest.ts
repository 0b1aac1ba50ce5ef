/**
 * Patroni's REST API, the few calls pgsplit and `pgsplit/testing` make: `GET /cluster` (who is
 * leader, every member's state, timeline, lag and tags) and the POSTs of a switchover or a
 * failover. Every call is bounded by `timeoutMs`; basic auth when a username is set.
 */

/** Tags Patroni publishes for a member (only the ones pgsplit acts on are typed). */
export interface PatroniTags {
  nofailover?: boolean
  noloadbalance?: boolean
  [tag: string]: unknown
}

/** One member as `GET /cluster` lists it (Patroni 3.x). */
export interface PatroniMember {
  name: string
  /** `leader`, `replica`, `sync_standby`, `standby_leader`. */
  role: string
  /** `running`, `streaming`, `starting`, `stopped`, `crashed`, `start failed`, ... */
  state: string
  host: string
  port: number
  api_url?: string
  timeline?: number
  /** Replication lag in bytes, or `'unknown'`. */
  lag?: number | string
  tags?: PatroniTags
}

export interface PatroniClusterState {
  members: PatroniMember[]
  /** Scheduled switchover, paused state, ...: not used by pgsplit. */
  [key: string]: unknown
}

export interface PatroniAuth {
  readonly username?: string | undefined
  readonly password?: string | undefined
}

/** A REST call failed: the endpoint, what went wrong (never the password). */
export class PatroniRestError extends Error {
  override readonly name = 'PatroniRestError'
  readonly code = 'PGSPLIT_PATRONI_REST'
  constructor(
    readonly url: string,
    message: string,
    readonly status?: number,
  ) {
    super(`Patroni REST ${url}: ${message}`)
  }
}

function headers(auth: PatroniAuth | undefined, json: boolean): Record<string, string> {
  const h: Record<string, string> = { accept: 'application/json' }
  if (json) h['content-type'] = 'application/json'
  if (auth?.username !== undefined) {
    h.authorization = `Basic ${Buffer.from(`${auth.username}:${auth.password ?? ''}`).toString('base64')}`
  }
  return h
}

/** `base` without a trailing slash, plus `path`. */
function join(base: string, path: string): string {
  return `${base.replace(/\/+$/, '')}${path}`
}

/** `GET {base}/cluster`, parsed and checked for the fields pgsplit reads. */
export async function getPatroniCluster(
  base: string,
  opts: { auth?: PatroniAuth; timeoutMs: number },
): Promise<PatroniClusterState> {
  const url = join(base, '/cluster')
  let res: Response
  try {
    res = await fetch(url, {
      headers: headers(opts.auth, false),
      signal: AbortSignal.timeout(opts.timeoutMs),
    })
  } catch (err) {
    throw new PatroniRestError(url, describeFetchError(err, opts.timeoutMs))
  }
  if (res.status !== 200) {
    await res.body?.cancel().catch(() => {})
    throw new PatroniRestError(url, `answered HTTP ${res.status}`, res.status)
  }
  let body: unknown
  try {
    body = await res.json()
  } catch (err) {
    throw new PatroniRestError(url, `answered invalid JSON (${describeFetchError(err, opts.timeoutMs)})`)
  }
  const members = (body as { members?: unknown } | null)?.members
  if (!Array.isArray(members)) throw new PatroniRestError(url, 'answer has no members array')
  for (const m of members as Partial<PatroniMember>[]) {
    if (typeof m?.name !== 'string' || typeof m.role !== 'string' || typeof m.state !== 'string') {
      throw new PatroniRestError(url, 'a member lacks name, role or state')
    }
  }
  return body as PatroniClusterState
}

/** `POST {base}{path}` with a JSON body; resolves with the answer's text on 2xx. */
export async function postPatroni(
  base: string,
  path: string,
  body: unknown,
  opts: { auth?: PatroniAuth; timeoutMs: number },
): Promise<string> {
  const url = join(base, path)
  let res: Response
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: headers(opts.auth, true),
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(opts.timeoutMs),
    })
  } catch (err) {
    throw new PatroniRestError(url, describeFetchError(err, opts.timeoutMs))
  }
  const text = await res.text().catch(() => '')
  if (res.status < 200 || res.status >= 300) {
    throw new PatroniRestError(url, `answered HTTP ${res.status}: ${text.slice(0, 200)}`, res.status)
  }
  return text
}

function describeFetchError(err: unknown, timeoutMs: number): string {
  if (err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError')) {
    return `no answer within ${timeoutMs} ms`
  }
  const cause = (err as { cause?: { code?: string; message?: string } } | null)?.cause
  if (cause?.code) return cause.code
  return err instanceof Error ? err.message : String(err)
}
