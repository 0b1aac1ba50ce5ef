/**
 * Routing overhead: the same read workload on the same replica, through a raw `pg.Pool` and
 * through pgsplit's `db.query` (configured with that replica as its only replica, so both send
 * every read to the same server). Same pool size, same concurrency, interleaved repetitions.
 */
import pg from 'pg'
import type { TestCluster } from '../src/testing/index.js'
import type { BenchContext } from './lib/context.js'
import { randomItemId } from './lib/context.js'
import { type Comparison, compare, interleave } from './lib/interleave.js'
import { runLoad } from './lib/load.js'
import { type Cluster, createCluster } from './lib/pgsplit.js'

/** pgsplit's default bounds on every wait (src/config.ts DEFAULTS.pool), for the like-for-like baseline. */
const PGSPLIT_POOL_BOUNDS = { connectionTimeoutMillis: 5_000, query_timeout: 60_000, keepAlive: true }

export interface OverheadResult {
  /** Headline: pgsplit / raw throughput on the primary-key SELECT. */
  ratio: number
  /** Client CPU pgsplit adds per primary-key SELECT over a raw pg.Pool (µs, paired median). */
  cpuAddedUs: number
  workloads: {
    selectByPk: Comparison
    select1: Comparison
    /**
     * `SELECT 1` with the raw pool given pgsplit's default bounds too (connectionTimeoutMillis,
     * query_timeout, keepAlive): what the routing itself costs, without the timers that the
     * bounded waits cost both sides.
     */
    select1SameBounds: Comparison
  }
  /** Share of pgsplit's reads that ran on the replica (must be 1). */
  replicaShare: number
  replicaPort: number
  concurrency: number
  poolMax: number
  durationMs: number
  reps: number
}

const PK_SQL = 'SELECT id, name, value FROM items WHERE id = $1'

export async function runOverhead(ctx: BenchContext, cluster: TestCluster): Promise<OverheadResult> {
  const replica = cluster.nodes.find((n) => n.role === 'replica')!
  const raw = new pg.Pool({ connectionString: replica.url, max: ctx.poolMax })
  raw.on('error', () => {})
  const bounded = new pg.Pool({ connectionString: replica.url, max: ctx.poolMax, ...PGSPLIT_POOL_BOUNDS })
  bounded.on('error', () => {})
  const db = createCluster({
    primary: cluster.primaryUrl,
    replicas: [replica.url],
    pool: { max: ctx.poolMax },
  })
  db.on('error', () => {})
  try {
    await db.ready()
    const load = (run: (w: number) => Promise<unknown>, durationMs = ctx.durationMs) =>
      runLoad(run, { concurrency: ctx.concurrency, durationMs, serverCpu: ctx.serverCpu })
    const workloads = {
      selectByPk: {
        raw: () => raw.query(PK_SQL, [randomItemId()]),
        pgsplit: () => db.query(PK_SQL, [randomItemId()]),
      },
      select1: {
        raw: () => raw.query('SELECT 1'),
        pgsplit: () => db.query('SELECT 1'),
      },
      select1SameBounds: {
        raw: () => bounded.query('SELECT 1'),
        pgsplit: () => db.query('SELECT 1'),
      },
    }
    const before = queriesByRole(db)
    const out: Partial<OverheadResult['workloads']> = {}
    for (const [name, w] of Object.entries(workloads) as [
      keyof typeof workloads,
      typeof workloads.select1,
    ][]) {
      await load(w.raw, ctx.warmupMs)
      await load(w.pgsplit, ctx.warmupMs)
      const runs = await interleave(
        ctx.reps,
        () => load(w.raw),
        () => load(w.pgsplit),
        (rep, a, b) =>
          ctx.log(
            `  overhead ${name} rep ${rep + 1}/${ctx.reps}: raw ${a.opsPerSec.toFixed(0)}/s, pgsplit ${b.opsPerSec.toFixed(0)}/s (${(b.opsPerSec / a.opsPerSec).toFixed(3)})`,
          ),
      )
      out[name] = compare(runs.baseline, runs.candidate)
    }
    const after = queriesByRole(db)
    const onReplica = after.replica - before.replica
    const onPrimary = after.primary - before.primary
    return {
      ratio: out.selectByPk!.ratio,
      cpuAddedUs: out.selectByPk!.cpuAddedUs,
      workloads: out as OverheadResult['workloads'],
      replicaShare: onReplica / Math.max(1, onReplica + onPrimary),
      replicaPort: replica.port,
      concurrency: ctx.concurrency,
      poolMax: ctx.poolMax,
      durationMs: ctx.durationMs,
      reps: ctx.reps,
    }
  } finally {
    await Promise.all([raw.end(), bounded.end(), db.end()])
  }
}

/** Queries counted by pgsplit per role (primary vs replicas). */
export function queriesByRole(db: Cluster): { primary: number; replica: number } {
  let primary = 0
  let replica = 0
  for (const n of db.topology().nodes) {
    if (n.role === 'primary') primary += n.queries
    else replica += n.queries
  }
  return { primary, replica }
}
