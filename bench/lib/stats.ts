/** Small statistics helpers for the benchmarks: quantiles over plain number arrays. */

/** The q-quantile (0..1) of `sorted` (ascending), linear between the two nearest ranks. */
export function quantileSorted(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN
  const pos = (sorted.length - 1) * Math.min(1, Math.max(0, q))
  const lo = Math.floor(pos)
  const hi = Math.ceil(pos)
  const a = sorted[lo]!
  const b = sorted[hi]!
  return a + (b - a) * (pos - lo)
}

export function sortedCopy(values: readonly number[]): number[] {
  return Array.from(Float64Array.from(values).sort())
}

export function quantile(values: readonly number[], q: number): number {
  return quantileSorted(sortedCopy(values), q)
}

export function median(values: readonly number[]): number {
  return quantile(values, 0.5)
}

/** Median, spread (min/max and interquartile range) of a set of repeated measurements. */
export interface Spread {
  median: number
  min: number
  max: number
  q1: number
  q3: number
  n: number
}

export function spread(values: readonly number[]): Spread {
  const s = sortedCopy(values)
  return {
    median: quantileSorted(s, 0.5),
    min: s[0] ?? Number.NaN,
    max: s[s.length - 1] ?? Number.NaN,
    q1: quantileSorted(s, 0.25),
    q3: quantileSorted(s, 0.75),
    n: s.length,
  }
}

/** Rounds for JSON output: 3 significant decimals is plenty for timings and ratios. */
export function round(value: number, digits = 3): number {
  if (!Number.isFinite(value)) return value
  const f = 10 ** digits
  return Math.round(value * f) / f
}

/** Rounds every number of a {@link Spread}. */
export function roundSpread(s: Spread, digits = 3): Spread {
  return {
    median: round(s.median, digits),
    min: round(s.min, digits),
    max: round(s.max, digits),
    q1: round(s.q1, digits),
    q3: round(s.q3, digits),
    n: s.n,
  }
}
