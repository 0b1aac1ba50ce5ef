/**
 * pgsplit through PgBouncer (`pool_mode = transaction`, one PgBouncer in front of each node, a
 * common deployment) against pgsplit connected directly, on the same local cluster, same client
 * concurrency and pool size: PK reads, and a 90/10 read/write mix. The ratio is through PgBouncer
 * over direct; server CPU counts the PgBouncer processes as well as PostgreSQL's on both sides.
 */
import { execFileSync } from 'node:child_process'
import type { TestCluster } from '../src/testing/index.js'
import {
  type Bouncers,
  PGBOUNCER_BIN,
  pgbouncerUnavailableReason,
  startBouncers,
} from '../test/support/pgbouncer.js'
import type { BenchContext } from './lib/context.js'
import { randomItemId } from './lib/context.js'
import { postmasterPids, serverCpuSampler } from './lib/cpu.js'
import { type Comparison, compare, interleave } from './lib/interleave.js'
import { runLoad } from './lib/load.js'
import { createCluster } from './lib/pgsplit.js'

export type PgbouncerResult =
  | {
      skipped: false
      version: string
      /** Ratio = through PgBouncer / direct. */
      readOnly: Comparison
      mixed: Comparison
      concurrency: number
      clientPoolMax: number
      bouncerPoolSize: number
      durationMs: number
      reps: number
      note: string
    }
  | { skipped: true; reason: string }

const READ_SQL = 'SELECT id, name, value FROM items WHERE id = $1'
const WRITE_SQL = 'UPDATE items SET value = value + 1 WHERE id = $1'

export async function runPgbouncer(ctx: BenchContext, cluster: TestCluster): Promise<PgbouncerResult> {
  const reason = pgbouncerUnavailableReason()
  if (reason !== undefined) return { skipped: true, reason: `pgbouncer is not installed: ${reason}` }
  const poolMax = ctx.poolMax
  // As many server connections per node as the client pool: PgBouncer is never the bottleneck by size.
  const bouncerPoolSize = poolMax
  let bouncers: Bouncers
  try {
    bouncers = await startBouncers(cluster, { poolSize: bouncerPoolSize })
  } catch (err) {
    return { skipped: true, reason: `pgbouncer did not start: ${(err as Error).message.split('\n')[0]}` }
  }
  const serverCpu = serverCpuSampler(async () => [
    ...(await postmasterPids(cluster)),
    ...bouncers.list.map((b) => b.pid),
  ])
  const open = (primary: string, replicas: string[]) => {
    const db = createCluster({ primary, replicas, pool: { max: poolMax } })
    db.on('error', () => {})
    return db
  }
  const direct = open(cluster.primaryUrl, cluster.replicaUrls)
  const primaryBouncer = bouncers.of(cluster.nodes[0]!.port)
  const viaBouncer = open(
    primaryBouncer.url,
    cluster.nodes.slice(1).map((n) => bouncers.of(n.port).url),
  )
  try {
    await Promise.all([direct.ready(), viaBouncer.ready()])
    type Q = (sql: string, values: unknown[]) => Promise<unknown>
    const workloads = {
      readOnly: (q: Q) => () => q(READ_SQL, [randomItemId()]),
      mixed: (q: Q) => (_w: number, i: number) =>
        i % 10 === 9 ? q(WRITE_SQL, [randomItemId()]) : q(READ_SQL, [randomItemId()]),
    }
    const out: Record<string, Comparison> = {}
    for (const [name, make] of Object.entries(workloads)) {
      const a = make((sql, values) => direct.query(sql, values))
      const b = make((sql, values) => viaBouncer.query(sql, values))
      const load = (op: (w: number, i: number) => Promise<unknown>, durationMs = ctx.durationMs) =>
        runLoad(op, { concurrency: ctx.concurrency, durationMs, serverCpu })
      await load(a, ctx.warmupMs)
      await load(b, ctx.warmupMs)
      const runs = await interleave(
        ctx.reps,
        () => load(a),
        () => load(b),
        (rep, x, y) =>
          ctx.log(
            `  pgbouncer ${name} rep ${rep + 1}/${ctx.reps}: direct ${x.opsPerSec.toFixed(0)}/s, via PgBouncer ${y.opsPerSec.toFixed(0)}/s (${(y.opsPerSec / x.opsPerSec).toFixed(2)}x)`,
          ),
      )
      out[name] = compare(runs.baseline, runs.candidate)
    }
    const version = pgbouncerVersion()
    return {
      skipped: false,
      version,
      readOnly: out.readOnly!,
      mixed: out.mixed!,
      concurrency: ctx.concurrency,
      clientPoolMax: poolMax,
      bouncerPoolSize,
      durationMs: ctx.durationMs,
      reps: ctx.reps,
      note: 'ratio = pgsplit through one PgBouncer (transaction mode) per node / pgsplit direct; server CPU includes the PgBouncers',
    }
  } finally {
    await Promise.all([direct.end().catch(() => {}), viaBouncer.end().catch(() => {})])
    await bouncers.stop()
  }
}

function pgbouncerVersion(): string {
  try {
    return execFileSync(PGBOUNCER_BIN, ['--version'], { encoding: 'utf8' }).split('\n')[0]!.trim()
  } catch {
    return 'unknown'
  }
}
