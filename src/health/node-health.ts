import type { NodeState } from '../pools/node.js'

export interface HealthThresholds {
  failuresBeforeDown: number
  successesBeforeUp: number
  intervalMs: number
  maxBackoffMs: number
}

export interface HealthCounters {
  state: NodeState
  failures: number
  successes: number
}

export type Transition = 'down' | 'up' | null

/**
 * One probe's effect on a node's state, with hysteresis: an `up` node goes `down` after
 * `failuresBeforeDown` failures in a row, a `down` node comes back after `successesBeforeUp`
 * good probes in a row. A node never seen yet takes the first answer as it is.
 */
export function applyProbe(h: HealthCounters, ok: boolean, t: HealthThresholds): Transition {
  if (ok) {
    h.failures = 0
    h.successes++
    if (h.state === 'unknown' || (h.state === 'down' && h.successes >= t.successesBeforeUp)) {
      h.state = 'up'
      return 'up'
    }
    return null
  }
  h.successes = 0
  h.failures++
  if (h.state === 'unknown' || (h.state === 'up' && h.failures >= t.failuresBeforeDown)) {
    h.state = 'down'
    return 'down'
  }
  return null
}

/** Delay before the next probe: the interval, doubled per failure beyond the threshold, capped. */
export function nextProbeDelay(h: HealthCounters, t: HealthThresholds): number {
  if (h.state !== 'down') return t.intervalMs
  const extra = Math.max(0, h.failures - t.failuresBeforeDown)
  return Math.min(t.maxBackoffMs, t.intervalMs * 2 ** Math.min(extra, 16))
}
