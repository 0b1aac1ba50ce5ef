import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp, NODE_HEADER } from '../../examples/fastify-app/app.js'
import pgsplitFastify, { parseTokenHeader } from '../../src/fastify/index.js'
import { type Cluster, type ClusterConfig, createCluster, parseToken } from '../../src/index.js'
import { startCluster, type TestCluster } from '../../src/testing/index.js'
import { eventually } from '../support/cluster.js'

// One real cluster (1 primary + 2 replicas) for the whole file; each test leaves replay running.

let pgc: TestCluster
let db: Cluster
let app: FastifyInstance

const TOKEN = 'x-pgsplit-lsn'

function config(): ClusterConfig {
  return {
    primary: { name: 'node0', url: pgc.nodes[0]!.url },
    replicas: [
      { name: 'node1', url: pgc.nodes[1]!.url },
      { name: 'node2', url: pgc.nodes[2]!.url },
    ],
    // Paused replicas must stay eligible here: the stale read is what the tests look at.
    maxLag: { bytes: 1024 * 1024 * 1024, ms: 10 * 60_000 },
    healthCheck: { intervalMs: 200, timeoutMs: 1_000 },
  }
}

async function replicasCaughtUp(cluster: Cluster): Promise<void> {
  await eventually(
    () =>
      cluster.topology().nodes.every((n) => n.role !== 'replica' || (n.state === 'up' && n.lagBytes === 0)),
    { what: 'replicas caught up' },
  )
}

async function withPausedReplicas<T>(fn: () => Promise<T>): Promise<T> {
  await pgc.pauseReplay(1)
  await pgc.pauseReplay(2)
  try {
    return await fn()
  } finally {
    await pgc.resumeReplay(1)
    await pgc.resumeReplay(2)
  }
}

beforeAll(async () => {
  pgc = await startCluster({ replicas: 2, backend: 'local' })
  db = createCluster(config())
  app = await buildApp({ cluster: db, migrate: true })
  await app.ready()
  // The CREATE TABLE must reach the replicas before reads go there.
  await replicasCaughtUp(db)
})

afterAll(async () => {
  await app?.close()
  await db?.end()
  await pgc?.destroy()
})

describe('example app (pgsplit/fastify + pgsplit/kysely)', () => {
  it('creates, reads, lists, updates and deletes clients; writes on the primary', async () => {
    const created = await app.inject({
      method: 'POST',
      url: '/clients',
      payload: { name: 'Ada', email: 'ada@example.com' },
    })
    expect(created.statusCode).toBe(201)
    expect(created.headers[NODE_HEADER]).toBe('node0')
    const token = created.headers[TOKEN] as string
    expect(() => parseToken(token)).not.toThrow()
    const ada = created.json<{ id: number; name: string; email: string }>()
    expect(ada).toMatchObject({ name: 'Ada', email: 'ada@example.com' })

    const duplicate = await app.inject({
      method: 'POST',
      url: '/clients',
      payload: { name: 'Other', email: 'ada@example.com' },
    })
    expect(duplicate.statusCode).toBe(409)
    const invalid = await app.inject({ method: 'POST', url: '/clients', payload: { name: 'No email' } })
    expect(invalid.statusCode).toBe(400)

    const read = await app.inject({ url: `/clients/${ada.id}`, headers: { [TOKEN]: token } })
    expect(read.statusCode).toBe(200)
    expect(read.json()).toEqual(ada)
    // A request that only read carries no token back.
    expect(read.headers[TOKEN]).toBeUndefined()

    await replicasCaughtUp(db)
    const list = await app.inject({ url: '/clients' })
    expect(list.statusCode).toBe(200)
    expect(list.json<{ clients: unknown[] }>().clients).toContainEqual(ada)
    expect(['node1', 'node2']).toContain(list.headers[NODE_HEADER])

    const put = await app.inject({
      method: 'PUT',
      url: `/clients/${ada.id}`,
      payload: { name: 'Ada Lovelace', email: 'ada.lovelace@example.com' },
    })
    expect(put.statusCode).toBe(200)
    expect(put.headers[NODE_HEADER]).toBe('node0')
    const patch = await app.inject({
      method: 'PATCH',
      url: `/clients/${ada.id}`,
      payload: { name: 'Countess' },
      headers: { [TOKEN]: put.headers[TOKEN] as string },
    })
    expect(patch.statusCode).toBe(200)
    expect(patch.json()).toEqual({ id: ada.id, name: 'Countess', email: 'ada.lovelace@example.com' })
    // The token moved on with the second write.
    expect(patch.headers[TOKEN]).not.toBe(put.headers[TOKEN])
    const afterPatch = await app.inject({
      url: `/clients/${ada.id}`,
      headers: { [TOKEN]: patch.headers[TOKEN] as string },
    })
    expect(afterPatch.json()).toMatchObject({ name: 'Countess' })
    expect((await app.inject({ method: 'PATCH', url: `/clients/${ada.id}`, payload: {} })).statusCode).toBe(
      400,
    )
    expect((await app.inject({ method: 'PUT', url: '/clients/999999', payload: ada })).statusCode).toBe(404)

    const del = await app.inject({ method: 'DELETE', url: `/clients/${ada.id}` })
    expect(del.statusCode).toBe(204)
    const gone = await app.inject({
      url: `/clients/${ada.id}`,
      headers: { [TOKEN]: del.headers[TOKEN] as string },
    })
    expect(gone.statusCode).toBe(404)
    expect((await app.inject({ method: 'DELETE', url: `/clients/${ada.id}` })).statusCode).toBe(404)
    expect((await app.inject({ url: '/clients/abc' })).statusCode).toBe(400)
  })

  it('reads its writes with the x-pgsplit-lsn header while the replicas do not replay', async () => {
    await withPausedReplicas(async () => {
      const created = await app.inject({
        method: 'POST',
        url: '/clients',
        payload: { name: 'Grace', email: 'grace@example.com' },
      })
      expect(created.statusCode).toBe(201)
      const { id } = created.json<{ id: number }>()
      const token = created.headers[TOKEN] as string
      expect(token).toMatch(/^\d+:[0-9A-F]+\/[0-9A-F]+$/)

      // Without the token: a replica answers, and it has not replayed the insert.
      const stale = await app.inject({ url: `/clients/${id}` })
      expect(stale.statusCode).toBe(404)
      expect(['node1', 'node2']).toContain(stale.headers[NODE_HEADER])

      // With it: no replica has the write, so the primary serves the read.
      const fresh = await app.inject({ url: `/clients/${id}`, headers: { [TOKEN]: token } })
      expect(fresh.statusCode).toBe(200)
      expect(fresh.json()).toMatchObject({ id, name: 'Grace' })
      expect(fresh.headers[NODE_HEADER]).toBe('node0')
    })
    await replicasCaughtUp(db)
  })

  it('answers 400 to a malformed token', async () => {
    const res = await app.inject({ url: '/clients/1', headers: { [TOKEN]: 'not-a-token' } })
    expect(res.statusCode).toBe(400)
    expect(res.json()).toMatchObject({ code: 'PGSPLIT_INVALID_TOKEN' })
  })

  it('GET /topology shows roles, lag, health and which node served what', async () => {
    const res = await app.inject({ url: '/topology' })
    expect(res.statusCode).toBe(200)
    const body = res.json<{
      primary: string
      nodes: { name: string; role: string; state: string; lagBytes: number | null }[]
      served: Record<string, { read: number; write: number }>
    }>()
    expect(body.primary).toBe('node0')
    expect(body.nodes.map((n) => [n.name, n.role, n.state])).toEqual([
      ['node0', 'primary', 'up'],
      ['node1', 'replica', 'up'],
      ['node2', 'replica', 'up'],
    ])
    for (const n of body.nodes.filter((x) => x.role === 'replica')) expect(typeof n.lagBytes).toBe('number')
    expect(body.served.node0?.write).toBeGreaterThan(0)
    expect((body.served.node1?.read ?? 0) + (body.served.node2?.read ?? 0)).toBeGreaterThan(0)
  })

  it('GET /metrics exposes Prometheus metrics with node labels', async () => {
    const res = await app.inject({ url: '/metrics' })
    expect(res.statusCode).toBe(200)
    expect(res.headers['content-type']).toMatch(/^text\/plain/)
    const text = res.body
    expect(text).toMatch(/^pgsplit_app_queries_total\{node="node0",kind="write"\} [1-9]/m)
    expect(text).toMatch(/^pgsplit_app_queries_total\{node="node[12]",kind="read"\} [1-9]/m)
    expect(text).toMatch(/^pgsplit_node_queries_total\{node="node1"\} \d+/m)
    expect(text).toMatch(/^pgsplit_node_up\{node="node0"\} 1$/m)
    expect(text).toMatch(/^pgsplit_node_primary\{node="node0"\} 1$/m)
    expect(text).toMatch(/^pgsplit_replica_lag_bytes\{node="node1"\} \d+$/m)
    expect(text).toMatch(/^pgsplit_replica_lag_seconds\{node="node2"\} [\d.]+$/m)
    expect(text).toMatch(/^pgsplit_failovers_total 0$/m)
    expect(text).toContain('# TYPE pgsplit_events_total counter')
    expect(text).not.toContain(pgc.nodes[0]!.url)
  })
})

describe('pgsplit/fastify plugin', () => {
  it('refuses a second registration (fastify.db taken) without creating a cluster', async () => {
    const f = Fastify()
    await f.register(pgsplitFastify, { cluster: db })
    await expect(f.register(pgsplitFastify, { cluster: db })).rejects.toMatchObject({
      code: 'PGSPLIT_FASTIFY_DB_TAKEN',
    })
    await f.close()
    // Not created by the plugin: not ended by it.
    expect(db.ended).toBe(false)

    const taken = Fastify()
    // Another plugin's "db" (the type says Cluster: the augmentation is global).
    taken.decorate('db', { other: true } as unknown as Cluster)
    await expect(taken.register(pgsplitFastify, config())).rejects.toThrow(/already decorated/)
    await taken.close()
  })

  it('creates the cluster from its config, decorates fastify.db and ends it on close', async () => {
    const f = Fastify()
    // fastify's own register options ride along; they must not reach the cluster config.
    await f.register(pgsplitFastify, { ...config(), header: 'x-my-lsn', prefix: '/api' })
    f.post('/notes', async () => {
      await f.db.query('CREATE TABLE IF NOT EXISTS plugin_notes (id serial PRIMARY KEY, body text)')
      const { rows } = await f.db.query<{ id: number }>(
        "INSERT INTO plugin_notes (body) VALUES ('x') RETURNING id",
      )
      return rows[0]
    })
    f.get('/noop', async () => ({ ok: true }))
    await f.ready()
    const cluster = f.db
    expect(cluster.topology().primary).toBe('node0')
    const res = await f.inject({ method: 'POST', url: '/notes' })
    expect(res.statusCode).toBe(200)
    expect(res.headers['x-my-lsn']).toMatch(/^\d+:/)
    expect(res.headers[TOKEN]).toBeUndefined()
    const noop = await f.inject({ url: '/noop', headers: { 'x-my-lsn': res.headers['x-my-lsn'] as string } })
    // It brought a token and wrote nothing: nothing to hand back.
    expect(noop.headers['x-my-lsn']).toBeUndefined()
    await f.close()
    expect(cluster.ended).toBe(true)
  })

  it('endOnClose overrides who ends the cluster', async () => {
    const own = createCluster(config())
    const f = Fastify()
    await f.register(pgsplitFastify, { cluster: own, endOnClose: true })
    await f.close()
    expect(own.ended).toBe(true)

    const g = Fastify()
    await g.register(pgsplitFastify, { ...config(), endOnClose: false })
    const kept = g.db
    await g.close()
    expect(kept.ended).toBe(false)
    await kept.end()
  })

  it('gives each request its own session: writes and reads in it, and other requests unaffected', async () => {
    const f = Fastify()
    await f.register(pgsplitFastify, { cluster: db, invalidToken: 'ignore' })
    let release: () => void = () => undefined
    const gate = new Promise<void>((resolve) => {
      release = resolve
    })
    f.post<{ Body: { body: string } }>('/write-then-read', async (request) => {
      const { rows } = await db.query<{ id: number }>(
        'INSERT INTO plugin_notes (body) VALUES ($1) RETURNING id',
        [request.body.body],
      )
      await gate
      // Same request, after the body was parsed: the session still holds the write's token.
      const read = await db.query<{ body: string; port: number }>(
        'SELECT body, inet_server_port() AS port FROM plugin_notes WHERE id = $1',
        [rows[0]!.id],
      )
      return { body: read.rows[0]?.body ?? null, port: read.rows[0]?.port ?? null }
    })
    f.get('/read', async () => {
      const { rows } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM plugin_notes')
      return rows[0]
    })
    await f.ready()
    await replicasCaughtUp(db)
    await withPausedReplicas(async () => {
      const writing = f.inject({
        method: 'POST',
        url: '/write-then-read',
        payload: { body: 'x'.repeat(100_000) },
      })
      // A concurrent request that only reads: the other request's write is not its own.
      const reading = await f.inject({ url: '/read', headers: { [TOKEN]: 'garbage' } })
      release()
      const written = await writing
      expect(reading.statusCode).toBe(200)
      expect(reading.headers[TOKEN]).toBeUndefined()
      expect(written.statusCode).toBe(200)
      expect(written.json<{ body: string }>().body).toHaveLength(100_000)
      expect(written.json<{ port: number }>().port).toBe(pgc.nodes[0]!.port)
      expect(written.headers[TOKEN]).toMatch(/^\d+:/)
    })
    await f.close()
    expect(db.ended).toBe(false)
  })

  it('parses the token header: the latest of several values, null when empty', () => {
    expect(parseTokenHeader(undefined)).toBeNull()
    expect(parseTokenHeader('')).toBeNull()
    expect(parseTokenHeader('1:0/10, 2:0/5,1:0/FF')).toBe('2:0/5')
    expect(parseTokenHeader(['1:0/10', '1:0/2A'])).toBe('1:0/2A')
    expect(() => parseTokenHeader('1:0/10,nope')).toThrow(/invalid pgsplit write token/)
  })
})
