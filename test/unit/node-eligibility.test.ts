import { afterEach, describe, expect, it } from 'vitest'
import { normalizeAddedNode } from '../../src/config.js'
import { ClusterNode } from '../../src/pools/node.js'

// The rule "who may take reads" on a node's own state: no server, no connection (the pool is
// created but never used).
const nodes: ClusterNode[] = []
function replica(): ClusterNode {
  const node = new ClusterNode(normalizeAddedNode('postgres://u:p@127.0.0.1:5999/app', {}), () => {})
  nodes.push(node)
  return node
}

/** A replica as the monitor leaves it after a good measuring probe. */
function measured(): ClusterNode {
  const node = replica()
  Object.assign(node, {
    state: 'up',
    role: 'replica',
    measured: true,
    timelineState: 'current',
    lagBytes: 0,
    lagMs: 0,
  })
  return node
}

afterEach(async () => {
  await Promise.all(nodes.map((n) => n.end()))
  nodes.length = 0
})

describe('ClusterNode#noReads', () => {
  it('a new node takes no reads: down, then unmeasured once up', () => {
    const node = replica()
    expect(node.noReads(0)).toBe('down')
    node.state = 'up'
    node.role = 'replica'
    expect(node.noReads(0)).toBe('unmeasured')
    expect(node.isEligibleReplica(0)).toBe(false)
  })

  it('a measured replica on the current timeline takes reads', () => {
    expect(measured().noReads(0)).toBeNull()
    expect(measured().isEligibleReplica(0)).toBe(true)
  })

  it('each reason alone bans it, in the documented order', () => {
    const cases: [Partial<ClusterNode>, string][] = [
      [{ state: 'down' }, 'down'],
      [{ foreign: true }, 'foreign'],
      [{ duplicateOf: 'other' }, 'duplicate'],
      [{ role: 'unknown' }, 'not-replica'],
      [{ fenced: true }, 'fenced'],
      [{ measured: false }, 'unmeasured'],
      [{ diverged: true }, 'diverged'],
      [{ timelineState: 'unknown' }, 'timeline'],
      [{ timelineState: 'older' }, 'timeline'],
      [{ lagging: true }, 'lagging'],
      [{ suspectUntil: 10 }, 'suspect'],
    ]
    for (const [change, reason] of cases) {
      const node = Object.assign(measured(), change)
      expect([change, node.noReads(5)]).toEqual([change, reason])
    }
    // The first reason wins: a foreign node that is also unmeasured says foreign.
    expect(Object.assign(measured(), { foreign: true, measured: false }).noReads(0)).toBe('foreign')
  })

  it('unmeasure() (down, new primary, timeline move) bans it until the next measuring probe', () => {
    const node = measured()
    node.unmeasure()
    expect(node.noReads(0)).toBe('unmeasured')
    expect(node.timelineState).toBe('unknown')
  })

  it('the snapshot carries the reason and the new fields', () => {
    const node = Object.assign(measured(), { diverged: true, lagBytes: -424_520, systemIdentifier: '77' })
    expect(node.snapshot()).toMatchObject({
      noReads: 'diverged',
      diverged: true,
      lagBytes: -424_520,
      systemIdentifier: '77',
      foreign: false,
      duplicateOf: null,
      measured: true,
    })
  })
})
