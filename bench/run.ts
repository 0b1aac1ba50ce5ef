/**
 * `npm run bench [-- --quick] [-- --only=overhead,kysely,pgpool,pgbouncer,causal,handSplit,instructions,shapes,failover,classifier] [-- --out=file]`
 *
 * What pgsplit costs and what it saves, side by side with the alternatives, on a local
 * streaming-replication cluster (plain PostgreSQL processes on 127.0.0.1). Every comparison
 * runs its two variants interleaved in this one process (A B, B A, ...), fixed durations, and
 * reports the median of the per-repetition ratios with their spread. Prints a table and writes
 * bench/results.json (a full run) or bench/results.quick.json (--quick or --only).
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { cpus, loadavg, totalmem } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { TestCluster } from '../src/testing/index.js'
import { type CausalResult, runCausal } from './causal.js'
import { type ClassifierResult, runClassifier } from './classifier.js'
import { type FailoverResult, runFailover } from './failover.js'
import { type HandSplitResult, runHandSplit } from './hand-split.js'
import { type InstructionsResult, runInstructions } from './instructions.js'
import type { KyselyResult } from './kysely.js'
import type { BenchContext } from './lib/context.js'
import { seedItems, startBenchCluster, withPg } from './lib/context.js'
import { postmasterPids, serverCpuSampler } from './lib/cpu.js'
import type { Comparison } from './lib/interleave.js'
import { pgsplitBuild } from './lib/pgsplit.js'
import { type OverheadResult, runOverhead } from './overhead.js'
import { type PatroniResult, runPatroni } from './patroni.js'
import { type PgbouncerResult, runPgbouncer } from './pgbouncer.js'
import { type PgpoolResult, runPgpool } from './pgpool.js'
import { runShapes, type ShapesResult } from './shapes.js'
import { runTokens, type TokensResult } from './tokens.js'

const ALL = [
  'classifier',
  'overhead',
  'kysely',
  'pgpool',
  'pgbouncer',
  'causal',
  'tokens',
  'handSplit',
  'instructions',
  'shapes',
  'failover',
  'patroni',
] as const
type BenchName = (typeof ALL)[number]

/** The benchmarks that run on the one shared cluster (a primary and 2 replicas, items seeded). */
const ON_SHARED_CLUSTER: readonly BenchName[] = [
  'overhead',
  'kysely',
  'pgpool',
  'pgbouncer',
  'causal',
  'tokens',
  'handSplit',
  'instructions',
]

interface Args {
  quick: boolean
  only: BenchName[]
  /** `--only` was given (a --quick run leaves out the slow instruction counts unless asked for). */
  onlyGiven: boolean
  out: string | null
}

function parseArgs(argv: string[]): Args {
  const args: Args = { quick: false, only: [...ALL], onlyGiven: false, out: null }
  for (const a of argv) {
    if (a === '--quick') args.quick = true
    else if (a.startsWith('--only=')) {
      const names = a.slice('--only='.length).split(',').filter(Boolean)
      for (const n of names) {
        if (!(ALL as readonly string[]).includes(n))
          throw new Error(`unknown benchmark ${n} (one of ${ALL.join(', ')})`)
      }
      args.only = names as BenchName[]
      args.onlyGiven = true
    } else if (a.startsWith('--out=')) args.out = a.slice('--out='.length)
    else if (a === '--help' || a === '-h') {
      console.log(
        `usage: npm run bench -- [--quick] [--only=a,b] [--out=path]   benchmarks: ${ALL.join(', ')}`,
      )
      process.exit(0)
    } else throw new Error(`unknown argument ${a}`)
  }
  return args
}

function machineInfo(pgVersion: string | null): Record<string, unknown> {
  const cpu = cpus()
  // pgpool prints its version on stderr.
  const out = spawnSync('pgpool', ['--version'], { encoding: 'utf8' })
  const pgpool = `${out.stdout ?? ''}${out.stderr ?? ''}`.trim() || null
  return {
    cores: cpu.length,
    cpuModel: cpu[0]?.model ?? 'unknown',
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    loadAverageAtStart: loadavg().map((l) => Math.round(l * 100) / 100),
    platform: `${process.platform} ${process.arch}`,
    node: process.version,
    postgres: pgVersion,
    pgpool,
    date: new Date().toISOString(),
  }
}

type Status = 'met' | 'MISSED' | 'n/a'

interface Row {
  bench: string
  figure: string
  value: string
  spread: string
  target: string
  status: Status
}

const fmt = (n: number | null | undefined, digits = 3): string =>
  n === null || n === undefined || Number.isNaN(n) ? '-' : n.toFixed(digits)

function check(value: number | null | undefined, ok: (v: number) => boolean): Status {
  if (value === null || value === undefined || Number.isNaN(value)) return 'n/a'
  return ok(value) ? 'met' : 'MISSED'
}

function printTable(rows: Row[]): void {
  const head: Row = {
    bench: 'benchmark',
    figure: 'figure',
    value: 'median',
    spread: 'spread (min..max)',
    target: 'target',
    status: 'n/a',
  }
  const keys = ['bench', 'figure', 'value', 'spread', 'target'] as const
  const width = Object.fromEntries(keys.map((k) => [k, Math.max(...[head, ...rows].map((r) => r[k].length))]))
  const line = (r: Row, status: string) =>
    `| ${keys.map((k) => r[k].padEnd(width[k]!)).join(' | ')} | ${status.padEnd(6)} |`
  console.log(line(head, 'status'))
  console.log(`|${keys.map((k) => '-'.repeat(width[k]! + 2)).join('|')}|--------|`)
  for (const r of rows) console.log(line(r, r.status === 'n/a' ? '' : r.status))
}

interface Failed {
  error: string
}

interface Results {
  classifier?: ClassifierResult | Failed
  overhead?: OverheadResult | Failed
  kysely?: KyselyResult | Failed
  pgpool?: PgpoolResult | Failed
  pgbouncer?: PgbouncerResult | Failed
  causal?: CausalResult | Failed
  tokens?: TokensResult | Failed
  handSplit?: HandSplitResult | Failed
  instructions?: InstructionsResult | Failed
  shapes?: ShapesResult | Failed
  failover?: FailoverResult | Failed
  patroni?: PatroniResult | Failed
}

function ok<T extends object>(value: T | Failed | undefined): T | undefined {
  return value === undefined || 'error' in value ? undefined : value
}

/** A benchmark that ran: not failed, not skipped (pgpool-II, PgBouncer or valgrind missing). */
function ran<T extends { skipped: boolean }>(
  value: T | Failed | undefined,
): Extract<T, { skipped: false }> | undefined {
  const v = ok(value)
  return v === undefined || v.skipped ? undefined : (v as Extract<T, { skipped: false }>)
}

function tableRows(r: Results, want: (name: BenchName) => boolean): Row[] {
  const rows: Row[] = []
  const add = (row: Partial<Row> & Pick<Row, 'figure' | 'value'>) =>
    rows.push({ bench: '', spread: '', target: '', status: 'n/a', ...row })
  const failed = (bench: string, figure: string, value: unknown, target = '') => {
    if (value !== undefined && typeof value === 'object' && value !== null && 'error' in value) {
      add({ bench, figure, value: 'error', target })
      return true
    }
    return value === undefined
  }
  const ratioRows = (
    bench: string,
    figure: string,
    c: Comparison,
    target: string,
    pass: ((v: number) => boolean) | null,
  ): void => {
    add({
      bench,
      figure,
      value: fmt(c.ratio),
      spread: `${fmt(c.ratioSpread.min)}..${fmt(c.ratioSpread.max)}`,
      target,
      status: pass === null ? 'n/a' : check(c.ratio, pass),
    })
    add({
      figure: '  throughput /s (base -> cand)',
      value: `${fmt(c.baseline.opsPerSec.median, 0)} -> ${fmt(c.candidate.opsPerSec.median, 0)}`,
    })
    add({
      figure: '  p50 / p99 ms (base -> cand)',
      value: `${fmt(c.baseline.p50Ms.median, 2)}/${fmt(c.baseline.p99Ms.median, 2)} -> ${fmt(c.candidate.p50Ms.median, 2)}/${fmt(c.candidate.p99Ms.median, 2)}`,
    })
    add({
      figure: '  CPU us/op: client, +servers',
      value: `${fmt(c.baseline.cpuUsPerOp.median, 1)}, ${fmt(c.baseline.stackCpuUsPerOp.median, 1)} -> ${fmt(c.candidate.cpuUsPerOp.median, 1)}, ${fmt(c.candidate.stackCpuUsPerOp.median, 1)}`,
      spread: `ratios ${fmt(c.cpuPerOpRatio)}, ${fmt(c.stackCpuPerOpRatio)}`,
    })
  }
  // What pgsplit adds per query in µs of client CPU (issue 18's targets), from paired repetitions.
  const cpuAddedRow = (bench: string, figure: string, c: Comparison, maxUs: number): void => {
    add({
      bench,
      figure: `${figure} (us)`,
      value: fmt(c.cpuAddedUs, 2),
      spread: `${fmt(c.cpuAddedUsSpread.min, 2)}..${fmt(c.cpuAddedUsSpread.max, 2)}`,
      target: `<= ${maxUs}`,
      status: check(c.cpuAddedUs, (v) => v <= maxUs),
    })
  }
  // The same figure where the issue sets no target for it (info).
  const cpuAddedInfo = (figure: string, c: Comparison): void => {
    add({
      figure,
      value: fmt(c.cpuAddedUs, 2),
      spread: `${fmt(c.cpuAddedUsSpread.min, 2)}..${fmt(c.cpuAddedUsSpread.max, 2)}`,
    })
  }
  if (want('overhead') && !failed('overhead', 'pgsplit/raw pg.Pool', r.overhead, '>= 0.97')) {
    const o = ok(r.overhead)!
    ratioRows(
      'overhead',
      'pgsplit/raw pg.Pool, PK select',
      o.workloads.selectByPk,
      '>= 0.97',
      (v) => v >= 0.97,
    )
    ratioRows('overhead', 'pgsplit/raw pg.Pool, SELECT 1', o.workloads.select1, '>= 0.97', (v) => v >= 0.97)
    cpuAddedRow('overhead', 'client CPU added per query, PK select', o.workloads.selectByPk, 1.5)
    cpuAddedRow('overhead', 'client CPU added per query, SELECT 1', o.workloads.select1, 1.5)
    ratioRows(
      'overhead',
      "same, raw pool with pgsplit's bounds (info)",
      o.workloads.select1SameBounds,
      '',
      null,
    )
  }
  if (want('kysely') && !failed('kysely', 'SplitDialect/PostgresDialect', r.kysely, '>= 0.97')) {
    ratioRows('kysely', 'SplitDialect/PostgresDialect', ok(r.kysely)!, '>= 0.97', (v) => v >= 0.97)
    cpuAddedRow('kysely', 'client CPU added per query', ok(r.kysely)!, 3)
  }
  if (want('pgpool') && !failed('pgpool', 'pgsplit/pgpool-II', r.pgpool, '>= 2')) {
    const p = ok(r.pgpool)!
    if (p.skipped) add({ bench: 'pgpool', figure: 'skipped', value: p.reason, target: '>= 2' })
    else {
      ratioRows('pgpool', 'pgsplit/pgpool-II, read-only', p.readOnly, '>= 2', (v) => v >= 2)
      ratioRows('pgpool', 'pgsplit/pgpool-II, 90/10 r/w', p.mixed, '>= 2', (v) => v >= 2)
      ratioRows('pgpool', 'same, read-only, 1 caller (info)', p.readOnlySerial, '', null)
    }
  }
  if (want('pgbouncer') && !failed('pgbouncer', 'via PgBouncer/direct', r.pgbouncer)) {
    const p = ok(r.pgbouncer)!
    if (p.skipped) add({ bench: 'pgbouncer', figure: 'skipped', value: p.reason })
    else {
      ratioRows('pgbouncer', 'via PgBouncer/direct, PK select (info)', p.readOnly, '', null)
      ratioRows('pgbouncer', 'via PgBouncer/direct, 90/10 r/w (info)', p.mixed, '', null)
    }
  }
  if (want('failover') && !failed('failover', 'writable -> first write', r.failover, 'median <= 500')) {
    const f = ok(r.failover)!
    add({
      bench: 'failover',
      figure: `writable -> first write ms (${f.runs.length} runs)`,
      value: fmt(f.medianMs, 0),
      spread: `${fmt(f.recoveryMs.min, 0)}..${fmt(f.maxMs, 0)}`,
      target: 'median <= 500',
      status: check(f.medianMs, (v) => v <= 500),
    })
    add({
      figure: '  kill -9 -> first write ms',
      value: fmt(f.outageMs.median, 0),
      spread: `${fmt(f.outageMs.min, 0)}..${fmt(f.outageMs.max, 0)}`,
    })
    add({
      figure: '  failed writes (all runs)',
      value: String(f.failedWritesTotal),
      spread: JSON.stringify(f.failedByKind),
    })
    add({ figure: '  acknowledged writes lost (async)', value: String(f.ackedWritesLostTotal) })
  }
  if (want('causal') && !failed('causal', 'writes causal/eventual', r.causal, '>= 0.9')) {
    const c = ok(r.causal)!
    ratioRows('causal', 'writes causal/eventual', c.writes, '>= 0.9', (v) => v >= 0.9)
    add({
      bench: 'causal',
      figure: 'read-after-write reads on replicas',
      value: `${fmt(c.replicaShare * 100, 1)}%`,
      spread: `${fmt(c.replicaShareSpread.min * 100, 1)}..${fmt(c.replicaShareSpread.max * 100, 1)}%`,
    })
    add({
      figure: '  causal reads missing own row',
      value: String(c.causalMissing),
      target: '0',
      status: check(c.causalMissing, (v) => v === 0),
    })
    add({ figure: '  eventual reads missing own row', value: `${fmt(c.eventualMissingShare * 100, 1)}%` })
    add({
      figure: '  read-after-write causal/eventual',
      value: fmt(c.readAfterWriteRatio),
      spread: `${fmt(c.readAfterWrite.ratioSpread.min)}..${fmt(c.readAfterWrite.ratioSpread.max)}`,
      target: '>= 0.95',
      status: check(c.readAfterWriteRatio, (v) => v >= 0.95),
    })
    for (const [callers, cmp] of Object.entries(c.readAfterWriteByConcurrency)) {
      if (Number(callers) === c.concurrency) continue
      add({
        figure: `  same, ${callers} caller(s) (info)`,
        value: fmt(cmp.ratio),
        spread: `${fmt(cmp.ratioSpread.min)}..${fmt(cmp.ratioSpread.max)}`,
      })
    }
    add({
      figure: '  pgsplit causal / hand-written causal (info)',
      value: fmt(c.vsHandWritten.ratio),
      spread: `${fmt(c.vsHandWritten.ratioSpread.min)}..${fmt(c.vsHandWritten.ratioSpread.max)}; hand-written reads on the primary: ${c.handWrittenOnPrimary}`,
    })
    for (const mode of ['causal', 'eventual'] as const) {
      add({
        figure: `  replica balance, ${mode} (busiest / least busy)`,
        value: fmt(c.replicaBalance[mode]),
        spread: JSON.stringify(c.counts[mode].byReplica),
        target: '<= 1.3',
        status: check(c.replicaBalance[mode], (v) => v <= 1.3),
      })
    }
  }
  if (want('handSplit') && !failed('handSplit', 'pgsplit/hand split, 90/10', r.handSplit, '>= 0.97')) {
    const h = ok(r.handSplit)!
    ratioRows('handSplit', 'pgsplit/hand split, 90/10 r/w', h.mixed, '>= 0.97', (v) => v >= 0.97)
    cpuAddedInfo('  client CPU added per op, 90/10 (us)', h.mixed)
    ratioRows('handSplit', 'pgsplit/hand split, PK reads (info)', h.reads, '', null)
    cpuAddedInfo('  client CPU added per read (us)', h.reads)
    add({
      bench: 'handSplit',
      figure: 'replica balance, eventual reads (busiest / least busy)',
      value: fmt(h.replicaBalance),
      spread: JSON.stringify(h.reads.pgsplitByReplica),
      target: '<= 1.3',
      status: check(h.replicaBalance, (v) => v <= 1.3),
    })
  }
  if (want('instructions') && !failed('instructions', 'instructions per op', r.instructions)) {
    const i = ok(r.instructions)!
    if (i.skipped) add({ bench: 'instructions', figure: 'skipped', value: i.reason })
    else {
      for (const [name, c] of [
        ['PK reads', i.reads],
        ['90/10 r/w', i.mixed],
      ] as const) {
        add({
          bench: 'instructions',
          figure: `client instructions per op vs hand split, ${name} (info)`,
          value: `${c.hand.perOp} -> ${c.pgsplit.perOp} (${fmt(c.ratio)})`,
          spread: `${c.addedPerOp >= 0 ? '+' : ''}${c.addedPerOp}, ${c.addedPerOpWithoutGc >= 0 ? '+' : ''}${c.addedPerOpWithoutGc} without GC and JIT`,
        })
      }
    }
  }
  if (want('shapes') && !failed('shapes', 'shapes', r.shapes)) {
    const s = ok(r.shapes)!
    const shape = (figure: string, c: Comparison) => {
      ratioRows('shapes', `${figure} (info, ${s.reps} reps)`, c, '', null)
      cpuAddedInfo('  client CPU added per query (us)', c)
    }
    shape('4 replicas: pgsplit/hand split, PK reads', s.fourReplicas)
    add({
      figure: '  replica balance, 4 replicas (busiest / least busy)',
      value: fmt(s.fourReplicas.replicaBalance),
      spread: JSON.stringify(s.fourReplicas.pgsplitByReplica),
    })
    shape('named prepared: pgsplit/raw pg.Pool', s.prepared)
    shape('1 KB rows: pgsplit/raw pg.Pool', s.rows1k)
    shape('100 KB rows: pgsplit/raw pg.Pool', s.rows100k)
    if ('skipped' in s.tls) add({ bench: 'shapes', figure: 'TLS: skipped', value: s.tls.skipped })
    else shape('TLS every node: pgsplit/raw pg.Pool', s.tls)
  }
  if (want('tokens') && !failed('tokens', 'token read us (write -> insert LSN)', r.tokens)) {
    const t = ok(r.tokens)!
    const w = t.reads.writeLsn
    const i = t.reads.insertLsn
    add({
      bench: 'tokens',
      figure: 'token read us (write -> insert LSN)',
      value: `${fmt(w.us.median, 1)} -> ${fmt(i.us.median, 1)}`,
      spread: `${fmt(i.us.min, 1)}..${fmt(i.us.max, 1)}`,
    })
    add({
      figure: '  CPU us/read: client, servers',
      value: `${fmt(w.clientCpuUs.median, 1)}, ${fmt(w.serverCpuUs.median, 1)} -> ${fmt(i.clientCpuUs.median, 1)}, ${fmt(i.serverCpuUs.median, 1)}`,
    })
    add({
      figure: '  ns: sign, verify, verify 2nd secret',
      value: `${fmt(t.codecNs.formatSigned.median, 0)}, ${fmt(t.codecNs.verifySigned.median, 0)}, ${fmt(t.codecNs.verifyRotated.median, 0)}`,
      spread: `plain format/parse ${fmt(t.codecNs.formatPlain.median, 0)}/${fmt(t.codecNs.parsePlain.median, 0)}`,
    })
    add({ figure: '  verifyToken, reached token, us', value: fmt(t.verifyCoveredUs.median, 2) })
    add({
      figure: '  200 forged tokens refused, ms',
      value: fmt(t.forgedBurstMs.median, 1),
      spread: `${fmt(t.forgedBurstMs.min, 1)}..${fmt(t.forgedBurstMs.max, 1)}`,
    })
  }
  if (want('patroni') && !failed('patroni', 'leader change -> first write', r.patroni, '<= 200')) {
    const p = ok(r.patroni)!
    if (p.skipped) add({ bench: 'patroni', figure: 'skipped', value: p.reason })
    else {
      for (const s of p.summary) {
        const withSource = s.client === 'patroni source'
        add({
          bench: 'patroni',
          figure: `${s.fault}, ${s.client}: leader change -> first write ms`,
          value: fmt(s.leaderChangeToFirstAckMs, 0),
          spread: `fault -> leader ${fmt(s.leaderChangeMs, 0)}, -> first write ${fmt(s.faultToFirstAckMs, 0)}; writable -> first write ${fmt(s.writableToFirstAckMs, 0)}`,
          target: withSource ? '<= 200' : '',
          status: withSource ? check(s.leaderChangeToFirstAckMs, (v) => v <= 200) : 'n/a',
        })
        add({
          // Non-leader acks within the race window (the source polled, not yet answered since the
          // leader change) are counted but no rule could prevent them: the goal is on the rest.
          figure: '  non-leader acks (outside the race) / lost (sync) / failed writes / failed reads',
          value: `${s.nonLeaderAcks} (${s.nonLeaderAcksOutsideRace}) / ${s.lost} / ${s.failedWrites} / ${s.failedReads}`,
          target: withSource ? '- (0) / 0 / - / 0' : '',
          status: withSource
            ? check(s.nonLeaderAcksOutsideRace + s.lost + s.failedReads, (v) => v === 0)
            : 'n/a',
        })
      }
    }
  }
  if (want('classifier') && !failed('classifier', 'ns/statement', r.classifier)) {
    const c = ok(r.classifier)!
    add({
      bench: 'classifier',
      figure: `cached ns/statement (${c.statements} stmts)`,
      value: fmt(c.cachedNs, 0),
      spread: `${fmt(c.cached.min, 0)}..${fmt(c.cached.max, 0)}`,
    })
    add({
      bench: 'classifier',
      figure: 'uncached ns/statement',
      value: fmt(c.uncachedNs, 0),
      spread: `${fmt(c.uncached.min, 0)}..${fmt(c.uncached.max, 0)}`,
    })
  }
  return rows
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2))
  const started = Date.now()
  const log = (line: string) => console.log(line)
  log(`pgsplit under test: ${pgsplitBuild.source} (${pgsplitBuild.why})`)
  const ctx: BenchContext = args.quick
    ? { quick: true, reps: 2, durationMs: 700, warmupMs: 400, concurrency: 16, poolMax: 10, log }
    : { quick: false, reps: 10, durationMs: 1_500, warmupMs: 1_000, concurrency: 16, poolMax: 10, log }
  const failoverReps = args.quick ? 2 : 5
  const want = (name: BenchName) => args.only.includes(name)
  const results: Record<string, unknown> = {}
  const errors: Record<string, string> = {}

  const attempt = async (name: BenchName, fn: () => Promise<unknown> | unknown): Promise<void> => {
    if (!want(name)) return
    const t0 = Date.now()
    log(`${name}: running`)
    try {
      results[name] = await fn()
    } catch (err) {
      errors[name] = (err as Error).stack ?? String(err)
      results[name] = { error: (err as Error).message }
      log(`${name}: FAILED: ${(err as Error).stack}`)
    }
    log(`${name}: done in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
  }

  let pgVersion: string | null = null
  await attempt('classifier', () => runClassifier(ctx))

  const needsShared = ON_SHARED_CLUSTER.some(want)
  let cluster: TestCluster | null = null
  if (needsShared) {
    const t0 = Date.now()
    cluster = await startBenchCluster(ctx, 2)
    await seedItems(cluster)
    pgVersion = await withPg(
      cluster.primaryUrl,
      async (c) => (await c.query<{ server_version: string }>('SHOW server_version')).rows[0]!.server_version,
    )
    const c = cluster
    ctx.serverCpu = serverCpuSampler(() => postmasterPids(c))
    log(
      `cluster: 1 primary + 2 replicas, items seeded, in ${((Date.now() - t0) / 1000).toFixed(1)} s (PostgreSQL ${pgVersion})`,
    )
  }
  try {
    const shared = cluster
    if (shared !== null) {
      await attempt('overhead', () => runOverhead(ctx, shared))
      await attempt('kysely', async () => (await import('./kysely.js')).runKysely(ctx, shared))
      await attempt('pgpool', () => runPgpool(ctx, shared))
      await attempt('pgbouncer', () => runPgbouncer(ctx, shared))
      await attempt('causal', () => runCausal(ctx, shared))
      await attempt('tokens', () => runTokens(ctx, shared))
      await attempt('handSplit', () => runHandSplit(ctx, shared))
      await attempt('instructions', () =>
        args.quick && !args.onlyGiven
          ? { skipped: true, reason: 'left out of --quick (4 to 5 min under valgrind): --only=instructions' }
          : runInstructions(ctx, shared),
      )
    }
  } finally {
    await cluster?.destroy()
  }
  await attempt('shapes', () => runShapes(ctx))
  await attempt('failover', () => runFailover(ctx, failoverReps))
  await attempt('patroni', () => runPatroni(ctx, args.quick ? 1 : 2))
  if (pgVersion === null) {
    try {
      pgVersion = execFileSync('sh', ['-c', 'ls -d /usr/lib/postgresql/*/bin/postgres | sort -V | tail -1'], {
        encoding: 'utf8',
      }).trim()
      pgVersion = execFileSync(pgVersion, ['--version'], { encoding: 'utf8' }).trim()
    } catch {
      pgVersion = null
    }
  }

  // ---- table and json ----
  const r = results as Results
  const rows = tableRows(r, want)
  console.log('')
  printTable(rows)

  const json = {
    command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
    quick: args.quick,
    machine: machineInfo(pgVersion),
    pgsplitBuild,
    settings: {
      reps: ctx.reps,
      durationMs: ctx.durationMs,
      warmupMs: ctx.warmupMs,
      concurrency: ctx.concurrency,
      poolMax: ctx.poolMax,
      failoverReps,
    },
    elapsedS: Math.round((Date.now() - started) / 100) / 10,
    loadAverageAtEnd: loadavg().map((l) => Math.round(l * 100) / 100),
    headline: {
      'overhead.ratio': ok(r.overhead)?.ratio ?? null,
      'overhead.cpuAddedUs': ok(r.overhead)?.cpuAddedUs ?? null,
      'kysely.ratio': ok(r.kysely)?.ratio ?? null,
      'kysely.cpuAddedUs': ok(r.kysely)?.cpuAddedUs ?? null,
      'pgpool.readOnly.ratio': ran(r.pgpool)?.readOnly.ratio ?? null,
      'pgpool.mixed.ratio': ran(r.pgpool)?.mixed.ratio ?? null,
      'pgbouncer.readOnly.ratio': ran(r.pgbouncer)?.readOnly.ratio ?? null,
      'pgbouncer.mixed.ratio': ran(r.pgbouncer)?.mixed.ratio ?? null,
      'failover.medianMs': ok(r.failover)?.medianMs ?? null,
      'failover.maxMs': ok(r.failover)?.maxMs ?? null,
      'causal.writeRatio': ok(r.causal)?.writeRatio ?? null,
      'causal.replicaShare': ok(r.causal)?.replicaShare ?? null,
      'causal.readAfterWriteRatio': ok(r.causal)?.readAfterWriteRatio ?? null,
      'causal.vsHandWrittenRatio': ok(r.causal)?.vsHandWritten.ratio ?? null,
      'causal.replicaBalance': ok(r.causal)?.replicaBalance.causal ?? null,
      'eventual.replicaBalance': ok(r.causal)?.replicaBalance.eventual ?? null,
      'handSplit.mixedRatio': ok(r.handSplit)?.mixedRatio ?? null,
      'handSplit.readRatio': ok(r.handSplit)?.readRatio ?? null,
      'handSplit.replicaBalance': ok(r.handSplit)?.replicaBalance ?? null,
      'instructions.reads.addedPerOp': ran(r.instructions)?.reads.addedPerOp ?? null,
      'instructions.mixed.addedPerOp': ran(r.instructions)?.mixed.addedPerOp ?? null,
      'tokens.readRatio': ok(r.tokens)?.readRatio ?? null,
      'classifier.cachedNs': ok(r.classifier)?.cachedNs ?? null,
      'classifier.uncachedNs': ok(r.classifier)?.uncachedNs ?? null,
    },
    targets: rows
      .filter((row) => row.status !== 'n/a')
      .map((row) => ({
        figure: `${row.bench} ${row.figure}`.trim(),
        value: row.value,
        target: row.target,
        status: row.status,
      })),
    ...results,
    errors: Object.keys(errors).length > 0 ? errors : undefined,
  }
  const here = dirname(fileURLToPath(import.meta.url))
  const full = args.only.length === ALL.length && !args.quick
  const out = args.out ?? join(here, full ? 'results.json' : 'results.quick.json')
  writeFileSync(out, `${JSON.stringify(json, null, 2)}\n`)
  console.log(`\nwrote ${out} (${json.elapsedS} s)`)
  if (Object.keys(errors).length > 0) process.exitCode = 1
}

await main()
