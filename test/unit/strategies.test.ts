import { describe, expect, it } from 'vitest'
import type { ReadCandidate } from '../../src/config.js'
import { createStrategy } from '../../src/router/strategies.js'

/** mulberry32: a small seeded PRNG, so proportions are the same on every run. */
function seeded(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function node(name: string, over: Partial<ReadCandidate> = {}): ReadCandidate {
  return { name, host: '127.0.0.1', port: 5432, lagBytes: 0, lagMs: 0, inFlight: 0, weight: 1, ...over }
}

function counts(
  pick: (c: readonly ReadCandidate[]) => ReadCandidate | undefined,
  list: ReadCandidate[],
  n: number,
) {
  const out = new Map<string, number>(list.map((c) => [c.name, 0]))
  for (let i = 0; i < n; i++) {
    const chosen = pick(list)
    if (chosen === undefined) throw new Error('the strategy returned nothing')
    out.set(chosen.name, (out.get(chosen.name) ?? 0) + 1)
  }
  return out
}

describe('round-robin', () => {
  it('rotates through the candidates in order', () => {
    const pick = createStrategy('round-robin', seeded(1))
    const list = [node('a'), node('b'), node('c')]
    const names = Array.from({ length: 9 }, () => pick(list)!.name)
    // Each window of 3 consecutive picks holds every candidate once, and the cycle repeats.
    for (let i = 0; i + 3 <= names.length; i++) {
      expect(new Set(names.slice(i, i + 3)).size).toBe(3)
    }
    expect(names.slice(0, 3)).toEqual(names.slice(3, 6))
  })

  it('splits exactly evenly over a multiple of the candidate count', () => {
    const c = counts(createStrategy('round-robin'), [node('a'), node('b')], 1000)
    expect(c.get('a')).toBe(500)
    expect(c.get('b')).toBe(500)
  })

  it('keeps working when the candidate list shrinks and grows', () => {
    const pick = createStrategy('round-robin')
    const three = [node('a'), node('b'), node('c')]
    pick(three)
    expect(['a', 'b']).toContain(pick(three.slice(0, 2))!.name)
    expect(pick([node('x')])!.name).toBe('x')
    expect(three.map((n) => n.name)).toContain(pick(three)!.name)
  })

  it('two strategies do not share a rotation', () => {
    const list = [node('a'), node('b')]
    const p1 = createStrategy('round-robin')
    const p2 = createStrategy('round-robin')
    const first = p1(list)!.name
    p1(list)
    expect(p2(list)!.name).toBe(first)
  })
})

describe('random', () => {
  it('is roughly even over 10k picks (seeded)', () => {
    const c = counts(createStrategy('random', seeded(42)), [node('a'), node('b'), node('c')], 10_000)
    for (const v of c.values()) expect(Math.abs(v - 10_000 / 3)).toBeLessThan(300)
  })
})

describe('least-lag', () => {
  it('picks the lowest byte lag', () => {
    const pick = createStrategy('least-lag', seeded(3))
    const list = [node('a', { lagBytes: 500 }), node('b', { lagBytes: 10 }), node('c', { lagBytes: 90 })]
    for (let i = 0; i < 50; i++) expect(pick(list)!.name).toBe('b')
  })

  it('breaks byte ties on time lag, treats unknown lag as the worst', () => {
    const pick = createStrategy('least-lag', seeded(4))
    expect(
      pick([node('a', { lagBytes: 10, lagMs: 300 }), node('b', { lagBytes: 10, lagMs: 20 })])!.name,
    ).toBe('b')
    expect(
      pick([node('a', { lagBytes: null, lagMs: null }), node('b', { lagBytes: 1e9, lagMs: 1e6 })])!.name,
    ).toBe('b')
  })

  it('spreads reads over fully tied replicas', () => {
    const c = counts(createStrategy('least-lag', seeded(5)), [node('a'), node('b')], 10_000)
    expect(Math.abs(c.get('a')! - 5_000)).toBeLessThan(300)
  })
})

describe('least-busy', () => {
  it('picks the replica with the fewest queries in flight', () => {
    const pick = createStrategy('least-busy', seeded(6))
    const list = [node('a', { inFlight: 3 }), node('b', { inFlight: 0 }), node('c', { inFlight: 1 })]
    for (let i = 0; i < 50; i++) expect(pick(list)!.name).toBe('b')
  })

  it('breaks in-flight ties on byte lag', () => {
    const pick = createStrategy('least-busy', seeded(7))
    const list = [node('a', { inFlight: 1, lagBytes: 100 }), node('b', { inFlight: 1, lagBytes: 5 })]
    for (let i = 0; i < 20; i++) expect(pick(list)!.name).toBe('b')
  })

  it('spreads full ties evenly, three ways too (reservoir sampling)', () => {
    const c = counts(createStrategy('least-busy', seeded(8)), [node('a'), node('b'), node('c')], 9_000)
    for (const v of c.values()) expect(Math.abs(v - 3_000)).toBeLessThan(250)
    // A busier one never wins against idle ties.
    const d = counts(
      createStrategy('least-busy', seeded(9)),
      [node('a'), node('busy', { inFlight: 2 }), node('b')],
      2_000,
    )
    expect(d.get('busy')).toBe(0)
    expect(Math.abs(d.get('a')! - 1_000)).toBeLessThan(150)
  })
})

describe('weighted', () => {
  it('follows the weights over 10k picks', () => {
    const c = counts(
      createStrategy('weighted', seeded(10)),
      [node('a', { weight: 3 }), node('b', { weight: 1 })],
      10_000,
    )
    expect(Math.abs(c.get('a')! - 7_500)).toBeLessThan(250)
    const d = counts(
      createStrategy('weighted', seeded(11)),
      [node('a', { weight: 1 }), node('b', { weight: 2 }), node('c', { weight: 7 })],
      10_000,
    )
    expect(Math.abs(d.get('a')! - 1_000)).toBeLessThan(200)
    expect(Math.abs(d.get('b')! - 2_000)).toBeLessThan(250)
    expect(Math.abs(d.get('c')! - 7_000)).toBeLessThan(300)
  })

  it('a weight of 0 takes nothing; all zero falls back to an even pick', () => {
    const c = counts(createStrategy('weighted', seeded(12)), [node('a', { weight: 0 }), node('b')], 1_000)
    expect(c.get('a')).toBe(0)
    const z = counts(
      createStrategy('weighted', seeded(13)),
      [node('a', { weight: 0 }), node('b', { weight: 0 })],
      4_000,
    )
    expect(Math.abs(z.get('a')! - 2_000)).toBeLessThan(200)
  })
})

describe('a user function', () => {
  it('is used as is', () => {
    const seen: string[][] = []
    const fn = (candidates: readonly ReadCandidate[]) => {
      seen.push(candidates.map((c) => c.name))
      return candidates[candidates.length - 1]
    }
    const pick = createStrategy(fn)
    expect(pick).toBe(fn)
    expect(pick([node('a'), node('b')])!.name).toBe('b')
    expect(seen).toEqual([['a', 'b']])
  })
})
