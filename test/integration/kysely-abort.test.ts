import { CompiledQuery, type DatabaseConnection, Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Cluster, createCluster } from '../../src/index.js'
import { SplitDialect } from '../../src/kysely/index.js'
import { startCluster, type TestCluster } from '../../src/testing/index.js'
import { until } from '../support/cluster.js'
import { adminQuery, sleep } from '../support/reliability.js'

// Issue 13, behaviour 13, Kysely 0.29 only: `inflightQueryAbortStrategy` ('cancel query',
// 'kill session') through SplitDialect, and `onCreateConnection` once per physical client.
// Kysely 0.29 calls, on the DatabaseConnection the driver hands out: collectSessionInfo()
// (optional, before the query, when an abort strategy is set), executeQuery(query, { signal }),
// and on abort cancelQuery(controlConnectionProvider) or killSession(controlConnectionProvider);
// the provider lends another connection of the same driver. PostgresDriver implements them with
// `select pg_cancel_backend(pid)` / `select pg_terminate_backend(pid)`, pid = client.processID.

interface DB {
  k_item: { id: number; v: string }
}

let pgc: TestCluster
let cluster: Cluster
let db: Kysely<DB>

/** Backends on the replicas (and the primary) running a statement tagged `tag`: [url, pid]. */
async function running(tag: string): Promise<[string, number][]> {
  const out: [string, number][] = []
  for (const u of [pgc.primaryUrl, ...pgc.replicaUrls]) {
    const rows = await adminQuery<{ pid: number }>(
      u,
      "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()",
      [`%${tag}%`],
    )
    for (const r of rows) out.push([u, r.pid])
  }
  return out
}

async function backendAlive(u: string, pid: number): Promise<boolean> {
  const rows = await adminQuery(u, 'SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid])
  return rows.length === 1
}

beforeAll(async () => {
  pgc = await startCluster({ replicas: 2, backend: 'local' })
  cluster = createCluster({
    primary: pgc.primaryUrl,
    replicas: pgc.replicaUrls,
    healthCheck: { intervalMs: 200 },
    pool: { idleTimeoutMillis: 120_000 },
  })
  cluster.on('error', () => {})
  await cluster.ready()
  db = new Kysely<DB>({ dialect: new SplitDialect({ cluster }) })
})

afterAll(async () => {
  await db?.destroy()
  await Promise.race([cluster?.end(), sleep(10_000)])
  await pgc?.destroy()
})

describe("Kysely 0.29's inflightQueryAbortStrategy through SplitDialect", () => {
  it.each([
    ['cancel query', true],
    ['kill session', false],
  ] as const)("'%s': the aborted read stops on its server (backend kept: %s)", async (strategy, kept) => {
    const tag = `kabort-${strategy.replace(' ', '-')}`
    const controller = new AbortController()
    const query = sql<{ tag: string }>`select pg_sleep(5), ${sql.lit(tag)} as tag`.execute(db, {
      signal: controller.signal,
      inflightQueryAbortStrategy: strategy,
    })
    let outcome: unknown = 'running'
    const settled = query.then(
      () => 'resolved',
      (err: unknown) => err,
    )
    void settled.then((o) => {
      outcome = o
    })
    // Until the statement runs on a server, or the query settles (a dialect that refuses the
    // strategy rejects at once: the assertion below then shows its error).
    const found = await until(
      'the read to be running',
      async () => (outcome !== 'running' ? 'settled' : (await running(tag))[0]),
      5_000,
    )
    expect(outcome, 'the query runs until aborted').toBe('running')
    const [u, pid] = found as [string, number]
    expect(pgc.replicaUrls, 'a read runs on a replica').toContain(u)
    const abortedAt = Date.now()
    controller.abort()
    const aborted = await settled
    expect(aborted).not.toBe('resolved')
    expect((aborted as Error).name).toBe('AbortError')
    // The server-side statement ends well before its 5 s.
    await until('the statement to stop on the server', async () => (await running(tag)).length === 0, 3_000)
    expect(Date.now() - abortedAt).toBeLessThan(4_000)
    if (kept) expect(await backendAlive(u, pid), 'cancel keeps the session').toBe(true)
    else await until('the session to be terminated', async () => !(await backendAlive(u, pid)), 3_000)
    // The dialect still works afterwards.
    expect((await sql<{ n: number }>`select 1 as n`.execute(db)).rows).toEqual([{ n: 1 }])
  })
})

describe('onCreateConnection runs once per physical client', () => {
  it('runs once for each pg client of every node, and its settings hold on that client', async () => {
    const own = createCluster({
      primary: pgc.primaryUrl,
      replicas: pgc.replicaUrls,
      healthCheck: { intervalMs: 200 },
      pool: { max: 2, idleTimeoutMillis: 120_000 },
    })
    own.on('error', () => {})
    await own.ready()
    let calls = 0
    const k = new Kysely<DB>({
      dialect: new SplitDialect({
        cluster: own,
        onCreateConnection: async (connection: DatabaseConnection) => {
          calls++
          await connection.executeQuery(CompiledQuery.raw("SET application_name = 'kysely_hook'"))
        },
      }),
    })
    try {
      const app = sql<{
        app: string
        rec: boolean
      }>`select current_setting('application_name') as app, pg_is_in_recovery() as rec`
      const seen = await Promise.all(Array.from({ length: 20 }, () => app.execute(k)))
      const inTx = await k.transaction().execute((tx) => app.execute(tx))
      const rows = [...seen.flatMap((r) => r.rows), ...inTx.rows]
      expect(new Set(rows.map((r) => r.app))).toEqual(new Set(['kysely_hook']))
      expect(new Set(rows.map((r) => r.rec))).toEqual(new Set([true, false]))
      const physical = own.topology().nodes.reduce((sum, n) => sum + n.pool.total, 0)
      expect(physical).toBeGreaterThan(0)
      expect(calls).toBe(physical)
    } finally {
      await k.destroy()
      await own.end()
    }
  })
})
