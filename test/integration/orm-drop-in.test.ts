import { PrismaPg } from '@prisma/adapter-pg'
import { sql } from 'drizzle-orm'
import { drizzle } from 'drizzle-orm/node-postgres'
import { pgTable, serial, text } from 'drizzle-orm/pg-core'
import type pg from 'pg'
import { PgBoss } from 'pg-boss'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Cluster, createCluster } from '../../src/index.js'
import { startCluster, type TestCluster } from '../../src/testing/index.js'
import { until } from '../support/cluster.js'
import { adminQuery, sleep } from '../support/reliability.js'

// Issue 13, behaviour 11: libraries that take a pg.Pool, given a Cluster, as their users would
// write it. Where each statement ran is checked three ways: pg_is_in_recovery() inside the same
// transaction, the cluster's per-node `queries` counters, and rows read past pgsplit.

let pgc: TestCluster
let db: Cluster
const items = pgTable('orm_items', { id: serial('id').primaryKey(), v: text('v').notNull() })

/** Queries each node ran since `before` (from the cluster's own counters). */
function ranSince(before: Map<string, number>): { primary: number; replicas: number } {
  const topo = db.topology()
  let primary = 0
  let replicas = 0
  for (const n of topo.nodes) {
    const delta = n.queries - (before.get(n.name) ?? 0)
    if (n.name === topo.primary) primary += delta
    else replicas += delta
  }
  return { primary, replicas }
}

const counts = () => new Map(db.topology().nodes.map((n) => [n.name, n.queries]))

async function committed(v: string): Promise<number> {
  const [row] = await adminQuery<{ n: number }>(
    pgc.primaryUrl,
    'SELECT count(*)::int AS n FROM orm_items WHERE v = $1',
    [v],
  )
  return row!.n
}

async function replicated(): Promise<void> {
  const [row] = await adminQuery<{ lsn: string }>(pgc.primaryUrl, 'SELECT pg_current_wal_lsn()::text AS lsn')
  for (const u of pgc.replicaUrls) {
    await until(
      'replicas to replay the primary position',
      async () =>
        (
          await adminQuery<{ ok: boolean }>(u, 'SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS ok', [
            row!.lsn,
          ])
        )[0]?.ok,
      20_000,
    )
  }
}

beforeAll(async () => {
  pgc = await startCluster({ replicas: 2, backend: 'local' })
  await adminQuery(pgc.primaryUrl, 'CREATE TABLE orm_items (id serial PRIMARY KEY, v text NOT NULL)')
  await replicated()
  // Causal: a library's read right after its own write (pg-boss's fetch after send) sees it.
  db = createCluster({
    primary: pgc.primaryUrl,
    replicas: pgc.replicaUrls,
    consistency: 'causal',
    // A read waits for a replica to replay the position read when the read needs it, which can
    // include WAL not flushed yet (an aborted transaction's record waits for the WAL writer, up
    // to 3 x wal_writer_delay): with the default 100 ms the read may fairly go to the primary
    // (a CI run saw it). These tests check where a library's statements go, so they wait longer.
    causalWaitMs: 3_000,
    healthCheck: { intervalMs: 200 },
  })
  db.on('error', () => {})
  await db.ready()
})

afterAll(async () => {
  await Promise.race([db?.end(), sleep(10_000)])
  await pgc?.destroy()
})

describe("Drizzle ORM's node-postgres driver given a Cluster", () => {
  const orm = () => drizzle(db as unknown as pg.Pool)

  it('inserts on the primary and selects on a replica', async () => {
    const d = orm()
    let before = counts()
    await d.insert(items).values({ v: 'drizzle-insert' })
    expect(ranSince(before)).toEqual({ primary: 1, replicas: 0 })
    expect(await committed('drizzle-insert')).toBe(1)
    await replicated()
    before = counts()
    const rows = await d.select({ v: items.v, rec: sql<boolean>`pg_is_in_recovery()` }).from(items)
    expect(rows).toContainEqual({ v: 'drizzle-insert', rec: true })
    expect(ranSince(before)).toEqual({ primary: 0, replicas: 1 })
  })

  it('db.transaction(...) runs on one primary connection and commits', async () => {
    const d = orm()
    const inside = await d.transaction(async (tx) => {
      await tx.insert(items).values({ v: 'drizzle-tx' })
      const res = await tx.execute<{ rec: boolean; p: number }>(
        sql`select pg_is_in_recovery() as rec, inet_server_port() as p, (select count(*)::int from orm_items where v = 'drizzle-tx') as n`,
      )
      return res.rows[0]
    })
    expect(inside).toEqual({ rec: false, p: pgc.nodes[0]!.port, n: 1 })
    expect(await committed('drizzle-tx')).toBe(1)
  })

  it('a transaction that throws is rolled back', async () => {
    const d = orm()
    await expect(
      d.transaction(async (tx) => {
        await tx.insert(items).values({ v: 'drizzle-rollback' })
        throw new Error('undo')
      }),
    ).rejects.toThrow('undo')
    expect(await committed('drizzle-rollback')).toBe(0)
  })
})

describe("Prisma's @prisma/adapter-pg given a Cluster (driven without the engine)", () => {
  const q = (text: string, args: unknown[] = []) => ({
    sql: text,
    args,
    argTypes: args.map(() => ({ scalarType: 'string' as const, arity: 'scalar' as const })),
  })

  it('connect(): reads on a replica, a transaction on the primary that commits', async () => {
    const factory = new PrismaPg(db as unknown as pg.Pool)
    const adapter = await factory.connect()
    try {
      const read = await adapter.queryRaw(q('SELECT pg_is_in_recovery() AS rec'))
      expect(read.columnNames).toEqual(['rec'])
      expect(read.rows).toEqual([[true]])

      // The engine's sequence for an interactive transaction: startTransaction (the adapter
      // sends BEGIN), the statements, COMMIT sent by the engine, then commit() releases.
      const tx = await adapter.startTransaction()
      const inTx = await tx.queryRaw(q('SELECT pg_is_in_recovery() AS rec, inet_server_port() AS p'))
      expect(inTx.rows).toEqual([[false, pgc.nodes[0]!.port]])
      expect(await tx.executeRaw(q('INSERT INTO orm_items (v) VALUES ($1)', ['prisma-tx']))).toBe(1)
      await tx.executeRaw(q('COMMIT'))
      await tx.commit()
      expect(await committed('prisma-tx')).toBe(1)

      const rolled = await adapter.startTransaction()
      await rolled.executeRaw(q('INSERT INTO orm_items (v) VALUES ($1)', ['prisma-rollback']))
      await rolled.executeRaw(q('ROLLBACK'))
      await rolled.rollback()
      expect(await committed('prisma-rollback')).toBe(0)
    } finally {
      await adapter.dispose()
    }
    // The adapter's dispose() leaves an external pool open: the cluster still answers.
    expect((await db.query<{ n: number }>('SELECT 1 AS n')).rows).toEqual([{ n: 1 }])
  })
})

describe('pg-boss on a Cluster (it sends its transactions as one string)', () => {
  it('starts, sends a job, fetches and completes it', async () => {
    const boss = new PgBoss({
      db: { executeSql: (text: string, values?: unknown[]) => db.query(text, values) },
      schema: 'pgboss_conf',
      schedule: false,
      supervise: false,
    })
    const errors: unknown[] = []
    boss.on('error', (err: unknown) => errors.push(err))
    const before = counts()
    await boss.start()
    try {
      await boss.createQueue('conf-queue')
      const id = await boss.send('conf-queue', { hello: 'cluster' })
      expect(id).toEqual(expect.any(String))
      const jobs = await boss.fetch<{ hello: string }>('conf-queue')
      expect(jobs.map((j) => [j.id, j.data])).toEqual([[id, { hello: 'cluster' }]])
      await boss.complete('conf-queue', id!)
      // Past pgsplit, on the primary: the job is completed there.
      const [row] = await adminQuery<{ state: string }>(
        pgc.primaryUrl,
        'SELECT state::text AS state FROM pgboss_conf.job WHERE id = $1',
        [id],
      )
      expect(row).toEqual({ state: 'completed' })
      const ran = ranSince(before)
      expect(ran.primary).toBeGreaterThan(0)
    } finally {
      await boss.stop({ graceful: false })
    }
    expect(errors).toEqual([])
  })
})
