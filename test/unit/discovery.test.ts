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
    ).toEqual({ primary: 'b', splitBrain: false, stale: [] })
  })

  it('no writable node: no primary', () => {
    expect(
      choosePrimary([
        { name: 'a', writable: false, timeline: 2 },
        { name: 'b', writable: false, timeline: null },
      ]),
    ).toEqual({ primary: null, splitBrain: false, stale: [] })
    expect(choosePrimary([])).toEqual({ primary: null, splitBrain: false, stale: [] })
  })

  it('two writable on different timelines: the higher wins, the other is stale', () => {
    expect(
      choosePrimary([
        { name: 'old', writable: true, timeline: 1 },
        { name: 'new', writable: true, timeline: 2 },
        { name: 'r', writable: false, timeline: 2 },
      ]),
    ).toEqual({ primary: 'new', splitBrain: true, stale: ['old'] })
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
    ).toEqual({ primary: null, splitBrain: true, stale: [] })
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
    ).toEqual({ primary: null, splitBrain: true, stale: [] })
  })

  it('the order of the list does not change the decision', () => {
    const a = { name: 'a', writable: true, timeline: 1 }
    const b = { name: 'b', writable: true, timeline: 4 }
    expect(choosePrimary([a, b])).toEqual(choosePrimary([b, a]))
  })
})
