import { describe, expect, it } from 'vitest'
import { choosePrimary } from '../../src/health/discovery.js'

describe('choosePrimary', () => {
  it('exactly one writable node wins', () => {
    expect(
      choosePrimary([
        { name: 'a', writable: false, timeline: 1 },
        { name: 'b', writable: true, timeline: 1 },
        { name: 'c', writable: false, timeline: null },
      ]),
    ).toEqual({ primary: 'b', splitBrain: false, stale: [], foreign: [], duplicates: [] })
  })

  it('no writable node: no primary', () => {
    expect(
      choosePrimary([
        { name: 'a', writable: false, timeline: 2 },
        { name: 'b', writable: false, timeline: null },
      ]),
    ).toEqual({ primary: null, splitBrain: false, stale: [], foreign: [], duplicates: [] })
    expect(choosePrimary([])).toEqual({
      primary: null,
      splitBrain: false,
      stale: [],
      foreign: [],
      duplicates: [],
    })
  })

  it('two writable on different timelines: the higher wins, the other is stale', () => {
    expect(
      choosePrimary([
        { name: 'old', writable: true, timeline: 1 },
        { name: 'new', writable: true, timeline: 2 },
        { name: 'r', writable: false, timeline: 2 },
      ]),
    ).toEqual({ primary: 'new', splitBrain: true, stale: ['old'], foreign: [], duplicates: [] })
  })

  it('three writable: the highest wins, both others are stale', () => {
    const d = choosePrimary([
      { name: 'a', writable: true, timeline: 2 },
      { name: 'b', writable: true, timeline: 3 },
      { name: 'c', writable: true, timeline: 1 },
    ])
    expect(d.primary).toBe('b')
    expect(d.splitBrain).toBe(true)
    expect([...d.stale].sort()).toEqual(['a', 'c'])
  })

  it('a tie on the highest timeline has no winner', () => {
    expect(
      choosePrimary([
        { name: 'a', writable: true, timeline: 2 },
        { name: 'b', writable: true, timeline: 2 },
      ]),
    ).toEqual({ primary: null, splitBrain: true, stale: [], foreign: [], duplicates: [] })
    // Even when a lower third one exists.
    expect(
      choosePrimary([
        { name: 'a', writable: true, timeline: 2 },
        { name: 'b', writable: true, timeline: 2 },
        { name: 'c', writable: true, timeline: 1 },
      ]).primary,
    ).toBeNull()
  })

  it('writable nodes with unknown timelines cannot be ordered: no winner', () => {
    expect(
      choosePrimary([
        { name: 'a', writable: true, timeline: null },
        { name: 'b', writable: true, timeline: null },
      ]),
    ).toEqual({ primary: null, splitBrain: true, stale: [], foreign: [], duplicates: [] })
  })

  it('the order of the list does not change the decision', () => {
    const a = { name: 'a', writable: true, timeline: 1 }
    const b = { name: 'b', writable: true, timeline: 4 }
    expect(choosePrimary([a, b])).toEqual(choosePrimary([b, a]))
  })
})

describe('choosePrimary: cluster identity', () => {
  const id = (
    name: string,
    writable: boolean,
    systemIdentifier: string,
    startedAt: string,
    timeline = 1,
  ) => ({
    name,
    writable,
    timeline,
    systemIdentifier,
    startedAt,
  })

  it('a primary of another cluster listed as a replica is foreign, not a split brain', () => {
    const d = choosePrimary(
      [id('p', true, 'A', '100'), id('r', false, 'A', '200'), id('stranger', true, 'B', '300')],
      'A',
    )
    expect(d).toEqual({ primary: 'p', splitBrain: false, stale: [], foreign: ['stranger'], duplicates: [] })
  })

  it('a stranger on a higher timeline does not win either', () => {
    const d = choosePrimary([id('p', true, 'A', '100', 1), id('stranger', true, 'B', '300', 5)], 'A')
    expect(d.primary).toBe('p')
    expect(d.foreign).toEqual(['stranger'])
  })

  it('the same server under two addresses counts once: the first address, no split brain', () => {
    const d = choosePrimary(
      [
        id('localhost:5432', true, 'A', '100'),
        id('127.0.0.1:5432', true, 'A', '100'),
        id('r', false, 'A', '200'),
      ],
      'A',
    )
    expect(d).toEqual({
      primary: 'localhost:5432',
      splitBrain: false,
      stale: [],
      foreign: [],
      duplicates: [{ name: '127.0.0.1:5432', of: 'localhost:5432' }],
    })
  })

  it('two members of one cluster both writable (an unfenced old primary) stay a split brain', () => {
    // Same identifier, different start times: two servers.
    const d = choosePrimary([id('old', true, 'A', '100', 1), id('new', true, 'A', '200', 2)], 'A')
    expect(d).toMatchObject({ primary: 'new', splitBrain: true, stale: ['old'], duplicates: [] })
  })
})
