import net from 'node:net'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  type Cluster,
  type ClusterConfig,
  ClusterEndedError,
  createCluster,
  NoPrimaryError,
  NoReplicaAvailableError,
  PgsplitError,
} from '../../src/index.js'
import { startCluster, type TestCluster } from '../../src/testing/index.js'
import {
  adminQuery,
  eventually,
  expectNoLibraryConnections,
  timed,
  trackProcessErrors,
} from '../support/reliability.js'

// Bad input at run time: nodes that do not answer, SQL that fails, calls after end(), and a flood
// of failing queries. One local cluster for the whole file; the first block stops and restarts it.

const APP = 'pgsplit-bad-input'

/** Small bounds so failures show fast; every wait of the library is bounded by one of them. */
const FAST: Omit<ClusterConfig, 'primary' | 'replicas' | 'nodes'> = {
  healthCheck: { intervalMs: 200, timeoutMs: 500, maxBackoffMs: 500 },
  failover: { timeoutMs: 1_500, pollIntervalMs: 100 },
  pool: { connectionTimeoutMillis: 1_000, query_timeout: 10_000, application_name: APP },
}

/** Ports on 127.0.0.1 with nothing listening (taken, then released). */
async function deadPorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<net.Server>((resolve, reject) => {
          const server = net.createServer()
          server.once('error', reject)
          server.listen(0, '127.0.0.1', () => resolve(server))
        }),
    ),
  )
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port)
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))))
  return ports
}

function expectTyped(
  result: { ok: boolean; error?: unknown },
  ...classes: (new (
    ...a: never[]
  ) => Error)[]
): void {
  expect(result.ok, 'the call should fail').toBe(false)
  expect(result.error).toBeInstanceOf(PgsplitError)
  expect(
    classes.some((c) => result.error instanceof c),
    `${String(result.error)} should be one of ${classes.map((c) => c.name).join(', ')}`,
  ).toBe(true)
}

let pgc: TestCluster
const open: Cluster[] = []
const processErrors = trackProcessErrors()

function cluster(config: ClusterConfig): Cluster {
  const db = createCluster(config)
  open.push(db)
  return db
}

beforeAll(async () => {
  pgc = await startCluster({ backend: 'local', replicas: 2 })
  await adminQuery(pgc.primaryUrl, 'CREATE TABLE bad_input_t (id int PRIMARY KEY, v text)')
  await adminQuery(pgc.primaryUrl, "INSERT INTO bad_input_t VALUES (1, 'one')")
})

afterAll(async () => {
  await Promise.all(open.map((db) => db.end()))
  await pgc?.destroy()
  processErrors.dispose()
})

describe('nodes that do not answer', () => {
  it('createCluster succeeds; ready() and every kind of call fail with typed errors within their bounds', async () => {
    const [p, r1, r2] = await deadPorts(3)
    const url = (port: number | undefined) => `postgres://postgres:postgres@127.0.0.1:${port}/app`
    const db = cluster({ primary: url(p), replicas: [url(r1), url(r2)], ...FAST })

    const ready = await timed(db.ready({ timeoutMs: 1_000 }))
    expectTyped(ready, NoPrimaryError)
    expect(ready.ms).toBeLessThan(5_000)
    expect((ready.error as Error).message).toMatch(/ECONNREFUSED/)

    // failover.timeoutMs (1.5 s) bounds every wait for a primary; generous liveness bound below.
    const calls = await Promise.all([
      timed(() => db.query('INSERT INTO bad_input_t VALUES (2)')),
      timed(() => db.query('SELECT 1')),
      timed(() => db.primary.query('SELECT 1')),
      timed(() => db.replica.query('SELECT 1')),
      timed(() => db.connect()),
      timed(() => db.transaction(async (tx) => tx.query('SELECT 1'))),
    ])
    for (const call of calls) {
      expectTyped(call, NoPrimaryError)
      expect(call.ms).toBeLessThan(8_000)
    }
    const topology = db.topology()
    expect(topology.primary).toBeNull()
    expect(topology.searching).toBe(true)
    for (const node of topology.nodes) {
      expect(node.state).toBe('down')
      expect(node.lastError).toMatch(/ECONNREFUSED/)
    }
    expect(db.totalCount).toBe(0)
    expect((await timed(db.end())).ms).toBeLessThan(5_000)
  })

  it("reads fail with NoReplicaAvailableError under onNoReplica: 'error', role-less nodes with NoPrimaryError", async () => {
    const [a, b] = await deadPorts(2)
    const url = (port: number | undefined) => `postgres://postgres:postgres@127.0.0.1:${port}/app`
    const strict = cluster({ primary: url(a), replicas: [url(b)], onNoReplica: 'error', ...FAST })
    const read = await timed(() => strict.query('SELECT 1'))
    expectTyped(read, NoReplicaAvailableError)
    expect(read.ms).toBeLessThan(5_000)

    const roleless = cluster({ nodes: [url(a), url(b)], ...FAST })
    const write = await timed(() => roleless.query('INSERT INTO bad_input_t VALUES (2)'))
    expectTyped(write, NoPrimaryError)
    expect(write.ms).toBeLessThan(8_000)
    await Promise.all([strict.end(), roleless.end()])
  })

  it('a cluster created while its servers are down recovers by itself when they come up', async () => {
    await pgc.stop(1)
    await pgc.stop(2)
    await pgc.stop(0)
    const [primary, ...replicas] = pgc.nodes.map((n) => n.url)
    const db = cluster({ primary: primary!, replicas, ...FAST })

    const ready = await timed(db.ready({ timeoutMs: 1_000 }))
    expectTyped(ready, NoPrimaryError)
    expect(ready.ms).toBeLessThan(5_000)
    const write = await timed(() => db.query('INSERT INTO bad_input_t VALUES (3)'))
    expectTyped(write, NoPrimaryError)
    expect(write.ms).toBeLessThan(8_000)
    const read = await timed(() => db.query('SELECT v FROM bad_input_t WHERE id = 1'))
    expectTyped(read, NoPrimaryError)

    await pgc.start(0)
    await pgc.start(1)
    await pgc.start(2)

    // Nobody calls anything on `db` to help it: the monitor and discovery find the nodes again.
    await db.ready({ timeoutMs: 20_000 })
    await db.query('INSERT INTO bad_input_t VALUES (3)')
    const replicaPorts = new Set(pgc.nodes.slice(1).map((n) => n.port))
    await eventually(async () => {
      const topology = db.topology()
      expect(topology.primary).toBe(`127.0.0.1:${pgc.nodes[0]!.port}`)
      expect(topology.nodes.map((n) => n.state)).toEqual(['up', 'up', 'up'])
      const { rows } = await db.query<{ port: number }>('SELECT inet_server_port() AS port')
      expect(replicaPorts.has(rows[0]!.port)).toBe(true)
    }, 20_000)
    await db.end()
    expect(db.totalCount).toBe(0)
  })
})

describe('on a running cluster', () => {
  let db: Cluster
  const retried: unknown[] = []

  beforeAll(async () => {
    db = cluster({ primary: pgc.primaryUrl, replicas: pgc.replicaUrls, ...FAST })
    db.on('readRetried', (e) => retried.push(e))
    await db.ready({ timeoutMs: 20_000 })
    await eventually(() => {
      expect(db.topology().nodes.map((n) => n.state)).toEqual(['up', 'up', 'up'])
    })
  })

  /** [sql, kind, SQLSTATE] */
  const SQL_ERRORS: [string, 'read' | 'write', string][] = [
    ['SELECT 1/0', 'read', '22012'],
    ['SELECT nope FROM bad_input_t', 'read', '42703'],
    ['SELECT * FROM missing_table_x WHERE id = $1', 'read', '42P01'],
    ["SELECT 'abc'::int", 'read', '22P02'],
    ['SELEC 1', 'write', '42601'],
    ['INSERT INTO bad_input_t (id) VALUES (1/0)', 'write', '22012'],
    ['INSERT INTO missing_table_x VALUES (1)', 'write', '42P01'],
    ["INSERT INTO bad_input_t VALUES (1, 'dup')", 'write', '23505'],
    ['UPDATE bad_input_t SET nope = 1', 'write', '42703'],
  ]

  it.each(SQL_ERRORS)(
    '%s: the caller gets the server error unchanged (%s, %s)',
    async (sql, kind, sqlstate) => {
      const params = sql.includes('$1') ? [1] : undefined
      const direct = await timed(() =>
        adminQuery(kind === 'read' ? pgc.replicaUrls[0]! : pgc.primaryUrl, sql, params),
      )
      const errorsBefore = db.topology().nodes.map((n) => n.errors)
      const retriedBefore = retried.length
      const via = await timed(() => db.query(sql, params))
      expect(direct.ok).toBe(false)
      expect(via.ok).toBe(false)
      const d = direct.error as pg.DatabaseError
      const e = via.error as pg.DatabaseError
      expect(e).toBeInstanceOf(pg.DatabaseError)
      expect(e.constructor).toBe(d.constructor)
      expect(e.code).toBe(sqlstate)
      for (const key of [
        'code',
        'message',
        'severity',
        'position',
        'detail',
        'hint',
        'constraint',
        'table',
        'column',
      ] as const) {
        expect(e[key], key).toEqual(d[key])
      }
      if (sql.includes('nope') || sql.includes('missing')) expect(e.position).toBeDefined()
      // Where it ran: reads on a replica, writes on the primary; an SQL error is never retried.
      const errorsAfter = db.topology().nodes.map((n) => n.errors)
      const grew = errorsAfter.map((n, i) => n - errorsBefore[i]!)
      expect(grew.reduce((a, b) => a + b, 0)).toBe(1)
      expect(grew[0]).toBe(kind === 'write' ? 1 : 0)
      expect(retried.length).toBe(retriedBefore)
    },
  )

  it('the callback form and pinned clients get the same errors', async () => {
    const err = await new Promise<Error | undefined>((resolve) => {
      db.query('SELECT 1/0', (e) => resolve(e))
    })
    expect(err).toBeInstanceOf(pg.DatabaseError)
    expect((err as pg.DatabaseError).code).toBe('22012')
    const client = await db.connect()
    try {
      await expect(client.query('SELECT * FROM missing_table_x')).rejects.toMatchObject({ code: '42P01' })
    } finally {
      client.release()
    }
    const inTx = await timed(() =>
      db.transaction(async (tx) => {
        await tx.query("INSERT INTO bad_input_t VALUES (50, 'rolled back')")
        await tx.query('SELECT 1/0')
      }),
    )
    expect(inTx.error).toBeInstanceOf(pg.DatabaseError)
    expect((inTx.error as pg.DatabaseError).code).toBe('22012')
    expect(await adminQuery(pgc.primaryUrl, 'SELECT 1 FROM bad_input_t WHERE id = 50')).toEqual([])
  })

  it('10,000 failing queries (reads, writes, transactions; concurrency 50) leak no client', async () => {
    const TOTAL = 10_000
    const CONCURRENCY = 50
    const kinds: [string, () => Promise<unknown>][] = [
      ['read 22012', () => db.query('SELECT 1/0')],
      ['read 42P01', () => db.query('SELECT * FROM missing_table_x WHERE id = $1', [1])],
      ['write 22012', () => db.query('INSERT INTO bad_input_t (id) VALUES (1/0)')],
      ['write 23505', () => db.query("INSERT INTO bad_input_t VALUES (1, 'dup')")],
      ['syntax 42601', () => db.query('SELEC 1')],
      ['forced replica 22012', () => db.replica.query('SELECT 1/0')],
      [
        'transaction 22012',
        () =>
          db.transaction(async (tx) => {
            await tx.query('SELECT 1')
            await tx.query('SELECT 1/0')
          }),
      ],
      [
        'pinned 42P01',
        async () => {
          const client = await db.connect()
          try {
            await client.query('SELECT * FROM missing_table_x')
          } finally {
            client.release()
          }
        },
      ],
    ]
    let next = 0
    let failed = 0
    const unexpected: unknown[] = []
    const started = Date.now()
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < TOTAL) {
          const i = next++
          const [, run] = kinds[i % kinds.length]!
          try {
            await run()
            unexpected.push(`query ${i} succeeded`)
          } catch (err) {
            if (err instanceof pg.DatabaseError) failed++
            else unexpected.push(err)
          }
        }
      }),
    )
    console.log(`[bad-input] ${TOTAL} failing queries in ${Date.now() - started} ms`)
    expect(unexpected).toEqual([])
    expect(failed).toBe(TOTAL)

    await eventually(() => {
      expect(db.waitingCount).toBe(0)
      expect(db.totalCount).toBe(db.idleCount)
      for (const node of db.topology().nodes) {
        expect(node.inFlight, node.name).toBe(0)
        expect(node.pool.waiting, node.name).toBe(0)
        expect(node.pool.total, node.name).toBe(node.pool.idle)
        expect(node.pool.total, node.name).toBeLessThanOrEqual(10)
      }
    }, 5_000)
    // The servers agree: no connection of the library is stuck in a query or a transaction.
    for (const node of pgc.nodes) {
      const rows = await adminQuery<{ state: string }>(
        node.url,
        `SELECT state FROM pg_stat_activity WHERE application_name = $1 AND state <> 'idle'`,
        [APP],
      )
      expect(rows, node.name).toEqual([])
    }
    // And the cluster still works.
    await db.query("INSERT INTO bad_input_t VALUES (4, 'after the flood')")
    expect((await db.primary.query('SELECT v FROM bad_input_t WHERE id = 4')).rows).toEqual([
      { v: 'after the flood' },
    ])
  })

  it('calls after end() fail clearly with ClusterEndedError', async () => {
    const ended = cluster({ primary: pgc.primaryUrl, replicas: pgc.replicaUrls, ...FAST })
    await ended.ready({ timeoutMs: 20_000 })
    await ended.query('SELECT 1')
    await ended.end()
    expect(ended.ended).toBe(true)
    const calls = await Promise.all([
      timed(() => ended.query('SELECT 1')),
      timed(() => ended.query('INSERT INTO bad_input_t VALUES (5)')),
      timed(() => ended.primary.query('SELECT 1')),
      timed(() => ended.replica.query('SELECT 1')),
      timed(() => ended.connect()),
      timed(() => ended.connect({ role: 'replica' })),
      timed(() => ended.transaction(async () => 1)),
      timed(() => ended.session(() => ended.query('SELECT 1'))),
      timed(() => ended.ready()),
      timed(() => ended.addNode(pgc.replicaUrls[0]!)),
      timed(() => ended.removeNode('x')),
    ])
    for (const call of calls) {
      expect(call.error).toBeInstanceOf(ClusterEndedError)
      expect((call.error as ClusterEndedError).code).toBe('PGSPLIT_ENDED')
      expect((call.error as Error).message).toMatch(/ended with end\(\)/)
      expect(call.ms).toBeLessThan(1_000)
    }
    const viaCallback = await new Promise<Error | undefined>((resolve) =>
      ended.query('SELECT 1', (e) => resolve(e)),
    )
    expect(viaCallback).toBeInstanceOf(ClusterEndedError)
    // end() again is harmless, in both forms.
    await ended.end()
    await new Promise<void>((resolve, reject) => ended.end((err) => (err ? reject(err) : resolve())))
    expect(ended.totalCount).toBe(0)
  })

  it('after end() the library holds no connection on any server', async () => {
    await db.end()
    for (const db2 of open) await db2.end()
    expect(db.totalCount).toBe(0)
    await expectNoLibraryConnections(
      pgc.nodes.map((n) => n.url),
      APP,
      5_000,
    )
    expect(processErrors.unhandledRejections).toEqual([])
    expect(processErrors.uncaughtExceptions).toEqual([])
  })
})
