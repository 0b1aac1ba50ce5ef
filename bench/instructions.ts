/**
 * Client instructions per operation, pgsplit against the hand split, counted by callgrind: the
 * same closed loop as `handSplit` (16 callers, pools of 10, PK reads and the 90/10 mix) in a
 * client process of its own run under `valgrind --tool=callgrind`. Instructions do not depend on
 * what else the machine runs, so this is the steady figure beside the throughput ratios, which
 * swing ±10% here. Each side runs twice, with `n1` and `n2` measured operations after the same
 * warm-up; (total(n2) - total(n1)) / (n2 - n1) is the cost of one operation in the steady state,
 * start-up and warm-up cancelled. GC and V8's compilers are reported apart: scavenges come in
 * steps (of 1 MB here) and code still tiering up is compiled in bursts, the noisiest parts.
 */
import { execFile } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import type { TestCluster } from '../src/testing/index.js'
import { ACCOUNT_READ_SQL, ACCOUNT_ROWS, ACCOUNT_WRITE_SQL, seedAccounts } from './hand-split.js'
import { readCallgrind } from './lib/callgrind.js'
import type { BenchContext } from './lib/context.js'
import { pgsplitBuild } from './lib/pgsplit.js'
import { round } from './lib/stats.js'

const run = promisify(execFile)
const here = dirname(fileURLToPath(import.meta.url))
const VALGRIND = '/usr/bin/valgrind'

export interface InstructionSide {
  /** Instructions per operation in the steady state. */
  perOp: number
  /** Of which in V8's garbage collector. */
  gcPerOp: number
  /** Of which in V8's compilers (should be small after the warm-up). */
  jitPerOp: number
  /** In SCRAM hashing (a connection opened while measuring; ~0 when the window is clean). */
  scramPerOp: number
}

export interface InstructionComparison {
  hand: InstructionSide
  pgsplit: InstructionSide
  /** pgsplit's instructions per operation over the hand split's. */
  ratio: number
  /** pgsplit - hand split, per operation. */
  addedPerOp: number
  /** The same without GC and compilation: the code that runs for every query. */
  addedPerOpWithoutGc: number
}

export type InstructionsResult =
  | { skipped: true; reason: string }
  | {
      skipped: false
      reads: InstructionComparison
      mixed: InstructionComparison
      warmup: number
      n1: number
      n2: number
      concurrency: number
      poolMax: number
    }

export async function runInstructions(ctx: BenchContext, cluster: TestCluster): Promise<InstructionsResult> {
  if (!existsSync(VALGRIND))
    return { skipped: true, reason: `${VALGRIND} not found (Debian package valgrind)` }
  if (pgsplitBuild.source !== 'dist') {
    return { skipped: true, reason: `needs the built package under valgrind: ${pgsplitBuild.why}` }
  }
  await seedAccounts(cluster)
  const dir = mkdtempSync(join(tmpdir(), 'pgsplit-instructions-'))
  const configPath = join(dir, 'config.json')
  writeFileSync(
    configPath,
    JSON.stringify({
      primary: cluster.primaryUrl,
      replicas: cluster.replicaUrls,
      poolMax: ctx.poolMax,
      concurrency: ctx.concurrency,
      rows: ACCOUNT_ROWS,
      readSql: ACCOUNT_READ_SQL,
      writeSql: ACCOUNT_WRITE_SQL,
      pgsplitEntry: join(here, '..', 'dist', 'index.js'),
    }),
  )
  // Not smaller with --quick: below ~6,000 operations V8 is still tiering code up.
  const [warmup, n1, n2] = [6_000, 4_000, 12_000]
  const count = async (side: 'hand' | 'pgsplit', workload: string, n: number) => {
    const out = join(dir, `${side}-${workload}-${n}.cg`)
    const client = join(here, 'lib', 'instructions-client.mjs')
    const { stdout } = await run(
      VALGRIND,
      [
        '--tool=callgrind',
        `--callgrind-out-file=${out}`,
        '--dump-instr=no',
        '--collect-jumps=no',
        process.execPath,
        // A small young generation: scavenges every ~1 MB, so a few thousand operations see
        // many, in proportion, rather than zero or one of 16 MB (the default's steps).
        '--max-semi-space-size=1',
        client,
        side,
        workload,
        String(warmup),
        String(n),
        configPath,
      ],
      { timeout: 15 * 60_000, maxBuffer: 16 << 20 },
    )
    const done = JSON.parse(stdout.trim().split('\n').pop()!) as { ops: number }
    if (done.ops !== n) throw new Error(`${side} ${workload}: ${done.ops} operations, expected ${n}`)
    return readCallgrind(out)
  }
  try {
    const compare = async (workload: 'reads' | 'mixed'): Promise<InstructionComparison> => {
      // The two sides side by side (2 cores), then the longer runs.
      const [h1, p1] = await Promise.all([count('hand', workload, n1), count('pgsplit', workload, n1)])
      const [h2, p2] = await Promise.all([count('hand', workload, n2), count('pgsplit', workload, n2)])
      const per = (a: number, b: number) => (b - a) / (n2 - n1)
      const side = (a: typeof h1, b: typeof h1): InstructionSide => ({
        perOp: Math.round(per(a.total, b.total)),
        gcPerOp: Math.round(per(a.gc, b.gc)),
        jitPerOp: Math.round(per(a.jit, b.jit)),
        scramPerOp: Math.round(per(a.scram, b.scram)),
      })
      const hand = side(h1, h2)
      const pgsplit = side(p1, p2)
      const result = {
        hand,
        pgsplit,
        ratio: round(pgsplit.perOp / hand.perOp, 4),
        addedPerOp: pgsplit.perOp - hand.perOp,
        addedPerOpWithoutGc:
          pgsplit.perOp - pgsplit.gcPerOp - pgsplit.jitPerOp - (hand.perOp - hand.gcPerOp - hand.jitPerOp),
      }
      ctx.log(
        `  instructions ${workload}: hand ${hand.perOp}/op (GC ${hand.gcPerOp}, JIT ${hand.jitPerOp}), pgsplit ${pgsplit.perOp}/op (GC ${pgsplit.gcPerOp}, JIT ${pgsplit.jitPerOp}): ${result.addedPerOp >= 0 ? '+' : ''}${result.addedPerOp} (${result.addedPerOpWithoutGc >= 0 ? '+' : ''}${result.addedPerOpWithoutGc} without GC and JIT)`,
      )
      return result
    }
    const reads = await compare('reads')
    const mixed = await compare('mixed')
    return {
      skipped: false,
      reads,
      mixed,
      warmup,
      n1,
      n2,
      concurrency: ctx.concurrency,
      poolMax: ctx.poolMax,
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
