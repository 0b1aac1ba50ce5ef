import type { LoadResult } from './load.js'
import { round, roundSpread, type Spread, spread } from './stats.js'

/**
 * Runs a baseline and a candidate `reps` times each, interleaved in the same process: A B, B A,
 * A B, ... (the order flips every repetition, so a drift of the machine's speed over the run
 * weighs on both alike). Returns the results in repetition order, paired.
 */
export async function interleave(
  reps: number,
  baseline: () => Promise<LoadResult>,
  candidate: () => Promise<LoadResult>,
  onRep?: (rep: number, a: LoadResult, b: LoadResult) => void,
): Promise<{ baseline: LoadResult[]; candidate: LoadResult[] }> {
  const a: LoadResult[] = []
  const b: LoadResult[] = []
  for (let rep = 0; rep < reps; rep++) {
    if (rep % 2 === 0) {
      a.push(await baseline())
      b.push(await candidate())
    } else {
      b.push(await candidate())
      a.push(await baseline())
    }
    onRep?.(rep, a[rep]!, b[rep]!)
  }
  return { baseline: a, candidate: b }
}

/** Medians over repetitions of one variant's throughput and latencies. */
export interface VariantSummary {
  opsPerSec: Spread
  p50Ms: Spread
  p99Ms: Spread
  /** CPU time of the client process per operation (µs): steadier than throughput on a busy machine. */
  cpuUsPerOp: Spread
  serverCpuUsPerOp: Spread
  stackCpuUsPerOp: Spread
  ops: number
  errors: number
  errorKinds: Record<string, number>
}

export function summarize(results: readonly LoadResult[]): VariantSummary {
  const errorKinds: Record<string, number> = {}
  for (const r of results) {
    for (const [k, n] of Object.entries(r.errorKinds)) errorKinds[k] = (errorKinds[k] ?? 0) + n
  }
  return {
    opsPerSec: roundSpread(spread(results.map((r) => r.opsPerSec)), 1),
    p50Ms: roundSpread(spread(results.map((r) => r.p50Ms)), 3),
    p99Ms: roundSpread(spread(results.map((r) => r.p99Ms)), 3),
    cpuUsPerOp: roundSpread(spread(results.map((r) => r.cpuUsPerOp)), 1),
    serverCpuUsPerOp: roundSpread(spread(results.map((r) => r.serverCpuUsPerOp)), 1),
    stackCpuUsPerOp: roundSpread(spread(results.map((r) => r.stackCpuUsPerOp)), 1),
    ops: results.reduce((s, r) => s + r.ops, 0),
    errors: results.reduce((s, r) => s + r.errors, 0),
    errorKinds,
  }
}

/** A candidate against its baseline: per-repetition throughput ratios (candidate / baseline). */
export interface Comparison {
  /** Median of the per-repetition ratios. */
  ratio: number
  ratioSpread: Spread
  /** Each repetition's ratio, in order. */
  ratios: number[]
  /** Median p50 and p99 latency ratios (candidate / baseline; below 1 = candidate faster). */
  p50Ratio: number
  p99Ratio: number
  /** Median of per-repetition client CPU per operation ratios (candidate / baseline). */
  cpuPerOpRatio: number
  /** Median of per-repetition ratios of client + server CPU per operation (candidate / baseline). */
  stackCpuPerOpRatio: number
  /**
   * Median of the per-repetition differences of client CPU per operation (µs, candidate minus
   * baseline): what the candidate adds per query. Paired by repetition, so a drift of the
   * machine over the run weighs on both sides of each difference alike.
   */
  cpuAddedUs: number
  cpuAddedUsSpread: Spread
  baseline: VariantSummary
  candidate: VariantSummary
}

export function compare(baseline: readonly LoadResult[], candidate: readonly LoadResult[]): Comparison {
  const ratios = baseline.map((a, i) => candidate[i]!.opsPerSec / a.opsPerSec)
  const p50 = baseline.map((a, i) => candidate[i]!.p50Ms / a.p50Ms)
  const p99 = baseline.map((a, i) => candidate[i]!.p99Ms / a.p99Ms)
  const cpu = baseline.map((a, i) => candidate[i]!.cpuUsPerOp / a.cpuUsPerOp)
  const stack = baseline.map((a, i) => candidate[i]!.stackCpuUsPerOp / a.stackCpuUsPerOp)
  const added = spread(baseline.map((a, i) => candidate[i]!.cpuUsPerOp - a.cpuUsPerOp))
  const s = spread(ratios)
  return {
    ratio: round(s.median),
    ratioSpread: roundSpread(s),
    ratios: ratios.map((r) => round(r)),
    p50Ratio: round(spread(p50).median),
    p99Ratio: round(spread(p99).median),
    cpuPerOpRatio: round(spread(cpu).median),
    stackCpuPerOpRatio: round(spread(stack).median),
    cpuAddedUs: Math.round(added.median * 100) / 100,
    cpuAddedUsSpread: roundSpread(added, 2),
    baseline: summarize(baseline),
    candidate: summarize(candidate),
  }
}
