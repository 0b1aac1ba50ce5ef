/**
 * Classifier cost per statement over a realistic mix (bench/classifier.bench-data.ts): uncached
 * (the `classify()` function: lexes every statement) and cached (a `StatementClassifier`, as a
 * Cluster holds, after each statement was seen once). Rounds of each, interleaved.
 */
import { performance } from 'node:perf_hooks'
import { classify, StatementClassifier } from '../src/router/classify.js'
import { classifierBenchStatements } from './classifier.bench-data.js'
import type { BenchContext } from './lib/context.js'
import { round, roundSpread, type Spread, spread } from './lib/stats.js'

export interface ClassifierResult {
  cachedNs: number
  uncachedNs: number
  cached: Spread
  uncached: Spread
  statements: number
  rounds: number
  roundMs: number
}

let sink = 0

/** Nanoseconds per statement of `fn` over the whole mix, looping for `ms`. */
function timeRound(fn: (sql: string) => { kind: string }, ms: number): number {
  const statements = classifierBenchStatements
  let n = 0
  const t0 = performance.now()
  const until = t0 + ms
  let now = t0
  while (now < until) {
    for (const sql of statements) sink += fn(sql).kind.length
    n += statements.length
    now = performance.now()
  }
  return ((now - t0) * 1e6) / n
}

export function runClassifier(ctx: BenchContext): ClassifierResult {
  const cachedClassifier = new StatementClassifier()
  const cachedFn = (sql: string) => cachedClassifier.classify(sql)
  const uncachedFn = (sql: string) => classify(sql)
  const roundMs = ctx.quick ? 100 : 300
  const rounds = ctx.quick ? 3 : 9
  // Warm-up: JIT (the lexer's first rounds run far slower), and the cache filled with the mix.
  for (let i = 0; i < (ctx.quick ? 3 : 6); i++) {
    timeRound(uncachedFn, roundMs)
    timeRound(cachedFn, roundMs)
  }
  const cached: number[] = []
  const uncached: number[] = []
  for (let r = 0; r < rounds; r++) {
    if (r % 2 === 0) {
      uncached.push(timeRound(uncachedFn, roundMs))
      cached.push(timeRound(cachedFn, roundMs))
    } else {
      cached.push(timeRound(cachedFn, roundMs))
      uncached.push(timeRound(uncachedFn, roundMs))
    }
  }
  if (sink === -1) console.log(sink)
  const c = spread(cached)
  const u = spread(uncached)
  ctx.log(`  classifier: cached ${c.median.toFixed(0)} ns, uncached ${u.median.toFixed(0)} ns per statement`)
  return {
    cachedNs: round(c.median, 1),
    uncachedNs: round(u.median, 1),
    cached: roundSpread(c, 1),
    uncached: roundSpread(u, 1),
    statements: classifierBenchStatements.length,
    rounds,
    roundMs,
  }
}
