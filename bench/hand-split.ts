/**
 * Against the hand split, as an app would write it without pgsplit: one plain `pg.Pool` per node
 * (the same `max` as pgsplit's pools, no other options), reads round-robin over the replicas'
 * pools, writes to the primary's pool. pgsplit is `createCluster` over the same nodes at its
 * defaults. A pgbench-like accounts table; a 90/10 mix of primary-key reads and updates, and
 * primary-key reads only. Reads per replica as pgsplit counted them tell how evenly it spread them.
 */
import pg from 'pg'
import type { TestCluster } from '../src/testing/index.js'
import type { BenchContext } from './lib/context.js'
import { waitForReplicas, withPg } from './lib/context.js'
import { type Comparison, compare, interleave } from './lib/interleave.js'
import { runLoad } from './lib/load.js'
import { type Cluster, createCluster } from './lib/pgsplit.js'
import { round } from './lib/stats.js'

export const ACCOUNT_ROWS = 100_000
export const ACCOUNT_READ_SQL = 'SELECT id, v, filler FROM bench_accounts WHERE id = $1'
export const ACCOUNT_WRITE_SQL = 'UPDATE bench_accounts SET v = v + 1 WHERE id = $1'

/** A random id of `bench_accounts`. */
export function randomAccountId(): number {
  return 1 + Math.floor(Math.random() * ACCOUNT_ROWS)
}

/**
 * `bench_accounts`: 100k rows shaped like pgbench's accounts (an int key, an int balance, an
 * 84-character filler), created on the primary; returns once every replica has replayed it.
 */
export async function seedAccounts(cluster: TestCluster): Promise<void> {
  await withPg(cluster.primaryUrl, async (c) => {
    await c.query('DROP TABLE IF EXISTS bench_accounts')
    await c.query(
      'CREATE TABLE bench_accounts (id int PRIMARY KEY, v int NOT NULL, filler char(84) NOT NULL) WITH (fillfactor = 90)',
    )
    await c.query(`INSERT INTO bench_accounts SELECT g, 0, '' FROM generate_series(1, ${ACCOUNT_ROWS}) g`)
    await c.query('VACUUM ANALYZE bench_accounts')
  })
  await waitForReplicas(cluster)
}

/** The hand split: a plain pool per node, reads round-robin over the replicas. */
export class HandSplit {
  readonly primary: pg.Pool
  readonly replicas: pg.Pool[]
  #next = 0

  constructor(primaryUrl: string, replicaUrls: readonly string[], max: number, extra: pg.PoolConfig = {}) {
    const pool = (url: string) => {
      const p = new pg.Pool({ connectionString: url, max, ...extra })
      p.on('error', () => {})
      return p
    }
    this.primary = pool(primaryUrl)
    this.replicas = replicaUrls.map(pool)
  }

  read(text: string | pg.QueryConfig, values?: unknown[]): Promise<pg.QueryResult> {
    const pool = this.replicas[this.#next]!
    this.#next = (this.#next + 1) % this.replicas.length
    return pool.query(text as string, values)
  }

  write(text: string, values?: unknown[]): Promise<pg.QueryResult> {
    return this.primary.query(text, values)
  }

  async end(): Promise<void> {
    await Promise.all([this.primary, ...this.replicas].map((p) => p.end().catch(() => {})))
  }
}

/** Queries pgsplit counted per replica port since `before` (from `db.topology()`). */
export function replicaQueries(db: Cluster, before: Record<number, number> = {}): Record<number, number> {
  const out: Record<number, number> = {}
  for (const n of db.topology().nodes) {
    if (n.role === 'replica') out[n.port] = n.queries - (before[n.port] ?? 0)
  }
  return out
}

/** Busiest over least busy replica (equal weights): 1 is even; null with fewer than 2 or an idle one. */
export function balanceOf(byReplica: Record<number, number>): number | null {
  const served = Object.values(byReplica)
  if (served.length < 2) return null
  const min = Math.min(...served)
  return min === 0 ? null : round(Math.max(...served) / min, 3)
}

export interface HandSplitComparison extends Comparison {
  /** Reads (queries) pgsplit sent to each replica during the measured runs, by port. */
  pgsplitByReplica: Record<number, number>
  /** Queries pgsplit sent to the primary during the measured runs. */
  pgsplitOnPrimary: number
}

export interface HandSplitResult {
  /** pgsplit / hand split throughput, 90% PK reads and 10% updates (issue 18: ≥ 0.97). */
  mixedRatio: number
  /** Same, PK reads only. */
  readRatio: number
  mixed: HandSplitComparison
  reads: HandSplitComparison
  /** Busiest / least busy replica in pgsplit's read-only runs (eventual mode; issue 18: ≤ 1.3). */
  replicaBalance: number | null
  replicas: number
  concurrency: number
  poolMax: number
  durationMs: number
  reps: number
}

export async function runHandSplit(ctx: BenchContext, cluster: TestCluster): Promise<HandSplitResult> {
  await seedAccounts(cluster)
  const hand = new HandSplit(cluster.primaryUrl, cluster.replicaUrls, ctx.poolMax)
  const db = createCluster({
    primary: cluster.primaryUrl,
    replicas: cluster.replicaUrls,
    pool: { max: ctx.poolMax },
  })
  db.on('error', () => {})
  try {
    await db.ready()
    const load = (op: (w: number, i: number) => Promise<unknown>, durationMs = ctx.durationMs) =>
      runLoad(op, { concurrency: ctx.concurrency, durationMs, serverCpu: ctx.serverCpu })
    const workloads = {
      mixed: {
        hand: (_w: number, i: number) =>
          i % 10 === 9
            ? hand.write(ACCOUNT_WRITE_SQL, [randomAccountId()])
            : hand.read(ACCOUNT_READ_SQL, [randomAccountId()]),
        pgsplit: (_w: number, i: number) =>
          i % 10 === 9
            ? db.query(ACCOUNT_WRITE_SQL, [randomAccountId()])
            : db.query(ACCOUNT_READ_SQL, [randomAccountId()]),
      },
      reads: {
        hand: () => hand.read(ACCOUNT_READ_SQL, [randomAccountId()]),
        pgsplit: () => db.query(ACCOUNT_READ_SQL, [randomAccountId()]),
      },
    }
    const out: Partial<Record<keyof typeof workloads, HandSplitComparison>> = {}
    for (const [name, w] of Object.entries(workloads) as [keyof typeof workloads, typeof workloads.mixed][]) {
      await load(w.hand, ctx.warmupMs)
      await load(w.pgsplit, ctx.warmupMs)
      const before = replicaQueries(db)
      const primaryBefore = primaryQueries(db)
      const runs = await interleave(
        ctx.reps,
        () => load(w.hand),
        () => load(w.pgsplit),
        (rep, a, b) =>
          ctx.log(
            `  handSplit ${name} rep ${rep + 1}/${ctx.reps}: hand ${a.opsPerSec.toFixed(0)}/s, pgsplit ${b.opsPerSec.toFixed(0)}/s (${(b.opsPerSec / a.opsPerSec).toFixed(3)})`,
          ),
      )
      out[name] = {
        ...compare(runs.baseline, runs.candidate),
        pgsplitByReplica: replicaQueries(db, before),
        pgsplitOnPrimary: primaryQueries(db) - primaryBefore,
      }
    }
    return {
      mixedRatio: out.mixed!.ratio,
      readRatio: out.reads!.ratio,
      mixed: out.mixed!,
      reads: out.reads!,
      replicaBalance: balanceOf(out.reads!.pgsplitByReplica),
      replicas: cluster.replicaUrls.length,
      concurrency: ctx.concurrency,
      poolMax: ctx.poolMax,
      durationMs: ctx.durationMs,
      reps: ctx.reps,
    }
  } finally {
    await Promise.all([hand.end(), db.end().catch(() => {})])
  }
}

function primaryQueries(db: Cluster): number {
  return db
    .topology()
    .nodes.filter((n) => n.role === 'primary')
    .reduce((s, n) => s + n.queries, 0)
}
