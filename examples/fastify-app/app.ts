import Fastify, { type FastifyError, type FastifyInstance, type FastifyServerOptions } from 'fastify'
import { Kysely, sql } from 'kysely'
import {
  type Cluster,
  type ClusterConfig,
  ClusterEndedError,
  NoPrimaryError,
  NoReplicaAvailableError,
  TimeoutError,
  WriteOutcomeUnknownError,
} from 'pgsplit'
import pgsplitFastify, { type PgsplitPluginSettings } from 'pgsplit/fastify'
import { SplitDialect } from 'pgsplit/kysely'
import { createMetrics, type QueryKind } from './metrics.js'
import { type Database, migrate } from './schema.js'
import { ServerNames } from './served-by.js'

export interface AppOptions {
  /** A cluster you own (the app does not end it)... */
  cluster?: Cluster
  /** ...or its config: the app creates the cluster and ends it on close. */
  config?: ClusterConfig
  logger?: FastifyServerOptions['logger']
  /** Create the `clients` table when missing, before the app is ready. Default false. */
  migrate?: boolean
  /** Passed to `pgsplit/fastify` (header name, invalidToken, ...). */
  plugin?: PgsplitPluginSettings
}

/** A client as the API shows it. */
export interface Client {
  id: number
  name: string
  email: string
}

/** The header naming the node that ran a response's main query. */
export const NODE_HEADER = 'x-pgsplit-node'

const idParams = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'integer', minimum: 1, maximum: 2147483647 } },
} as const
// PostgreSQL's text cannot hold NUL (it answers 22021): refused here, as a 400 naming the field.
const name = { type: 'string', minLength: 1, maxLength: 200, pattern: '^[^\\u0000]*$' } as const
const email = {
  type: 'string',
  minLength: 3,
  maxLength: 320,
  pattern: '^[^@\\s\\u0000]+@[^@\\s\\u0000]+$',
} as const
/** The deepest page `GET /clients` serves: every number a client sends has a bound. */
export const MAX_OFFSET = 1_000_000
/** A whole client (POST, PUT): both fields, nothing else. */
const clientBody = {
  type: 'object',
  required: ['name', 'email'],
  additionalProperties: false,
  properties: { name, email },
} as const

type Reply = { code(statusCode: number): { send(payload: unknown): unknown } }

/** 404 for a client id that does not exist. */
const noClient = (reply: Reply, id: number) =>
  reply.code(404).send({ error: 'Not Found', message: `no client ${id}` })

/** 503: the cluster cannot run the query now (no primary, no replica, ended, lost connection). */
const unavailable = (reply: Reply, code: unknown, message: string) =>
  reply.code(503).send({ error: 'Service Unavailable', code, message })

/** The SQLSTATE of a PostgreSQL error (pg's DatabaseError carries `severity`), else undefined. */
function sqlState(error: unknown): string | undefined {
  const { code, severity } = error as { code?: unknown; severity?: unknown }
  return typeof severity === 'string' && typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)
    ? code
    : undefined
}

/** The database connection failed (not the SQL): class 08, admin shutdown, or a socket error. */
function lostConnection(error: unknown): boolean {
  const code = (error as { code?: unknown }).code
  if (typeof code === 'string') return /^08|^57P0[1-3]$|^E(CONNREFUSED|CONNRESET|PIPE|TIMEDOUT)$/.test(code)
  return error instanceof Error && /Connection terminated|not queryable/i.test(error.message)
}

/** The server's own address, selected with each main query: the node that ran it, not a guess. */
const servedPort = sql<number>`inet_server_port()`
const servedAddr = sql<string | null>`host(inet_server_addr())`
/**
 * A one-row table of that address, LEFT JOINed to the clients: a read that finds nothing still
 * says which node answered (a stale replica's 404 is the demo's point).
 */
const servedBy = sql<{
  served_port: number
  served_addr: string | null
}>`(SELECT inet_server_port() AS served_port, host(inet_server_addr()) AS served_addr)`.as('s')

/**
 * The example REST service over `clients`: reads from replicas, writes to the primary (through
 * Kysely and `pgsplit/kysely`), read-your-writes per request through `pgsplit/fastify`, and
 * `GET /topology` and `GET /metrics` to watch it work.
 *
 * ```ts
 * const app = await buildApp({ config: { primary: PRIMARY_URL, replicas: [REPLICA_URL] }, migrate: true })
 * const res = await app.inject({ method: 'POST', url: '/clients', payload: { name: 'Ada', email: 'ada@example.com' } })
 * await app.close()
 * ```
 */
export async function buildApp(options: AppOptions): Promise<FastifyInstance> {
  if ((options.cluster === undefined) === (options.config === undefined)) {
    throw new TypeError('buildApp: give either cluster or config')
  }
  const app = Fastify({ logger: options.logger ?? false })
  // Fastify's validator coerces ?offset=Infinity to the number Infinity and lets it through an
  // integer schema with a maximum (measured, with and without ajv's strictNumbers): refused here.
  app.addHook('preHandler', async (request, reply) => {
    for (const [part, values] of [
      ['querystring', request.query],
      ['params', request.params],
    ] as const) {
      for (const [key, value] of Object.entries((values ?? {}) as Record<string, unknown>)) {
        if (typeof value === 'number' && !Number.isFinite(value)) {
          return reply
            .code(400)
            .send({ error: 'Bad Request', message: `${part}/${key} must be a finite integer` })
        }
      }
    }
  })
  const pluginSettings = options.plugin ?? {}
  if (options.cluster !== undefined)
    await app.register(pgsplitFastify, { ...pluginSettings, cluster: options.cluster })
  else await app.register(pgsplitFastify, { ...pluginSettings, ...options.config })

  const db = new Kysely<Database>({ dialect: new SplitDialect({ cluster: app.db }) })
  const metrics = createMetrics(app.db)
  app.addHook('onClose', async () => {
    metrics.close()
    // Does not end the cluster: the plugin does that (when it created it).
    await db.destroy()
  })
  if (options.migrate === true) {
    app.addHook('onReady', async () => {
      await migrate(db)
    })
  }

  const names = new ServerNames(app.db)

  async function served(
    reply: { header(key: string, value: string): unknown },
    row: { served_port: number | null; served_addr: string | null },
    kind: QueryKind,
  ): Promise<void> {
    if (row.served_port === null) return
    const node = await names.nameOf(Number(row.served_port), row.served_addr)
    metrics.recordQuery(node, kind)
    reply.header(NODE_HEADER, node)
  }

  const clientOf = (row: { id: number | null; name: string | null; email: string | null }): Client | null =>
    row.id === null ? null : { id: row.id, name: row.name ?? '', email: row.email ?? '' }

  app.setErrorHandler((error: FastifyError, request, reply) => {
    const code = (error as { code?: unknown }).code
    const state = sqlState(error)
    if (state === '23505')
      return reply.code(409).send({ error: 'Conflict', message: 'email is already taken' })
    // Class 22 (data exception) and the other integrity violations are caused by what the client
    // sent: its fault, a 400, with PostgreSQL's reason. Only genuine server faults are 5xx.
    if (state !== undefined && (state.startsWith('22') || state.startsWith('23'))) {
      return reply.code(400).send({ error: 'Bad Request', code: state, message: error.message })
    }
    if (error instanceof WriteOutcomeUnknownError) {
      // Connection lost after the statement was sent: it may have committed. Never retried for you.
      return unavailable(reply, error.code, error.message)
    }
    if (
      error instanceof NoPrimaryError ||
      error instanceof NoReplicaAvailableError ||
      error instanceof ClusterEndedError ||
      error instanceof TimeoutError
    ) {
      return unavailable(reply, error.code, error.message)
    }
    if (lostConnection(error)) {
      // A pinned connection (Kysely's writes) broke: for a write, the outcome is unknown.
      return unavailable(reply, code, error.message)
    }
    if (error.statusCode !== undefined && error.statusCode < 500) return reply.send(error)
    request.log.error(error)
    return reply.code(500).send({ error: 'Internal Server Error', message: error.message })
  })

  app.post<{ Body: { name: string; email: string } }>(
    '/clients',
    {
      schema: { body: clientBody },
    },
    async (request, reply) => {
      const row = await db
        .insertInto('clients')
        .values({ name: request.body.name, email: request.body.email })
        .returning(['id', 'name', 'email', servedPort.as('served_port'), servedAddr.as('served_addr')])
        .executeTakeFirstOrThrow()
      await served(reply, row, 'write')
      return reply.code(201).send(clientOf(row))
    },
  )

  app.get<{ Querystring: { limit: number; offset: number } }>(
    '/clients',
    {
      schema: {
        querystring: {
          type: 'object',
          properties: {
            limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
            offset: { type: 'integer', minimum: 0, maximum: MAX_OFFSET, default: 0 },
          },
        },
      },
    },
    async (request, reply) => {
      const rows = await db
        .selectFrom(servedBy)
        .leftJoin('clients', (join) => join.onTrue())
        .select(['s.served_port', 's.served_addr', 'clients.id', 'clients.name', 'clients.email'])
        .orderBy('clients.id')
        .limit(request.query.limit)
        .offset(request.query.offset)
        .execute()
      const first = rows[0]
      if (first !== undefined) await served(reply, first, 'read')
      return { clients: rows.map(clientOf).filter((c): c is Client => c !== null) }
    },
  )

  app.get<{ Params: { id: number } }>(
    '/clients/:id',
    { schema: { params: idParams } },
    async (request, reply) => {
      const row = await db
        .selectFrom(servedBy)
        .leftJoin('clients', (join) => join.on('clients.id', '=', request.params.id))
        .select(['s.served_port', 's.served_addr', 'clients.id', 'clients.name', 'clients.email'])
        .executeTakeFirstOrThrow()
      await served(reply, row, 'read')
      const client = clientOf(row)
      if (client === null) return noClient(reply, request.params.id)
      return client
    },
  )

  const update = async (
    id: number,
    changes: { name?: string; email?: string },
    reply: { header(key: string, value: string): unknown },
  ): Promise<Client | null> => {
    const row = await db
      .updateTable('clients')
      .set(changes)
      .where('id', '=', id)
      .returning(['id', 'name', 'email', servedPort.as('served_port'), servedAddr.as('served_addr')])
      .executeTakeFirst()
    if (row === undefined) return null
    await served(reply, row, 'write')
    return clientOf(row)
  }

  app.put<{ Params: { id: number }; Body: { name: string; email: string } }>(
    '/clients/:id',
    {
      schema: { params: idParams, body: clientBody },
    },
    async (request, reply) => {
      const client = await update(
        request.params.id,
        { name: request.body.name, email: request.body.email },
        reply,
      )
      if (client === null) return noClient(reply, request.params.id)
      return client
    },
  )

  app.patch<{ Params: { id: number }; Body: { name?: string; email?: string } }>(
    '/clients/:id',
    {
      schema: {
        params: idParams,
        body: { type: 'object', minProperties: 1, additionalProperties: false, properties: { name, email } },
      },
    },
    async (request, reply) => {
      const client = await update(request.params.id, request.body, reply)
      if (client === null) return noClient(reply, request.params.id)
      return client
    },
  )

  app.delete<{ Params: { id: number } }>(
    '/clients/:id',
    { schema: { params: idParams } },
    async (request, reply) => {
      const row = await db
        .deleteFrom('clients')
        .where('id', '=', request.params.id)
        .returning(['id', servedPort.as('served_port'), servedAddr.as('served_addr')])
        .executeTakeFirst()
      if (row === undefined) return noClient(reply, request.params.id)
      await served(reply, row, 'write')
      return reply.code(204).send()
    },
  )

  // The cluster as pgsplit sees it, plus which node served the app's queries.
  app.get('/topology', async () => ({ ...app.db.topology(), served: metrics.served() }))

  app.get('/metrics', async (_request, reply) => {
    reply.header('content-type', metrics.registry.contentType)
    return metrics.registry.metrics()
  })

  return app
}
