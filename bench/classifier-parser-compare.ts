/**
 * How much one classification costs: the hand-written lexer (uncached and cached) against libpg-query,
 * PostgreSQL's real parser compiled to WASM (a dev dependency, used here for comparison only).
 *
 * Run: `npx tsx bench/classifier-parser-compare.ts` (figures go into the doc comment of
 * src/router/classify.ts). The libpg-query figure is `parseSync` alone, a lower bound for any
 * parser-based classifier, which would still have to walk the tree.
 */

import { loadModule, parseSync } from 'libpg-query'
import { classify, StatementClassifier } from '../src/router/classify.js'
import { classifierBenchStatements } from './classifier.bench-data.js'

const statements = classifierBenchStatements

/**
 * Nanoseconds per statement for `fn` over the whole mix: the best of 20 short rounds after a warm-up
 * (the minimum is the figure least disturbed by other processes on a shared machine).
 */
function measure(fn: (sql: string) => unknown, targetMs = 1000): number {
  const once = (): bigint => {
    const t0 = process.hrtime.bigint()
    for (const sql of statements) fn(sql)
    return process.hrtime.bigint() - t0
  }
  // Warm-up so the JIT has compiled the hot paths.
  const warmUntil = Date.now() + targetMs / 2
  while (Date.now() < warmUntil) once()
  let best = Number.POSITIVE_INFINITY
  for (let round = 0; round < 20; round++) {
    let rounds = 0
    let total = 0n
    const until = Date.now() + targetMs / 20
    while (Date.now() < until) {
      total += once()
      rounds++
    }
    best = Math.min(best, Number(total) / (rounds * statements.length))
  }
  return best
}

async function main(): Promise<void> {
  const uncached = measure((sql) => classify(sql))
  const classifier = new StatementClassifier()
  const cached = measure((sql) => classifier.classify(sql))

  const t0 = process.hrtime.bigint()
  await loadModule()
  const loadMs = Number(process.hrtime.bigint() - t0) / 1e6
  const parser = measure((sql) => parseSync(sql))

  const rows: [string, string][] = [
    ['statements in the mix', String(statements.length)],
    ['lexer, uncached classify()', `${uncached.toFixed(0)} ns/statement`],
    ['lexer, cached StatementClassifier', `${cached.toFixed(0)} ns/statement`],
    ['libpg-query parseSync only', `${parser.toFixed(0)} ns/statement`],
    ['libpg-query loadModule() (once)', `${loadMs.toFixed(1)} ms`],
    ['parser / lexer (uncached)', `${(parser / uncached).toFixed(1)}x`],
  ]
  for (const [name, value] of rows) console.log(`${name.padEnd(36)} ${value}`)
}

await main()
