/**
 * Causal mode. (1) Write throughput with `consistency: 'causal'` (each write also fetches a WAL
 * position for its token, shared between concurrent writes) against `'eventual'`. (2) A
 * read-after-write workload: each iteration INSERTs a row and SELECTs it back inside
 * `db.session()`; the server's port tells which node served the read. The same workload under
 * eventual consistency shows what causal mode buys: reads that miss the caller's own row.
 * (3) The same guarantee written by hand over a `pg.Pool` per node (the write's position from the
 * primary, then the replica polled on the connection the read uses), against pgsplit's causal
 * mode: how close pgsplit is to what an app would build. (4) Read-after-write at 1 and 4
 * callers: the read must wait for the replica to replay the write, which an eventual read skips.
 */
import type { TestCluster } from '../src/testing/index.js'
import { HandSplit } from './hand-split.js'
import type { BenchContext } from './lib/context.js'
import { withPg } from './lib/context.js'
import { type Comparison, compare, interleave } from './lib/interleave.js'
import { type LoadResult, runLoad } from './lib/load.js'
import { createCluster } from './lib/pgsplit.js'
import { round, roundSpread, type Spread, spread } from './lib/stats.js'

interface RawCounts {
  reads: number
  onReplica: number
  missing: number
  /** Reads each replica served, by port. */
  byReplica: Record<number, number>
}

export interface CausalResult {
  /** Write throughput, causal / eventual (INSERT, same concurrency). */
  writeRatio: number
  writes: Comparison
  /** Share of read-after-write reads that a replica served in causal mode (all showed the row). */
  replicaShare: number
  replicaShareSpread: Spread
  /** Reads in causal mode that did not find the row just written (must be 0). */
  causalMissing: number
  /** The same workload, eventual mode: share of reads that did not find the row just written. */
  eventualMissingShare: number
  /** Read-after-write iterations per second, causal / eventual. */
  readAfterWriteRatio: number
  readAfterWrite: Comparison
  counts: { causal: RawCounts; eventual: RawCounts }
  /**
   * Reads of the busiest replica over the least busy one (equal weights), read-after-write
   * workload, per mode: 1 is even. Issue 18's target: at most 1.3.
   */
  replicaBalance: { causal: number | null; eventual: number | null }
  /** pgsplit causal / the hand-written causal read-after-write (same guarantee, raw pools). */
  vsHandWritten: Comparison
  /** Hand-written: reads that had to go to the primary (the replica did not show the row in time). */
  handWrittenOnPrimary: number
  /** Read-after-write causal / eventual at fewer callers (`ctx.concurrency` is the main figure). */
  readAfterWriteByConcurrency: Record<string, Comparison>
  concurrency: number
  poolMax: number
  durationMs: number
  reps: number
}

export async function runCausal(ctx: BenchContext, cluster: TestCluster): Promise<CausalResult> {
  await withPg(cluster.primaryUrl, async (c) => {
    await c.query('DROP TABLE IF EXISTS causal_rows')
    await c.query('CREATE TABLE causal_rows (id bigserial PRIMARY KEY, payload text NOT NULL)')
  })
  const replicaPorts = new Set(cluster.nodes.filter((n) => n.role === 'replica').map((n) => n.port))
  const make = (consistency: 'eventual' | 'causal') => {
    const db = createCluster({
      primary: cluster.primaryUrl,
      replicas: cluster.replicaUrls,
      pool: { max: ctx.poolMax },
      consistency,
    })
    db.on('error', () => {})
    return db
  }
  const eventual = make('eventual')
  const causal = make('causal')
  try {
    await Promise.all([eventual.ready(), causal.ready()])
    const load = (op: () => Promise<unknown>, durationMs = ctx.durationMs) =>
      runLoad(op, { concurrency: ctx.concurrency, durationMs, serverCpu: ctx.serverCpu })

    // (1) Writes.
    const insert = (db: typeof causal) => () =>
      db.query('INSERT INTO causal_rows (payload) VALUES ($1)', ['w'])
    await load(insert(eventual), ctx.warmupMs)
    await load(insert(causal), ctx.warmupMs)
    const writes = await interleave(
      ctx.reps,
      () => load(insert(eventual)),
      () => load(insert(causal)),
      (rep, a, b) =>
        ctx.log(
          `  causal writes rep ${rep + 1}/${ctx.reps}: eventual ${a.opsPerSec.toFixed(0)}/s, causal ${b.opsPerSec.toFixed(0)}/s (${(b.opsPerSec / a.opsPerSec).toFixed(3)})`,
        ),
    )

    // (2) Read after write, inside a session.
    const counts = { causal: newCounts(), eventual: newCounts() }
    const perRepShare: number[] = []
    const raw = (db: typeof causal, mode: 'eventual' | 'causal', into: () => RawCounts) => () =>
      db.session(
        async () => {
          const ins = await db.query<{ id: string }>(
            'INSERT INTO causal_rows (payload) VALUES ($1) RETURNING id',
            ['r'],
          )
          const id = ins.rows[0]!.id
          const read = await db.query<{ id: string; port: number }>(
            'SELECT id, inet_server_port() AS port FROM causal_rows WHERE id = $1',
            [id],
          )
          const c = into()
          c.reads++
          const row = read.rows[0]
          if (row === undefined) {
            c.missing++
            return
          }
          if (replicaPorts.has(row.port)) {
            c.onReplica++
            c.byReplica[row.port] = (c.byReplica[row.port] ?? 0) + 1
          }
        },
        { consistency: mode },
      )
    const warm = newCounts()
    await load(
      raw(eventual, 'eventual', () => warm),
      ctx.warmupMs,
    )
    await load(
      raw(causal, 'causal', () => warm),
      ctx.warmupMs,
    )
    const rawRuns = await interleave(
      ctx.reps,
      () => load(raw(eventual, 'eventual', () => counts.eventual)),
      async (): Promise<LoadResult> => {
        const rep = newCounts()
        const r = await load(raw(causal, 'causal', () => rep))
        counts.causal.reads += rep.reads
        counts.causal.onReplica += rep.onReplica
        counts.causal.missing += rep.missing
        for (const [port, n] of Object.entries(rep.byReplica)) {
          counts.causal.byReplica[Number(port)] = (counts.causal.byReplica[Number(port)] ?? 0) + n
        }
        perRepShare.push(rep.onReplica / Math.max(1, rep.reads))
        return r
      },
      (rep, a, b) =>
        ctx.log(
          `  causal read-after-write rep ${rep + 1}/${ctx.reps}: eventual ${a.opsPerSec.toFixed(0)}/s, causal ${b.opsPerSec.toFixed(0)}/s; causal reads on a replica ${((perRepShare[rep] ?? 0) * 100).toFixed(1)}%, eventual reads missing the row so far ${counts.eventual.missing}/${counts.eventual.reads}`,
        ),
    )
    const writeCmp = compare(writes.baseline, writes.candidate)
    const rawCmp = compare(rawRuns.baseline, rawRuns.candidate)

    // (3) The same guarantee by hand.
    const hand = handWrittenCausal(cluster, ctx.poolMax)
    const handOp = () => hand.op()
    const causalOp = raw(causal, 'causal', () => warm)
    await load(handOp, ctx.warmupMs)
    const vsHand = await interleave(
      ctx.reps,
      () => load(handOp),
      () => load(causalOp),
      (rep, a, b) =>
        ctx.log(
          `  causal read-after-write vs hand-written rep ${rep + 1}/${ctx.reps}: hand ${a.opsPerSec.toFixed(0)}/s, pgsplit ${b.opsPerSec.toFixed(0)}/s (${(b.opsPerSec / a.opsPerSec).toFixed(3)})`,
        ),
    )
    await hand.end()

    // (4) Fewer callers.
    const byConcurrency: Record<string, Comparison> = {}
    for (const concurrency of [1, 4]) {
      const loadAt = (op: () => Promise<unknown>) =>
        runLoad(op, { concurrency, durationMs: ctx.durationMs, serverCpu: ctx.serverCpu })
      const runs = await interleave(
        Math.max(2, Math.ceil(ctx.reps / 2)),
        () => loadAt(raw(eventual, 'eventual', () => warm)),
        () => loadAt(causalOp),
        (rep, a, b) =>
          ctx.log(
            `  causal read-after-write, ${concurrency} caller(s), rep ${rep + 1}: eventual ${a.opsPerSec.toFixed(0)}/s, causal ${b.opsPerSec.toFixed(0)}/s (${(b.opsPerSec / a.opsPerSec).toFixed(3)})`,
          ),
      )
      byConcurrency[String(concurrency)] = compare(runs.baseline, runs.candidate)
    }
    byConcurrency[String(ctx.concurrency)] = rawCmp

    return {
      writeRatio: writeCmp.ratio,
      writes: writeCmp,
      replicaShare: round(counts.causal.onReplica / Math.max(1, counts.causal.reads), 4),
      replicaShareSpread: roundSpread(spread(perRepShare), 4),
      causalMissing: counts.causal.missing,
      eventualMissingShare: round(counts.eventual.missing / Math.max(1, counts.eventual.reads), 4),
      readAfterWriteRatio: rawCmp.ratio,
      readAfterWrite: rawCmp,
      counts,
      replicaBalance: {
        causal: balanceOf(counts.causal, replicaPorts),
        eventual: balanceOf(counts.eventual, replicaPorts),
      },
      vsHandWritten: compare(vsHand.baseline, vsHand.candidate),
      handWrittenOnPrimary: hand.onPrimary,
      readAfterWriteByConcurrency: byConcurrency,
      concurrency: ctx.concurrency,
      poolMax: ctx.poolMax,
      durationMs: ctx.durationMs,
      reps: ctx.reps,
    }
  } finally {
    await Promise.all([eventual.end(), causal.end()])
  }
}

/**
 * Read-your-writes as an app would write it over a `pg.Pool` per node: INSERT on the primary, the
 * primary's WAL insert position (at or past the commit), then a replica (round-robin) polled on
 * the connection the read will use until it has replayed that position, up to 100 ms, else the
 * read goes to the primary. No sharing between callers: one position query per write, one poll
 * or more per read.
 */
function handWrittenCausal(cluster: TestCluster, max: number) {
  // The hand split's pools: one per node, an idle connection's error ignored.
  const split = new HandSplit(cluster.primaryUrl, cluster.replicaUrls, max)
  const primary = split.primary
  const pools = split.replicas
  let next = 0
  let onPrimary = 0
  const READ = 'SELECT id, inet_server_port() AS port FROM causal_rows WHERE id = $1'
  return {
    get onPrimary() {
      return onPrimary
    },
    async op(): Promise<void> {
      const ins = await primary.query<{ id: string }>(
        'INSERT INTO causal_rows (payload) VALUES ($1) RETURNING id',
        ['h'],
      )
      const id = ins.rows[0]!.id
      const { rows } = await primary.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn')
      const lsn = rows[0]!.lsn
      const pool = pools[next++ % pools.length]!
      const client = await pool.connect()
      try {
        const deadline = Date.now() + 100
        for (let i = 0; i < 10_000; i++) {
          const r = await client.query<{ ok: boolean }>(
            'SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS ok',
            [lsn],
          )
          if (r.rows[0]!.ok) {
            const read = await client.query(READ, [id])
            if (read.rows.length !== 1) throw new Error('hand-written causal read missed its row')
            return
          }
          if (Date.now() >= deadline) break
          await new Promise((resolve) => setTimeout(resolve, 1))
        }
      } finally {
        client.release()
      }
      onPrimary++
      await primary.query(READ, [id])
    },
    end: (): Promise<void> => split.end(),
  }
}

function newCounts(): RawCounts {
  return { reads: 0, onReplica: 0, missing: 0, byReplica: {} }
}

/** Busiest over least busy replica (null: fewer than two replicas, or one served nothing). */
function balanceOf(counts: RawCounts, replicaPorts: ReadonlySet<number>): number | null {
  const served = [...replicaPorts].map((p) => counts.byReplica[p] ?? 0)
  if (served.length < 2) return null
  const min = Math.min(...served)
  return min === 0 ? null : round(Math.max(...served) / min, 3)
}
