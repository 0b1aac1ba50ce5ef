/**
 * Failover: kill -9 of the primary under a steady write load through pgsplit, then a scripted
 * promotion of replica 1. Measured: from the moment the promoted node accepts writes (seen by our
 * own poll of `pg_is_in_recovery()` on a separate connection to it) to the first write
 * acknowledged through pgsplit; and the writes that failed, by error type. A fresh cluster for
 * every repetition.
 */
import { performance } from 'node:perf_hooks'
import pg from 'pg'
import type { BenchContext } from './lib/context.js'
import { startBenchCluster, withPg } from './lib/context.js'
import { errorKind } from './lib/load.js'
import { createCluster } from './lib/pgsplit.js'
import { round, roundSpread, type Spread, spread } from './lib/stats.js'

export interface FailoverRun {
  /** Promoted node writable (our poll) -> first write acknowledged through pgsplit. */
  recoveryMs: number
  /** kill -9 -> first write acknowledged by the new primary (includes reaping the killed server and the scripted promotion). */
  outageMs: number
  /** kill -9 -> promoted node writable (the harness's part: reap, pg_promote, recovery end). */
  killToWritableMs: number
  /** promote() resolved (it also waits for a test write and a CHECKPOINT) -> first acknowledged write; negative = before. */
  promoteResolvedToFirstAckMs: number
  /** pgsplit's own 'failover' event: durationMs (primary lost -> new primary chosen). */
  failoverEventMs: number | null
  writesBefore: number
  /** Writes acknowledged after the SIGKILL by the old primary's surviving backends. */
  writesOldPrimaryAfterKill: number
  /** Writes acknowledged by the new primary. */
  writesAfter: number
  failedWrites: number
  failedByKind: Record<string, number>
  /** Write attempts that failed after the new primary was writable (should be 0). */
  failedAfterWritable: number
  /** Acknowledged writes missing on the new primary (asynchronous replication: the kill may lose some). */
  ackedWritesLost: number
  newPrimaryMatches: boolean
}

export interface FailoverResult {
  medianMs: number
  maxMs: number
  recoveryMs: Spread
  outageMs: Spread
  failedWritesTotal: number
  ackedWritesLostTotal: number
  failedByKind: Record<string, number>
  runs: FailoverRun[]
  writers: number
  pollIntervalMs: number
  note: string
}

const POLL_MS = 2

export async function runFailover(ctx: BenchContext, reps: number): Promise<FailoverResult> {
  const runs: FailoverRun[] = []
  for (let rep = 0; rep < reps; rep++) {
    const run = await oneFailover(ctx)
    runs.push(run)
    ctx.log(
      `  failover ${rep + 1}/${reps}: writable -> first write ${run.recoveryMs.toFixed(0)} ms, kill -> first write ${run.outageMs.toFixed(0)} ms, failed writes ${run.failedWrites} ${JSON.stringify(run.failedByKind)}`,
    )
  }
  const recovery = spread(runs.map((r) => r.recoveryMs))
  const failedByKind: Record<string, number> = {}
  for (const r of runs) {
    for (const [k, n] of Object.entries(r.failedByKind)) failedByKind[k] = (failedByKind[k] ?? 0) + n
  }
  return {
    medianMs: round(recovery.median, 1),
    maxMs: round(recovery.max, 1),
    recoveryMs: roundSpread(recovery, 1),
    outageMs: roundSpread(spread(runs.map((r) => r.outageMs)), 1),
    failedWritesTotal: runs.reduce((s, r) => s + r.failedWrites, 0),
    ackedWritesLostTotal: runs.reduce((s, r) => s + r.ackedWritesLost, 0),
    failedByKind,
    runs,
    writers: WRITERS,
    pollIntervalMs: POLL_MS,
    note: `recoveryMs is measured from our ${POLL_MS} ms poll seeing pg_is_in_recovery() = false on the promoted node; pgsplit at its defaults (failover.pollIntervalMs 100, healthCheck.intervalMs 1000)`,
  }
}

const WRITERS = 4

async function oneFailover(ctx: BenchContext): Promise<FailoverRun> {
  const cluster = await startBenchCluster(ctx, 2)
  try {
    await withPg(cluster.primaryUrl, (c) =>
      c.query(
        'CREATE TABLE failover_writes (id bigserial PRIMARY KEY, worker int NOT NULL, at timestamptz DEFAULT now())',
      ),
    )
    const target = cluster.nodes[1]!
    const db = createCluster({
      primary: cluster.primaryUrl,
      replicas: cluster.replicaUrls,
      pool: { max: 10 },
    })
    db.on('error', () => {})
    let failoverEventMs: number | null = null
    let newPrimary: string | null = null
    db.on('failover', (e) => {
      failoverEventMs = e.durationMs
      newPrimary = e.to
    })
    // The watcher's connection to the node to promote, opened before anything happens.
    const watcher = new pg.Client({ connectionString: target.url })
    watcher.on('error', () => {})
    try {
      await db.ready()
      await watcher.connect()
      let stop = false
      // Each acknowledged write with the port of the server that ran it.
      const acks: { at: number; port: number; id: string }[] = []
      const failures: { at: number; kind: string }[] = []
      const writer = async (w: number): Promise<void> => {
        while (!stop) {
          try {
            const res = await db.query<{ port: number; id: string }>(
              'INSERT INTO failover_writes (worker) VALUES ($1) RETURNING id, inet_server_port() AS port',
              [w],
            )
            acks.push({ at: performance.now(), port: res.rows[0]!.port, id: res.rows[0]!.id })
          } catch (err) {
            failures.push({ at: performance.now(), kind: errorKind(err) })
          }
        }
      }
      const writers = Array.from({ length: WRITERS }, (_, w) => writer(w))
      await new Promise((r) => setTimeout(r, ctx.quick ? 500 : 1_000))
      const tKill = performance.now()
      await cluster.kill(0)
      // Our own view of when node 1 accepts writes: poll it while the harness promotes it.
      let tWritable = Number.NaN
      let watching = true
      const watch = (async () => {
        while (watching) {
          const { rows } = await watcher.query<{ rec: boolean }>('SELECT pg_is_in_recovery() AS rec')
          if (rows[0]?.rec === false) {
            tWritable = performance.now()
            return
          }
          await new Promise((r) => setTimeout(r, POLL_MS))
        }
      })()
      await cluster.promote(1)
      const tPromoted = performance.now()
      await watch
      watching = false
      // Wait for the first acknowledged write after the node became writable (bounded).
      const deadline = performance.now() + 30_000
      const onNew = () => acks.find((a) => a.port === target.port)
      while (onNew() === undefined && performance.now() < deadline) {
        await new Promise((r) => setTimeout(r, 5))
      }
      await new Promise((r) => setTimeout(r, ctx.quick ? 300 : 500))
      stop = true
      await Promise.all(writers)
      // The first write acknowledged by the new primary (writes in flight at the kill may still
      // complete on the old one for a moment: its backends outlive the postmaster).
      const firstAck = onNew()?.at ?? Number.NaN
      // Acknowledged writes that the new primary does not have (asynchronous replication).
      const ackedIds = acks.map((a) => a.id)
      const found = await withPg(target.url, async (c) => {
        const { rows } = await c.query<{ n: number }>(
          'SELECT count(*)::int AS n FROM failover_writes WHERE id = ANY($1::bigint[])',
          [ackedIds],
        )
        return rows[0]!.n
      })
      const failedByKind: Record<string, number> = {}
      for (const f of failures) failedByKind[f.kind] = (failedByKind[f.kind] ?? 0) + 1
      return {
        recoveryMs: round(firstAck - tWritable, 1),
        outageMs: round(firstAck - tKill, 1),
        killToWritableMs: round(tWritable - tKill, 1),
        promoteResolvedToFirstAckMs: round(firstAck - tPromoted, 1),
        failoverEventMs,
        writesBefore: acks.filter((a) => a.at < tKill).length,
        writesOldPrimaryAfterKill: acks.filter((a) => a.at >= tKill && a.port !== target.port).length,
        writesAfter: acks.filter((a) => a.port === target.port).length,
        failedWrites: failures.length,
        failedByKind,
        failedAfterWritable: failures.filter((f) => f.at > tWritable).length,
        ackedWritesLost: ackedIds.length - found,
        newPrimaryMatches: newPrimary === `${target.host}:${target.port}`,
      }
    } finally {
      await watcher.end().catch(() => {})
      await db.end().catch(() => {})
    }
  } finally {
    await cluster.destroy()
  }
}
