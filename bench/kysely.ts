/**
 * Kysely: the same query builder call through Kysely's own `PostgresDialect` (a `pg.Pool` on the
 * replica) and through pgsplit's `SplitDialect` (a cluster whose only replica is that one).
 */
import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'
import type { TestCluster } from '../src/testing/index.js'
import type { BenchContext } from './lib/context.js'
import { randomItemId } from './lib/context.js'
import { type Comparison, compare, interleave } from './lib/interleave.js'
import { runLoad } from './lib/load.js'
import { createCluster, loadKyselyEntry } from './lib/pgsplit.js'
import { queriesByRole } from './overhead.js'

interface Database {
  items: { id: number; name: string; value: number }
}

export interface KyselyResult extends Comparison {
  replicaShare: number
  query: string
  concurrency: number
  poolMax: number
  durationMs: number
  reps: number
}

export async function runKysely(ctx: BenchContext, cluster: TestCluster): Promise<KyselyResult> {
  const replica = cluster.nodes.find((n) => n.role === 'replica')!
  const pool = new pg.Pool({ connectionString: replica.url, max: ctx.poolMax })
  pool.on('error', () => {})
  const plain = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) })
  const db = createCluster({
    primary: cluster.primaryUrl,
    replicas: [replica.url],
    pool: { max: ctx.poolMax },
  })
  db.on('error', () => {})
  const { SplitDialect } = await loadKyselyEntry()
  const split = new Kysely<Database>({ dialect: new SplitDialect({ cluster: db }) })
  const query = (k: Kysely<Database>) =>
    k.selectFrom('items').select(['id', 'name', 'value']).where('id', '=', randomItemId()).executeTakeFirst()
  try {
    await db.ready()
    const load = (k: Kysely<Database>, durationMs = ctx.durationMs) =>
      runLoad(() => query(k), { concurrency: ctx.concurrency, durationMs, serverCpu: ctx.serverCpu })
    await load(plain, ctx.warmupMs)
    await load(split, ctx.warmupMs)
    const before = queriesByRole(db)
    const runs = await interleave(
      ctx.reps,
      () => load(plain),
      () => load(split),
      (rep, a, b) =>
        ctx.log(
          `  kysely rep ${rep + 1}/${ctx.reps}: PostgresDialect ${a.opsPerSec.toFixed(0)}/s, SplitDialect ${b.opsPerSec.toFixed(0)}/s (${(b.opsPerSec / a.opsPerSec).toFixed(3)})`,
        ),
    )
    const after = queriesByRole(db)
    const onReplica = after.replica - before.replica
    const onPrimary = after.primary - before.primary
    return {
      ...compare(runs.baseline, runs.candidate),
      replicaShare: onReplica / Math.max(1, onReplica + onPrimary),
      query: compiledSql(plain),
      concurrency: ctx.concurrency,
      poolMax: ctx.poolMax,
      durationMs: ctx.durationMs,
      reps: ctx.reps,
    }
  } finally {
    await split.destroy()
    await db.end().catch(() => {}) // a no-op if the dialect ended it
    await plain.destroy() // ends the pool
  }
}

function compiledSql(k: Kysely<Database>): string {
  return k.selectFrom('items').select(['id', 'name', 'value']).where('id', '=', 1).compile().sql
}
