/**
 * Against a proxy: pgpool-II (streaming-replication mode, load balancing, primary weight 0)
 * in front of the same local cluster, against pgsplit in process, at the same client
 * concurrency and the same client pool size. A read-only and a 90/10 read/write workload.
 */
import pg from 'pg'
import type { TestCluster } from '../src/testing/index.js'
import type { BenchContext } from './lib/context.js'
import { randomItemId } from './lib/context.js'
import { postmasterPids, serverCpuSampler } from './lib/cpu.js'
import { type Comparison, compare, interleave } from './lib/interleave.js'
import { runLoad } from './lib/load.js'
import { findPgpool, type PgpoolServer, startPgpool } from './lib/pgpool-server.js'
import { createCluster } from './lib/pgsplit.js'
import { queriesByRole } from './overhead.js'

export interface PgpoolComparison extends Comparison {
  /** Reads per node as each side counted them during the measured runs. */
  pgpoolSelectsByNode: Record<string, number>
  pgsplitQueriesByRole: { primary: number; replica: number }
}

export type PgpoolResult =
  | {
      skipped: false
      version: string
      readOnly: PgpoolComparison
      mixed: PgpoolComparison
      /** Read-only with ONE caller: latency-bound, shows the cost of the extra hop per query. */
      readOnlySerial: PgpoolComparison
      concurrency: number
      clientPoolMax: number
      numInitChildren: number
      durationMs: number
      reps: number
      note: string
    }
  | { skipped: true; reason: string }

const READ_SQL = 'SELECT id, name, value FROM items WHERE id = $1'
const WRITE_SQL = 'UPDATE items SET value = value + 1 WHERE id = $1'

export async function runPgpool(ctx: BenchContext, cluster: TestCluster): Promise<PgpoolResult> {
  if (findPgpool() === null) {
    return {
      skipped: true,
      reason: 'pgpool-II is not installed (scripts/bench.sh installs the pgpool2 package)',
    }
  }
  let server: PgpoolServer
  try {
    server = await startPgpool(cluster)
  } catch (err) {
    return { skipped: true, reason: `pgpool-II did not start: ${(err as Error).message.split('\n')[0]}` }
  }
  // Same client concurrency and pool size on both sides: at most `concurrency` statements in flight.
  const poolMax = ctx.concurrency
  const viaPgpool = new pg.Pool({ connectionString: server.url, max: poolMax })
  viaPgpool.on('error', () => {})
  // Server-side CPU counts pgpool's processes as well as PostgreSQL's, for both variants.
  const serverCpu = serverCpuSampler(async () => [...(await postmasterPids(cluster)), server.pid])
  const db = createCluster({
    primary: cluster.primaryUrl,
    replicas: cluster.replicaUrls,
    pool: { max: poolMax },
  })
  db.on('error', () => {})
  try {
    await db.ready()
    const read = (q: (sql: string, values: unknown[]) => Promise<unknown>) => () =>
      q(READ_SQL, [randomItemId()])
    const workloads = {
      readOnlySerial: read,
      readOnly: (q: (sql: string, values: unknown[]) => Promise<unknown>) => () =>
        q(READ_SQL, [randomItemId()]),
      mixed: (q: (sql: string, values: unknown[]) => Promise<unknown>) => (_w: number, i: number) =>
        i % 10 === 9 ? q(WRITE_SQL, [randomItemId()]) : q(READ_SQL, [randomItemId()]),
    }
    const out: Record<string, PgpoolComparison> = {}
    for (const [name, make] of Object.entries(workloads)) {
      const a = make((sql, values) => viaPgpool.query(sql, values))
      const b = make((sql, values) => db.query(sql, values))
      const concurrency = name === 'readOnlySerial' ? 1 : ctx.concurrency
      const load = (op: (w: number, i: number) => Promise<unknown>, durationMs = ctx.durationMs) =>
        runLoad(op, { concurrency, durationMs, serverCpu })
      await load(a, ctx.warmupMs)
      await load(b, ctx.warmupMs)
      const nodesBefore = await server.poolNodes()
      const splitBefore = queriesByRole(db)
      const runs = await interleave(
        ctx.reps,
        () => load(a),
        () => load(b),
        (rep, x, y) =>
          ctx.log(
            `  pgpool ${name} rep ${rep + 1}/${ctx.reps}: pgpool ${x.opsPerSec.toFixed(0)}/s, pgsplit ${y.opsPerSec.toFixed(0)}/s (${(y.opsPerSec / x.opsPerSec).toFixed(2)}x)`,
          ),
      )
      const nodesAfter = await server.poolNodes()
      const splitAfter = queriesByRole(db)
      const selects: Record<string, number> = {}
      nodesAfter.forEach((n, i) => {
        const before = Number(nodesBefore[i]?.select_cnt ?? 0)
        selects[`${n.role}:${n.port}`] = Number(n.select_cnt) - before
      })
      out[name] = {
        ...compare(runs.baseline, runs.candidate),
        pgpoolSelectsByNode: selects,
        pgsplitQueriesByRole: {
          primary: splitAfter.primary - splitBefore.primary,
          replica: splitAfter.replica - splitBefore.replica,
        },
      }
    }
    return {
      skipped: false,
      version: server.version,
      readOnly: out.readOnly!,
      mixed: out.mixed!,
      readOnlySerial: out.readOnlySerial!,
      concurrency: ctx.concurrency,
      clientPoolMax: poolMax,
      numInitChildren: 32,
      durationMs: ctx.durationMs,
      reps: ctx.reps,
      note: 'ratio = pgsplit / pgpool throughput; pgpool load-balances per session (its default), primary weight 0',
    }
  } finally {
    await Promise.all([viaPgpool.end().catch(() => {}), db.end().catch(() => {})])
    await server.stop()
  }
}
