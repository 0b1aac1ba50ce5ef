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
  readonly #scratch: ClusterNode[] = []
  /** `#bySize[n]`: the array of n candidates handed to the strategy, reused. */
  readonly #bySize: ClusterNode[][] = []

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
    // Every read passes here: no allocation and no array truncation (a runtime call per read).
    // Candidates are written by index into a scratch array; with a choice to make, they are
    // copied into the reused array of exactly that many, which the strategy gets.
    const scratch = this.#scratch
    let count = 0
    const now = Date.now()
    for (const node of this.#topology.nodes) {
      if (node === exclude || node.weight <= 0 || !node.isEligibleReplica(now)) continue
      if (token !== null && !hasReached(node, token)) continue
      scratch[count++] = node
    }
    if (count <= 1) return count === 0 ? null : scratch[0]!
    let list = this.#bySize[count]
    if (list === undefined) {
      list = scratch.slice(0, count)
      this.#bySize[count] = list
    } else {
      for (let i = 0; i < count; i++) list[i] = scratch[i]!
    }
    const chosen = this.#strategy(list)
    // A user strategy may return something else; fall back to the first candidate.
    return list.includes(chosen as ClusterNode) ? (chosen as ClusterNode) : list[0]!
  }

  /**
   * The replica to wait on for a causal read. Every eligible replica the monitor last measured
   * within `freshWithinMs` of the primary and not paused is as good as any other: the strategy
   * chooses among them, so causal waits spread like reads. Comparing cached replay LSNs instead
   * fed back on itself (a wait refreshes only the replica it waited on, which then looks freshest:
   * measured 2.2x more reads on one of two equal replicas). With none of those, the eligible
   * replica with the highest known replay LSN (ties through the strategy).
   */
  freshest(exclude: ClusterNode | null = null, freshWithinMs = 0): ClusterNode | null {
    const eligible = this.eligible(exclude)
    const fresh = eligible.filter(
      (n) => !n.replayPaused && n.lagMs !== null && n.lagMs <= freshWithinMs && freshWithinMs > 0,
    )
    if (fresh.length > 0) return this.#choose(fresh)
    const ties: ClusterNode[] = []
    let best: bigint | null = null
    for (const node of eligible) {
      const lsn = node.lsn ?? -1n
      if (best === null || lsn > best) {
        best = lsn
        ties.length = 0
        ties.push(node)
      } else if (lsn === best) ties.push(node)
    }
    return ties.length === 0 ? null : this.#choose(ties)
  }

  #choose(candidates: ClusterNode[]): ClusterNode {
    if (candidates.length === 1) return candidates[0]!
    const chosen = this.#strategy(candidates)
    // A user strategy may return something else; fall back to the first candidate.
    return candidates.includes(chosen as ClusterNode) ? (chosen as ClusterNode) : candidates[0]!
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
