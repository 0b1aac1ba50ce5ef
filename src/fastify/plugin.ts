import { AsyncResource } from 'node:async_hooks'
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { Cluster } from '../cluster.js'
import type { ClusterConfig, ConsistencyMode } from '../config.js'
import { InvalidTokenError, PgsplitError } from '../errors.js'
import { formatToken, parseToken, type WriteToken } from '../router/consistency.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The pgsplit {@link Cluster} registered by `pgsplit/fastify`. */
    db: Cluster
  }
}

/** The header that carries a write token, both ways, unless `header` says otherwise. */
export const DEFAULT_TOKEN_HEADER = 'x-pgsplit-lsn'

/** Settings of the plugin itself, next to the cluster (or its config). */
export interface PgsplitPluginSettings {
  /**
   * Header carrying the read-your-writes token: read from requests, set on responses of
   * requests that wrote. Default `'x-pgsplit-lsn'`.
   */
  header?: string
  /**
   * End the cluster when fastify closes. Default: `true` when the plugin created the cluster,
   * `false` when it was given one (its owner ends it).
   */
  endOnClose?: boolean
  /**
   * A request whose token header is malformed: `'reject'` (default) answers 400 with code
   * `PGSPLIT_INVALID_TOKEN`; `'ignore'` serves it without the token (reads may then be stale).
   */
  invalidToken?: 'reject' | 'ignore'
  /**
   * Await `db.ready()` while registering, so `fastify.ready()`/`listen()` fail when no primary is
   * found. Default `true`; `{ timeoutMs }` bounds the wait (default `failover.timeoutMs`).
   */
  waitForReady?: boolean | { timeoutMs: number }
  /** Consistency of each request's session. Default `'causal'` (or the cluster's sticky mode). */
  sessionConsistency?: ConsistencyMode
}

/** Register with a cluster you own... */
export interface PgsplitPluginClusterOptions extends PgsplitPluginSettings {
  cluster: Cluster
}

/** ...or with a {@link ClusterConfig}: the plugin creates the cluster (and ends it on close). */
export interface PgsplitPluginConfigOptions extends PgsplitPluginSettings, ClusterConfig {
  cluster?: undefined
}

export type PgsplitPluginOptions = PgsplitPluginClusterOptions | PgsplitPluginConfigOptions

// Every ClusterConfig key, checked by the compiler: the plugin's options also hold its own
// settings and fastify's register options (prefix, logLevel, ...), which the strict config
// validation would reject, so only these keys reach createCluster.
const CLUSTER_CONFIG_KEYS: Record<keyof ClusterConfig, true> = {
  primary: true,
  replicas: true,
  nodes: true,
  pool: true,
  readStrategy: true,
  maxLag: true,
  healthCheck: true,
  onNoReplica: true,
  consistency: true,
  causalWaitMs: true,
  failover: true,
  readOnlyTransactions: true,
  writeFunctions: true,
  classifierCacheSize: true,
  discovery: true,
  patroni: true,
}

function clusterConfigOf(options: PgsplitPluginConfigOptions): ClusterConfig {
  const config: Record<string, unknown> = {}
  for (const key of Object.keys(CLUSTER_CONFIG_KEYS) as (keyof ClusterConfig)[]) {
    if (options[key] !== undefined) config[key] = options[key]
  }
  return config as ClusterConfig
}

function laterOf(a: WriteToken, b: WriteToken): WriteToken {
  if (a.timeline !== b.timeline) return a.timeline > b.timeline ? a : b
  return a.lsn >= b.lsn ? a : b
}

/**
 * The token a request brings, normalized; `null` when absent. Several values (a repeated header,
 * joined with commas by Node, or a client merging tokens) resolve to the latest of them.
 * Throws {@link InvalidTokenError} when any value is malformed.
 */
export function parseTokenHeader(value: string | string[] | undefined): string | null {
  if (value === undefined) return null
  const parts = (Array.isArray(value) ? value.join(',') : value)
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p !== '')
  if (parts.length === 0) return null
  let latest: WriteToken | null = null
  for (const part of parts) {
    const token = parseToken(part)
    latest = latest === null ? token : laterOf(latest, token)
  }
  return latest === null ? null : formatToken(latest)
}

interface RequestScope {
  /** Re-enters the request's session: body parsing may run in another async context. */
  resource: AsyncResource
  /** The normalized incoming token: a response only carries a token that differs from it. */
  incoming: string | null
}

function waitOptions(wait: PgsplitPluginSettings['waitForReady']): { timeoutMs?: number } | null {
  if (wait === false) return null
  if (typeof wait === 'object' && wait !== null) return { timeoutMs: wait.timeoutMs }
  return {}
}

const pgsplitPlugin: FastifyPluginAsync<PgsplitPluginOptions> = async (
  fastify: FastifyInstance,
  options: PgsplitPluginOptions,
) => {
  // Checked before a cluster is created, so a second registration leaks nothing.
  if (fastify.hasDecorator('db')) {
    throw new PgsplitError(
      'PGSPLIT_FASTIFY_DB_TAKEN',
      'pgsplit/fastify: fastify.db is already decorated (is the plugin registered twice, or another plugin using "db"?)',
    )
  }
  const header = (options.header ?? DEFAULT_TOKEN_HEADER).toLowerCase()
  if (!/^[a-z0-9!#$%&'*+.^_`|~-]+$/.test(header)) {
    throw new PgsplitError(
      'PGSPLIT_BAD_OPTION',
      `pgsplit/fastify: header ${JSON.stringify(header)} is not a valid header name`,
    )
  }
  const invalidToken = options.invalidToken ?? 'reject'
  if (invalidToken !== 'reject' && invalidToken !== 'ignore') {
    throw new PgsplitError(
      'PGSPLIT_BAD_OPTION',
      `pgsplit/fastify: invalidToken must be 'reject' or 'ignore', got ${JSON.stringify(invalidToken)}`,
    )
  }

  const given = options.cluster
  if (given !== undefined && !(given instanceof Cluster)) {
    throw new PgsplitError('PGSPLIT_BAD_OPTION', 'pgsplit/fastify: options.cluster must be a pgsplit Cluster')
  }
  const db = given ?? new Cluster(clusterConfigOf(options as PgsplitPluginConfigOptions))
  const endOnClose = options.endOnClose ?? given === undefined

  const wait = waitOptions(options.waitForReady)
  if (wait !== null) {
    try {
      await db.ready(wait)
    } catch (err) {
      // The app never starts: a cluster made here would otherwise keep probing forever.
      if (given === undefined) await db.end().catch(() => undefined)
      throw err
    }
  }

  fastify.decorate('db', db)
  fastify.addHook('onClose', async () => {
    if (endOnClose && !db.ended) await db.end()
  })

  const scopes = new WeakMap<FastifyRequest, RequestScope>()
  const sessionOptions = { consistency: options.sessionConsistency }

  fastify.addHook('onRequest', (request, _reply, done) => {
    let incoming: string | null = null
    try {
      incoming = parseTokenHeader(request.headers[header])
    } catch (err) {
      if (invalidToken === 'reject') {
        done(
          Object.assign(err instanceof InvalidTokenError ? err : new InvalidTokenError(''), {
            statusCode: 400,
          }),
        )
        return
      }
      request.log.warn({ header }, 'pgsplit: ignoring a malformed write token')
    }
    db.session(
      () => {
        // The session lives in AsyncLocalStorage; an AsyncResource created inside keeps it so
        // the later hooks and the handler can be run in it again (see preValidation).
        const resource = new AsyncResource('pgsplit-request')
        scopes.set(request, { resource, incoming })
        resource.runInAsyncScope(done, undefined)
      },
      { ...sessionOptions, token: incoming },
    )
  })

  // Body parsing runs on the socket's events, whose async context is not always the one
  // onRequest ran in: re-enter the session before validation, handlers and their hooks.
  fastify.addHook('preValidation', (request, _reply, done) => {
    const scope = scopes.get(request)
    if (scope === undefined) done()
    else scope.resource.runInAsyncScope(done, undefined)
  })

  fastify.addHook('onSend', async (request: FastifyRequest, reply: FastifyReply, payload: unknown) => {
    const scope = scopes.get(request)
    if (scope === undefined || db.ended) return payload
    const token = await scope.resource.runInAsyncScope(() => db.lastWriteToken())
    // Only a request that wrote moved the session past the token it brought.
    if (token !== undefined && token !== scope.incoming) reply.header(header, token)
    return payload
  })
}

/**
 * `pgsplit/fastify`: decorates `fastify.db` with a {@link Cluster}, runs each request in a
 * read-your-writes session fed by the `x-pgsplit-lsn` request header, and sets that header
 * on responses of requests that wrote. Ends the cluster on close when it created it.
 *
 * ```ts
 * import Fastify from 'fastify'
 * import pgsplit from 'pgsplit/fastify'
 *
 * const app = Fastify()
 * await app.register(pgsplit, { primary: process.env.PRIMARY_URL, replicas: [process.env.REPLICA_URL] })
 * app.post('/notes', async (req) => (await app.db.query('INSERT INTO notes (body) VALUES ($1) RETURNING *', [req.body])).rows[0])
 * app.get('/notes/:id', async (req) => (await app.db.query('SELECT * FROM notes WHERE id = $1', [req.params.id])).rows[0])
 * ```
 */
export const pgsplitFastify = fp(pgsplitPlugin, { name: 'pgsplit', fastify: '5.x' })
