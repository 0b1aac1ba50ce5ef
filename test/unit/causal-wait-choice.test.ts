import { afterEach, describe, expect, it } from 'vitest'
import { normalizeAddedNode } from '../../src/config.js'
import { ClusterNode } from '../../src/pools/node.js'
import { Topology } from '../../src/pools/topology.js'
import { ReadRouter } from '../../src/router/route.js'
import { createStrategy } from '../../src/router/strategies.js'

// Which replica a causal read waits on (ReadRouter#freshest), on nodes' own state: no server.
const nodes: ClusterNode[] = []
function replica(port: number, state: Partial<ClusterNode>): ClusterNode {
  const node = new ClusterNode(normalizeAddedNode(`postgres://u:p@127.0.0.1:${port}/app`, {}), () => {})
  Object.assign(node, {
    state: 'up',
    role: 'replica',
    measured: true,
    timelineState: 'current',
    lagBytes: 0,
    lagMs: 0,
    ...state,
  })
  nodes.push(node)
  return node
}

function router(...replicas: ClusterNode[]): ReadRouter {
  const topology = new Topology()
  for (const r of replicas) topology.add(r)
  return new ReadRouter(topology, createStrategy('round-robin'))
}

afterEach(async () => {
  await Promise.all(nodes.map((n) => n.end()))
  nodes.length = 0
})

describe('ReadRouter#freshest: the replica a causal read waits on', () => {
  it('spreads over replicas within the wait of the primary, whatever their cached LSNs', () => {
    // b's cached LSN is higher only because the last wait refreshed it.
    const a = replica(6001, { lsn: 100n, lagMs: 3 })
    const b = replica(6002, { lsn: 900n, lagMs: 0 })
    const r = router(a, b)
    const picks = Array.from({ length: 100 }, () => r.freshest(null, 100)?.name)
    expect(picks.filter((n) => n === a.name).length).toBe(50)
    expect(picks.filter((n) => n === b.name).length).toBe(50)
  })

  it('leaves out a paused replica and one lagging more than the wait; else the highest LSN', () => {
    const paused = replica(6003, { lsn: 500n, lagMs: 0, replayPaused: true })
    const behind = replica(6004, { lsn: 400n, lagMs: 5_000 })
    const fresh = replica(6005, { lsn: 300n, lagMs: 10 })
    expect(router(paused, behind, fresh).freshest(null, 100)).toBe(fresh)
    // None within the wait: the highest known replay LSN (the old rule).
    expect(router(paused, behind).freshest(null, 100)).toBe(paused)
    // No wait bound given: the highest LSN.
    expect(router(paused, behind, fresh).freshest()).toBe(paused)
  })
})

describe('ReadRouter#pick: the candidates a strategy sees', () => {
  it('gets exactly the eligible replicas as their number changes, the excluded one left out', () => {
    const a = replica(6011, {})
    const b = replica(6012, {})
    const c = replica(6013, {})
    const topology = new Topology()
    for (const r of [a, b, c]) topology.add(r)
    const seen: string[][] = []
    const r = new ReadRouter(topology, (candidates) => {
      seen.push(candidates.map((x) => x.name))
      return candidates[candidates.length - 1]
    })
    expect(r.pick()).toBe(c)
    expect(r.pick(c)).toBe(b)
    b.state = 'down'
    expect(r.pick(c)).toBe(a) // one candidate: the strategy is not asked
    expect(r.pick()).toBe(c)
    b.state = 'up'
    expect(r.pick(a)).toBe(c)
    expect(r.pick()).toBe(c)
    a.state = 'down'
    b.state = 'down'
    c.state = 'down'
    expect(r.pick()).toBeNull()
    expect(seen).toEqual([
      [a.name, b.name, c.name],
      [a.name, b.name],
      [a.name, c.name],
      [b.name, c.name],
      [a.name, b.name, c.name],
    ])
  })

  it('falls back to the first candidate when a strategy returns a stranger', () => {
    const a = replica(6014, {})
    const b = replica(6015, {})
    const topology = new Topology()
    for (const r of [a, b]) topology.add(r)
    const r = new ReadRouter(topology, () => undefined)
    expect(r.pick()).toBe(a)
  })
})
