import { AsyncResource } from 'node:async_hooks'
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { Cluster } from '../cluster.js'
import type { ClusterConfig, ConsistencyMode } from '../config.js'
import { InvalidTokenError, PgsplitError } from '../errors.js'
import { laterToken, type WriteToken } from '../router/consistency.js'
import { formatPlainToken, MAX_TOKEN_LENGTH, parseTokenText } from '../router/token-codec.js'

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
   * A request whose token is refused (malformed, unsigned while `tokens.requireSigned`, a bad
   * signature, or past the primary's position): `'reject'` (default) answers 400 with code
   * `PGSPLIT_INVALID_TOKEN` (`PGSPLIT_TOKEN_AHEAD` for a token past the primary); `'ignore'`
   * serves it without the token (reads may then be stale). A token that cannot be checked
   * because no primary answers gets 503 `PGSPLIT_TOKEN_UNCHECKED` either way.
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
  tokens: true,
  patroni: true,
}

function clusterConfigOf(options: PgsplitPluginConfigOptions): ClusterConfig {
  const config: Record<string, unknown> = {}
  for (const key of Object.keys(CLUSTER_CONFIG_KEYS) as (keyof ClusterConfig)[]) {
    if (options[key] !== undefined) config[key] = options[key]
  }
  return config as ClusterConfig
}

/** More values than this in one request's token header are refused, unread. */
const MAX_HEADER_TOKENS = 16

/**
 * The token a request brings, in canonical spelling (a signature kept as given); `null` when
 * absent. Several values (a repeated header, joined with commas by Node, or a client merging
 * tokens) resolve to the latest of them: the others are covered by it, so only that one's
 * signature and position need checking (the plugin does, with `db.verifyToken`). Syntax only
 * here; throws {@link InvalidTokenError} when any value is malformed or there are more than 16.
 */
export function parseTokenHeader(value: string | string[] | undefined): string | null {
  if (value === undefined) return null
  const joined = Array.isArray(value) ? value.join(',') : value
  if (typeof joined !== 'string' || joined.length > MAX_HEADER_TOKENS * (MAX_TOKEN_LENGTH + 2)) {
    throw new InvalidTokenError('', 'malformed', 'the token header is too long')
  }
  const parts = joined
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p !== '')
  if (parts.length === 0) return null
  if (parts.length > MAX_HEADER_TOKENS) {
    throw new InvalidTokenError('', 'malformed', `more than ${MAX_HEADER_TOKENS} tokens in one header`)
  }
  let latest: WriteToken | null = null
  let signature: string | null = null
  for (const part of parts) {
    const parsed = parseTokenText(part)
    if (laterToken(latest, parsed.token) !== latest) {
      latest = parsed.token
      signature = parsed.signature
    }
  }
  if (latest === null) return null
  const plain = formatPlainToken(latest)
  return signature === null ? plain : `${plain}.${signature}`
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
    const enter = (incoming: string | null): void => {
      try {
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
      } catch (err) {
        done(err as Error)
      }
    }
    const refused = (err: unknown): void => {
      if (invalidToken === 'reject') {
        done(
          Object.assign(err instanceof InvalidTokenError ? err : new InvalidTokenError(''), {
            statusCode: 400,
          }),
        )
        return
      }
      request.log.warn(
        { header, reason: err instanceof InvalidTokenError ? err.reason : 'malformed' },
        'pgsplit: ignoring a refused write token',
      )
      enter(null)
    }
    let latest: string | null
    try {
      latest = parseTokenHeader(request.headers[header])
    } catch (err) {
      refused(err)
      return
    }
    if (latest === null) {
      enter(null)
      return
    }
    // Checked here, before the handler runs: a forged token is answered 400 at once (one
    // coalesced round trip for a whole burst of them), and never makes a read wait.
    db.verifyToken(latest).then(enter, (err: unknown) => {
      if (err instanceof InvalidTokenError) {
        refused(err)
        return
      }
      done(
        Object.assign(
          new PgsplitError(
            'PGSPLIT_TOKEN_UNCHECKED',
            'pgsplit/fastify: the write token could not be checked against the primary (none answered); try again',
            { cause: err },
          ),
          { statusCode: 503 },
        ),
      )
    })
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
