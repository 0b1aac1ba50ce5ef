import type { ReadCandidate, ReadStrategy, ReadStrategyFunction } from '../config.js'

/**
 * Builds the function that picks one replica among the eligible ones. Each call of
 * `createStrategy` has its own state (the round-robin counter), so two clusters never
 * share a rotation.
 *
 * ```ts
 * const pick = createStrategy('least-lag')
 * pick([{ name: 'a', lagBytes: 10, ... }, { name: 'b', lagBytes: 0, ... }]) // b
 * ```
 */
export function createStrategy(
  strategy: ReadStrategy,
  random: () => number = Math.random,
): ReadStrategyFunction {
  if (typeof strategy === 'function') return strategy
  switch (strategy) {
    case 'round-robin':
      return roundRobin()
    case 'random':
      return (candidates) => candidates[Math.floor(random() * candidates.length)]
    case 'least-lag':
      return leastBy(
        (c) => c.lagBytes ?? Number.POSITIVE_INFINITY,
        (c) => c.lagMs ?? Number.POSITIVE_INFINITY,
        random,
      )
    case 'least-busy':
      return leastBy(
        (c) => c.inFlight,
        (c) => c.lagBytes ?? Number.POSITIVE_INFINITY,
        random,
      )
    case 'weighted':
      return weighted(random)
  }
}

function roundRobin(): ReadStrategyFunction {
  let next = 0
  return (candidates) => {
    // The counter wraps before it loses integer precision.
    next = (next + 1) % 1_000_000_007
    return candidates[next % candidates.length]
  }
}

/** Lowest `primary` key, then lowest `secondary`; ties broken at random so load spreads. */
function leastBy(
  primary: (c: ReadCandidate) => number,
  secondary: (c: ReadCandidate) => number,
  random: () => number,
): ReadStrategyFunction {
  return (candidates) => {
    let best: ReadCandidate | undefined
    let ties = 0
    for (const c of candidates) {
      if (best === undefined) {
        best = c
        ties = 1
        continue
      }
      const d = primary(c) - primary(best) || secondary(c) - secondary(best)
      if (d < 0) {
        best = c
        ties = 1
      } else if (d === 0 || Number.isNaN(d)) {
        // Reservoir sampling over the tied candidates: each wins with equal chance.
        ties++
        if (random() * ties < 1) best = c
      }
    }
    return best
  }
}

function weighted(random: () => number): ReadStrategyFunction {
  return (candidates) => {
    let total = 0
    for (const c of candidates) total += c.weight
    if (total <= 0) return candidates[Math.floor(random() * candidates.length)]
    let r = random() * total
    for (const c of candidates) {
      r -= c.weight
      if (r < 0) return c
    }
    return candidates[candidates.length - 1]
  }
}
