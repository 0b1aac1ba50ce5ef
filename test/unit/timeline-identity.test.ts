import { describe, expect, it } from 'vitest'
import { clusterIdentifier, sameServer } from '../../src/health/identity.js'
import { judgeTimeline, replicaTimeline } from '../../src/health/timeline.js'

describe('replicaTimeline', () => {
  it('prefers the streaming receiver (exact), else the control file (a lower bound)', () => {
    expect(replicaTimeline(2, 1)).toEqual({ timeline: 2, exact: true })
    expect(replicaTimeline(null, 1)).toEqual({ timeline: 1, exact: false })
    expect(replicaTimeline(null, null)).toEqual({ timeline: null, exact: false })
    // A control file without a minimum recovery point says 0: nothing known.
    expect(replicaTimeline(null, 0)).toEqual({ timeline: null, exact: false })
  })
})

describe('judgeTimeline', () => {
  it('unknown is never current', () => {
    expect(judgeTimeline({ timeline: null, exact: false }, 2, 2)).toBe('unknown')
    expect(judgeTimeline({ timeline: 2, exact: true }, null, 2)).toBe('unknown')
  })

  it('the exact timeline of the primary is current', () => {
    expect(judgeTimeline({ timeline: 2, exact: true }, 2, 2)).toBe('current')
    // Also when the cluster moved down to an older timeline (a re-elected leader).
    expect(judgeTimeline({ timeline: 1, exact: true }, 1, 2)).toBe('current')
  })

  it('a lower bound equal to the primary is current only if no newer timeline was seen', () => {
    expect(judgeTimeline({ timeline: 2, exact: false }, 2, 2)).toBe('current')
    // The control file lags: this standby may have followed timeline 2 since.
    expect(judgeTimeline({ timeline: 1, exact: false }, 1, 2)).toBe('unknown')
  })

  it('older: not readable; newer: diverged (WAL the primary never had)', () => {
    expect(judgeTimeline({ timeline: 1, exact: true }, 2, 2)).toBe('older')
    expect(judgeTimeline({ timeline: 1, exact: false }, 2, 2)).toBe('unknown')
    expect(judgeTimeline({ timeline: 3, exact: true }, 2, 3)).toBe('newer')
    expect(judgeTimeline({ timeline: 3, exact: false }, 2, 3)).toBe('newer')
  })
})

describe('sameServer', () => {
  const a = { systemIdentifier: '7716', startedAt: '1765000000000001', timeline: 1 }
  it('same cluster, same start, same timeline: one server', () => {
    expect(sameServer(a, { ...a })).toBe(true)
  })
  it('two members of one cluster differ by start time; unknown parts never match', () => {
    expect(sameServer(a, { ...a, startedAt: '1765000000000002' })).toBe(false)
    expect(sameServer(a, { ...a, timeline: 2 })).toBe(false)
    expect(sameServer(a, { ...a, systemIdentifier: '9999' })).toBe(false)
    const unknown = { systemIdentifier: null, startedAt: null, timeline: 1 }
    expect(sameServer(unknown, unknown)).toBe(false)
  })
})

describe('clusterIdentifier', () => {
  it('the declared primary names the cluster', () => {
    expect(clusterIdentifier([{ systemIdentifier: 'B' }, { systemIdentifier: 'B' }], 'A')).toBe('A')
  })
  it('else the identifier most nodes share; a tie names none', () => {
    const nodes = [{ systemIdentifier: 'A' }, { systemIdentifier: 'B' }, { systemIdentifier: 'A' }]
    expect(clusterIdentifier(nodes, null)).toBe('A')
    expect(clusterIdentifier([{ systemIdentifier: 'A' }, { systemIdentifier: 'B' }], null)).toBeNull()
    expect(clusterIdentifier([{ systemIdentifier: null }], null)).toBeNull()
  })
})
