import { describe, expect, it } from 'vitest'
import { applyProbe, type HealthCounters, nextProbeDelay } from '../../src/health/node-health.js'

const T = { failuresBeforeDown: 2, successesBeforeUp: 3, intervalMs: 200, maxBackoffMs: 2_000 }

function fresh(state: HealthCounters['state'] = 'unknown'): HealthCounters {
  return { state, failures: 0, successes: 0 }
}

/** Applies a sequence of probe results ('+' good, '-' failed) and collects the transitions. */
function run(h: HealthCounters, probes: string): (string | null)[] {
  return [...probes].map((p) => applyProbe(h, p === '+', T))
}

describe('applyProbe (hysteresis)', () => {
  it('a node never seen takes the first answer as it is', () => {
    const up = fresh()
    expect(applyProbe(up, true, T)).toBe('up')
    expect(up.state).toBe('up')
    const down = fresh()
    expect(applyProbe(down, false, T)).toBe('down')
    expect(down.state).toBe('down')
  })

  it('up goes down only after failuresBeforeDown failures in a row', () => {
    const h = fresh('up')
    expect(run(h, '-')).toEqual([null])
    expect(h.state).toBe('up')
    expect(run(h, '-')).toEqual(['down'])
    expect(h.state).toBe('down')
    // Further failures do not repeat the transition.
    expect(run(h, '--')).toEqual([null, null])
  })

  it('a success in between resets the failure count', () => {
    const h = fresh('up')
    expect(run(h, '-+-+-')).toEqual([null, null, null, null, null])
    expect(h.state).toBe('up')
  })

  it('down comes back up only after successesBeforeUp good probes in a row', () => {
    const h = fresh('down')
    expect(run(h, '++')).toEqual([null, null])
    expect(h.state).toBe('down')
    expect(run(h, '+')).toEqual(['up'])
    expect(h.state).toBe('up')
    // A failure in the middle restarts the count.
    const g = fresh('down')
    expect(run(g, '++-++')).toEqual([null, null, null, null, null])
    expect(run(g, '+')).toEqual(['up'])
  })

  it('an up node staying up and a down node staying down report no transition', () => {
    expect(run(fresh('up'), '++++')).toEqual([null, null, null, null])
    expect(run(fresh('down'), '----')).toEqual([null, null, null, null])
  })
})

describe('nextProbeDelay (backoff of down nodes)', () => {
  it('is the interval while the node is up or unknown', () => {
    expect(nextProbeDelay(fresh('up'), T)).toBe(200)
    expect(nextProbeDelay(fresh('unknown'), T)).toBe(200)
    const failing = fresh('up')
    applyProbe(failing, false, T)
    expect(nextProbeDelay(failing, T)).toBe(200)
  })

  it('doubles per failure beyond the threshold and is capped at maxBackoffMs', () => {
    const h = fresh('up')
    const delays: number[] = []
    for (let i = 0; i < 10; i++) {
      applyProbe(h, false, T)
      delays.push(nextProbeDelay(h, T))
    }
    // failures 1 (still up), 2 (down: 0 extra), 3, 4, 5, 6 (1600), 7 (3200 -> capped)...
    expect(delays).toEqual([200, 200, 400, 800, 1600, 2000, 2000, 2000, 2000, 2000])
  })

  it('never overflows for a node down for a very long time', () => {
    const h: HealthCounters = { state: 'down', failures: 1_000_000, successes: 0 }
    expect(nextProbeDelay(h, T)).toBe(2_000)
  })

  it('goes back to the interval once the node is up again', () => {
    const h: HealthCounters = { state: 'down', failures: 10, successes: 0 }
    run(h, '+++')
    expect(h.state).toBe('up')
    expect(nextProbeDelay(h, T)).toBe(200)
  })
})
