import type { ReadStrategyFunction } from '../config.js'
import type { ClusterNode } from '../pools/node.js'
import type { Topology } from '../pools/topology.js'
import type { WriteToken } from './consistency.js'

/**
 * Picks the node for a read: only replicas that `ClusterNode#isEligibleReplica` accepts (of the
 * primary's cluster, up, measured since they were last seen down, provably on the primary's
 * timeline and not ahead of it, within the lag bound, not suspect, fenced or weighted 0) and,
 * for a causal read, whose replay LSN has reached the caller's token; then the strategy
 * chooses among them.
 */
export class ReadRouter {
  readonly #topology: Topology
  readonly #strategy: ReadStrategyFunction
  readonly #candidates: ClusterNode[] = []

  constructor(topology: Topology, strategy: ReadStrategyFunction) {
    this.#topology = topology
    this.#strategy = strategy
  }

  /** Eligible replicas now, minus `exclude`. */
  eligible(exclude: ClusterNode | null = null): ClusterNode[] {
    const now = Date.now()
    const out: ClusterNode[] = []
    for (const node of this.#topology.nodes) {
      if (node !== exclude && node.weight > 0 && node.isEligibleReplica(now)) out.push(node)
    }
    return out
  }

  /** A replica for a read, or null when none is eligible. */
  pick(exclude: ClusterNode | null = null, token: WriteToken | null = null): ClusterNode | null {
    // Every read passes here: no allocation, and the candidate list is only built when there is
    // a choice to make (truncating an array costs a runtime call per read).
    const list = this.#candidates
    let first: ClusterNode | null = null
    let count = 0
    const now = Date.now()
    for (const node of this.#topology.nodes) {
      if (node === exclude || node.weight <= 0 || !node.isEligibleReplica(now)) continue
      if (token !== null && !hasReached(node, token)) continue
      if (count === 0) first = node
      else {
        if (count === 1) {
          list.length = 0
          list.push(first!)
        }
        list.push(node)
      }
      count++
    }
    if (count <= 1) return first
    const chosen = this.#strategy(list)
    // A user strategy may return something else; fall back to the first candidate.
    return list.includes(chosen as ClusterNode) ? (chosen as ClusterNode) : list[0]!
  }

  /**
   * The eligible replica with the highest known replay LSN: the best one to wait on. Equally
   * fresh replicas (the common case: all caught up) go through the strategy, so causal waits
   * rotate like reads instead of piling onto the first replica listed.
   */
  freshest(exclude: ClusterNode | null = null): ClusterNode | null {
    const ties: ClusterNode[] = []
    let best: bigint | null = null
    for (const node of this.eligible(exclude)) {
      const lsn = node.lsn ?? -1n
      if (best === null || lsn > best) {
        best = lsn
        ties.length = 0
        ties.push(node)
      } else if (lsn === best) ties.push(node)
    }
    if (ties.length <= 1) return ties[0] ?? null
    const chosen = this.#strategy(ties)
    return ties.includes(chosen as ClusterNode) ? (chosen as ClusterNode) : ties[0]!
  }
}

/**
 * True when the monitor's cached position of `node` shows the token's write. An unknown
 * timeline is never enough: a replica left on an older timeline may be past the LSN without
 * the write (or with another one at that position).
 */
export function hasReached(node: ClusterNode, token: WriteToken): boolean {
  if (node.lsn === null || node.lsn < token.lsn) return false
  return node.timeline !== null && node.timelineState === 'current' && node.timeline >= token.timeline
}
