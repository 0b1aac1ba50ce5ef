import type { ClusterNode } from '../pools/node.js'
import type { Topology } from '../pools/topology.js'
import { clusterIdentifier, type ServerIdentity, sameServer } from './identity.js'
import type { HealthMonitor } from './monitor.js'

export interface PrimaryCandidate {
  name: string
  writable: boolean
  timeline: number | null
  /** `pg_control_system().system_identifier`; unknown when absent. */
  systemIdentifier?: string | null
  /** `pg_postmaster_start_time()` (microseconds, text); unknown when absent. */
  startedAt?: string | null
}

export interface PrimaryDecision {
  /** The node to write to, or null: none writable, or a tie nobody can break. */
  primary: string | null
  /** More than one node is writable. */
  splitBrain: boolean
  /** Writable nodes on an older timeline than the winner: fenced from reads and writes. */
  stale: string[]
  /** Nodes of another cluster (their identifier is not the expected one): never candidates. */
  foreign: string[]
  /** Writable nodes that are the same server as an earlier candidate, under another address. */
  duplicates: { name: string; of: string }[]
}

/**
 * Which node is the primary, from what every node said about itself. Nodes of another cluster
 * (a `system_identifier` other than `expectedIdentifier`) are no candidates, and a server reached
 * under two addresses counts once (the first address). Then exactly one writable node wins. Two
 * or more (an old primary restarted without fencing): the highest timeline wins and the others
 * are stale; a tie on the highest timeline has no winner, because a write to the wrong one of
 * two equals would be lost.
 *
 * ```ts
 * choosePrimary([{ name: 'a', writable: true, timeline: 1 }, { name: 'b', writable: true, timeline: 2 }])
 * // { primary: 'b', splitBrain: true, stale: ['a'], foreign: [], duplicates: [] }
 * ```
 */
export function choosePrimary(
  candidates: readonly PrimaryCandidate[],
  expectedIdentifier: string | null = null,
): PrimaryDecision {
  const foreign: string[] = []
  const duplicates: { name: string; of: string }[] = []
  const writable: PrimaryCandidate[] = []
  for (const c of candidates) {
    const id = c.systemIdentifier ?? null
    if (expectedIdentifier !== null && id !== null && id !== expectedIdentifier) {
      foreign.push(c.name)
      continue
    }
    if (!c.writable) continue
    const twin = writable.find((w) => sameServer(identityOf(w), identityOf(c)))
    if (twin !== undefined) duplicates.push({ name: c.name, of: twin.name })
    else writable.push(c)
  }
  const base = { foreign, duplicates }
  if (writable.length === 0) return { primary: null, splitBrain: false, stale: [], ...base }
  if (writable.length === 1) return { primary: writable[0]!.name, splitBrain: false, stale: [], ...base }
  const sorted = [...writable].sort((a, b) => (b.timeline ?? -1) - (a.timeline ?? -1))
  const [first, second] = sorted as [PrimaryCandidate, PrimaryCandidate]
  if (first.timeline === null || first.timeline === second.timeline) {
    return { primary: null, splitBrain: true, stale: [], ...base }
  }
  return { primary: first.name, splitBrain: true, stale: sorted.slice(1).map((c) => c.name), ...base }
}

function identityOf(c: PrimaryCandidate): ServerIdentity {
  return {
    systemIdentifier: c.systemIdentifier ?? null,
    startedAt: c.startedAt ?? null,
    timeline: c.timeline,
  }
}

export interface DiscoveryEvents {
  primaryLost(payload: { node: string; reason: string }): void
  failover(payload: { from: string | null; to: string; durationMs: number }): void
  splitBrain(payload: { nodes: string[]; timelines: (number | null)[]; primary: string | null }): void
  /** The primary changed: the old one's pool is to be drained. */
  primaryChanged(from: ClusterNode | null, to: ClusterNode): void
}

/**
 * Finds the primary: asks every node in parallel (bounded by the probe timeout) whether it is
 * in recovery and, if writable, its timeline. Runs once per trigger (concurrent triggers share a
 * run) and polls every `pollIntervalMs` while no primary is known.
 */
export class Discovery {
  readonly #topology: Topology
  readonly #monitor: HealthMonitor
  readonly #events: DiscoveryEvents
  readonly #pollIntervalMs: number
  #running: Promise<void> | null = null
  #pollTimer: NodeJS.Timeout | null = null
  #lostAt: number | null = null
  #lostName: string | null = null
  #lastSplitBrain = ''
  #ended = false
  /** An HA manager's leader (see TopologyFollower.leader): undefined = no authority in force. */
  #authority: () => string | null | undefined = () => undefined

  constructor(topology: Topology, monitor: HealthMonitor, events: DiscoveryEvents, pollIntervalMs: number) {
    this.#topology = topology
    this.#monitor = monitor
    this.#events = events
    this.#pollIntervalMs = pollIntervalMs
  }

  /** Makes `leader()` the rule for the primary: no other node is chosen or kept. */
  setAuthority(leader: () => string | null | undefined): void {
    this.#authority = leader
  }

  /** The authority no longer holds the primary as leader: no write goes to it from now on. */
  revoke(reason: string): void {
    const old = this.#topology.primary
    if (old === null || this.#ended) return
    this.#topology.setPrimary(null)
    old.role = 'unknown'
    old.fenced = true
    // primaryLost replaces its pool: callers queued there are routed again at once.
    this.#markLost(old.name, reason)
    this.#schedulePoll()
    void this.trigger(reason)
  }

  /** True while no primary is known and discovery is polling. */
  get searching(): boolean {
    return this.#lostAt !== null
  }

  /**
   * Looks for the primary now. Resolves when a run that started after this call has finished
   * (a run already under way may have missed what the caller saw).
   */
  trigger(reason: string): Promise<void> {
    if (this.#ended) return Promise.resolve()
    this.#lastReason = reason
    if (this.#running !== null) {
      // One more run after the current one; every trigger made meanwhile shares it. A caller
      // waits for at most these two runs (each bounded by the probe timeout): a loop that ran
      // while triggers kept coming (the poll timer, failing writes) could hold callers forever.
      this.#queued ??= this.#running
        .catch(() => undefined)
        .then(() => {
          this.#queued = null
          return this.trigger(this.#lastReason)
        })
      return this.#queued
    }
    this.#running = this.#runOnce(reason).finally(() => {
      this.#running = null
    })
    return this.#running
  }

  #lastReason = ''
  #queued: Promise<void> | null = null

  async #runOnce(reason: string): Promise<void> {
    const nodes = [...this.#topology.nodes]
    const outcomes = await this.#monitor.probeNodes(nodes)
    if (this.#ended) return
    const candidates: PrimaryCandidate[] = outcomes.map(({ node, result }) => ({
      name: node.name,
      writable: result !== null && !result.inRecovery,
      timeline: result?.timeline ?? null,
      systemIdentifier: result?.systemIdentifier ?? null,
      startedAt: result?.startedAt ?? null,
    }))
    const leader = this.#authority()
    if (leader !== undefined) {
      for (const c of candidates) {
        if (!c.writable || c.name === leader) continue
        // Writable but not the authority's leader: fenced, never chosen.
        c.writable = false
        const node = this.#topology.find(c.name)
        if (node !== undefined) {
          node.role = 'unknown'
          node.fenced = true
        }
      }
    }
    // The cluster's identity: established by a primary before, else the one most nodes share
    // (a `nodes: [...]` list with a stranger in it); on a tie nothing is foreign yet.
    const expected =
      this.#topology.systemIdentifier ??
      clusterIdentifier(
        candidates
          .filter((c) => c.systemIdentifier !== null)
          .map((c) => ({ systemIdentifier: c.systemIdentifier! })),
        null,
      )
    const decision = choosePrimary(candidates, expected)
    const old = this.#topology.primary

    if (decision.splitBrain) {
      const writable = candidates.filter((c) => c.writable)
      const key = `${writable.map((c) => `${c.name}@${c.timeline}`).join(',')}->${decision.primary}`
      if (key !== this.#lastSplitBrain) {
        this.#lastSplitBrain = key
        this.#events.splitBrain({
          nodes: writable.map((c) => c.name),
          timelines: writable.map((c) => c.timeline),
          primary: decision.primary,
        })
      }
    } else {
      this.#lastSplitBrain = ''
    }
    for (const name of decision.stale) {
      const node = this.#topology.find(name)
      if (node !== undefined) {
        node.role = 'unknown'
        node.fenced = true
      }
    }

    if (decision.primary === null) {
      if (old !== null) {
        this.#topology.setPrimary(null)
        old.role = 'unknown'
        this.#markLost(old.name, reason)
      } else if (this.#lostAt === null) {
        this.#markLost(null, reason)
      }
      this.#schedulePoll()
      return
    }

    const next = this.#topology.find(decision.primary)!
    this.#topology.establishIdentity(expected)
    this.#monitor.classifyIdentities()
    if (next !== old) {
      // Writes are blocked between here and setPrimary only by the synchronous code below.
      this.#topology.setPrimary(next)
      this.#monitor.classifyIdentities()
      // Replicas were measured against the old primary: measure them against this one now.
      void this.#monitor.requestRound()
      if (old !== null && this.#lostAt === null) this.#markLost(old.name, reason)
      const from = old?.name ?? this.#lostName
      const durationMs = this.#lostAt === null ? 0 : Date.now() - this.#lostAt
      this.#events.primaryChanged(old, next)
      if (from !== null && from !== next.name) this.#events.failover({ from, to: next.name, durationMs })
    }
    this.#lostAt = null
    this.#lostName = null
    this.#cancelPoll()
  }

  #markLost(name: string | null, reason: string): void {
    this.#lostAt = Date.now()
    this.#lostName = name
    if (name !== null) this.#events.primaryLost({ node: name, reason })
  }

  #schedulePoll(): void {
    if (this.#ended || this.#pollTimer !== null) return
    this.#pollTimer = setTimeout(() => {
      this.#pollTimer = null
      if (this.#topology.primary === null) void this.trigger('polling: no primary known')
    }, this.#pollIntervalMs)
    this.#pollTimer.unref()
  }

  #cancelPoll(): void {
    if (this.#pollTimer !== null) clearTimeout(this.#pollTimer)
    this.#pollTimer = null
  }

  end(): void {
    this.#ended = true
    this.#cancelPoll()
  }
}
