import type { NormalizedConfig } from '../config.js'
import type { ClusterNode } from '../pools/node.js'
import type { Topology } from '../pools/topology.js'
import { computeLag, isOverLag } from './lag.js'
import { applyProbe, type HealthThresholds, nextProbeDelay } from './node-health.js'
import { describeError, isConnectionError, NodeProber, type ProbeResult } from './probe.js'

/** Events the monitor raises; the Cluster re-emits them. */
export interface MonitorEvents {
  nodeDown(payload: { node: string; reason: string }): void
  nodeUp(payload: { node: string }): void
  replicaLagging(payload: { node: string; lagBytes: number | null; lagMs: number | null }): void
  replicaCaughtUp(payload: { node: string; lagBytes: number | null; lagMs: number | null }): void
  /** Something says the primary may have changed: discovery should look. */
  suspectPrimaryChange(reason: string): void
}

export type ProbeOutcome = { node: ClusterNode; result: ProbeResult | null; error: unknown }

/**
 * Probes every node on its own connection every `healthCheck.intervalMs`: role, LSNs, replay
 * state, in one round trip per node. Replicas are probed first and the primary second in each
 * round, so byte lag is never negative. Keeps node states with hysteresis and lag flags.
 */
export class HealthMonitor {
  readonly #topology: Topology
  readonly #config: NormalizedConfig
  readonly #events: MonitorEvents
  readonly #probers = new Map<ClusterNode, NodeProber>()
  readonly #thresholds: HealthThresholds
  #timer: NodeJS.Timeout | null = null
  #round: Promise<void> | null = null
  #ended = false
  #heartbeatReady = false

  constructor(topology: Topology, config: NormalizedConfig, events: MonitorEvents) {
    this.#topology = topology
    this.#config = config
    this.#events = events
    this.#thresholds = config.healthCheck
  }

  prober(node: ClusterNode): NodeProber {
    let prober = this.#probers.get(node)
    if (prober === undefined) {
      const hb = this.#config.healthCheck.heartbeat
      prober = new NodeProber(node, this.#config.healthCheck.timeoutMs, hb === false ? null : hb.table)
      this.#probers.set(node, prober)
    }
    return prober
  }

  forget(node: ClusterNode): void {
    this.#probers.get(node)?.end()
    this.#probers.delete(node)
  }

  /** Starts the periodic rounds (the first one after one interval). */
  start(): void {
    if (this.#ended || this.#timer !== null) return
    this.#schedule()
  }

  #schedule(): void {
    if (this.#ended) return
    this.#timer = setTimeout(() => {
      this.#timer = null
      this.runRound().finally(() => this.#schedule())
    }, this.#config.healthCheck.intervalMs)
    this.#timer.unref()
  }

  /** One round: replicas (and role-less nodes) in parallel, then the primary, then lag. */
  runRound(options: { all?: boolean } = {}): Promise<void> {
    if (this.#round !== null) return this.#round
    this.#round = this.#doRound(options.all === true).finally(() => {
      this.#round = null
    })
    return this.#round
  }

  async #doRound(all: boolean): Promise<void> {
    const now = Date.now()
    const primary = this.#topology.primary
    const others = this.#topology.nodes.filter((n) => n !== primary && (all || n.nextProbeAt <= now))
    // The heartbeat goes first: a caught-up replica has replayed it by the time it is probed,
    // so its time lag reads as milliseconds, not as one whole probe interval.
    if (primary !== null && this.#config.healthCheck.heartbeat !== false) await this.#writeHeartbeat(primary)
    const outcomes = await this.probeNodes(others)
    let primaryOutcome: ProbeOutcome | null = null
    if (primary !== null && !this.#ended) {
      primaryOutcome = (await this.probeNodes([primary]))[0] ?? null
    }
    if (this.#ended) return
    this.#applyLag(outcomes, primaryOutcome)
  }

  /** Probes the given nodes in parallel and applies states and roles; never throws. */
  async probeNodes(nodes: readonly ClusterNode[]): Promise<ProbeOutcome[]> {
    const outcomes = await Promise.all(
      nodes.map(async (node): Promise<ProbeOutcome> => {
        try {
          return { node, result: await this.prober(node).probe(), error: null }
        } catch (error) {
          return { node, result: null, error }
        }
      }),
    )
    if (!this.#ended) for (const outcome of outcomes) this.#apply(outcome)
    return outcomes
  }

  #apply({ node, result, error }: ProbeOutcome): void {
    const now = Date.now()
    if (!this.#topology.nodes.includes(node)) return
    node.lastProbeAt = now
    const transition = applyProbe(node, result !== null, this.#thresholds)
    node.nextProbeAt = now + nextProbeDelay(node, this.#thresholds) - 50
    if (result === null) {
      node.lastError = describeError(error)
      node.lastProbeLatencyMs = null
      if (transition === 'down') this.#events.nodeDown({ node: node.name, reason: node.lastError })
      if (node === this.#topology.primary && isConnectionError(error)) {
        this.#events.suspectPrimaryChange(`probe of primary ${node.name} failed: ${node.lastError}`)
      }
      return
    }
    node.lastError = null
    node.lastProbeLatencyMs = result.latencyMs
    node.suspectUntil = 0
    node.timeline = result.timeline
    node.lsn = result.lsn
    node.receiveLsn = result.receiveLsn
    node.replayPaused = result.replayPaused
    if (result.inRecovery) {
      if (node === this.#topology.primary) {
        this.#events.suspectPrimaryChange(`primary ${node.name} is in recovery (demoted)`)
      } else {
        node.role = 'replica'
        node.fenced = false
      }
    } else if (node !== this.#topology.primary) {
      const current = this.#topology.timeline
      if (this.#topology.primary !== null && result.timeline !== null && result.timeline < current) {
        // An old primary restarted without fencing: writable, but on a timeline the cluster left.
        const known = node.fenced
        node.role = 'unknown'
        node.fenced = true
        // First sight of it: discovery looks at every node and reports the split brain.
        if (!known) {
          this.#events.suspectPrimaryChange(
            `${node.name} is writable on timeline ${result.timeline}, behind the cluster's ${current} (split brain)`,
          )
        }
      } else {
        this.#events.suspectPrimaryChange(`${node.name} is writable (not in recovery)`)
      }
    } else {
      this.#topology.noteTimeline(result.timeline)
      // The primary is the reference: no lag (a declared primary never went through setPrimary).
      node.lagBytes = 0
      node.lagMs = 0
    }
    if (transition === 'up') this.#events.nodeUp({ node: node.name })
  }

  #applyLag(outcomes: ProbeOutcome[], primaryOutcome: ProbeOutcome | null): void {
    const primaryLsn = primaryOutcome?.result?.inRecovery === false ? primaryOutcome.result.lsn : null
    if (primaryLsn === null) return // no fresh primary position: keep the last known lag
    const now = Date.now()
    for (const { node, result } of outcomes) {
      if (result === null || !result.inRecovery || node.role !== 'replica') continue
      const lag = computeLag(
        {
          replayLsn: result.lsn,
          replayTimestampMs: result.replayTimestampMs,
          replicaNowMs: result.nowMs,
          heartbeatMs: result.heartbeatMs,
        },
        primaryLsn,
        node.caughtUpAt,
        now,
      )
      if (lag.caughtUp) node.caughtUpAt = now
      node.lagBytes = lag.lagBytes
      node.lagMs = lag.lagMs
      this.#updateLagging(node)
    }
  }

  #updateLagging(node: ClusterNode): void {
    const over = isOverLag(node, node.maxLag ?? this.#config.maxLag)
    if (over && !node.lagging) {
      node.lagging = true
      this.#events.replicaLagging({ node: node.name, lagBytes: node.lagBytes, lagMs: node.lagMs })
    } else if (!over && node.lagging) {
      node.lagging = false
      this.#events.replicaCaughtUp({ node: node.name, lagBytes: node.lagBytes, lagMs: node.lagMs })
    }
  }

  /** Records a replay position seen outside the probes (a causal wait), monotonic per node. */
  noteReplayLsn(node: ClusterNode, lsn: bigint): void {
    if (node.lsn === null || lsn > node.lsn) node.lsn = lsn
  }

  async #writeHeartbeat(primary: ClusterNode): Promise<void> {
    const hb = this.#config.healthCheck.heartbeat
    if (hb === false) return
    const prober = this.prober(primary)
    try {
      if (!this.#heartbeatReady) {
        await prober.query(
          `CREATE TABLE IF NOT EXISTS ${hb.table} (id int PRIMARY KEY, ts timestamptz NOT NULL)`,
        )
        this.#heartbeatReady = true
      }
      await prober.query(
        `INSERT INTO ${hb.table} (id, ts) VALUES (1, clock_timestamp()) ON CONFLICT (id) DO UPDATE SET ts = excluded.ts`,
      )
    } catch {
      // The probe that follows reports the primary's health; a failed heartbeat only costs precision.
    }
  }

  /** A read failed on this node for a node reason: keep reads away until a probe says otherwise. */
  markSuspect(node: ClusterNode): void {
    node.suspectUntil = Date.now() + this.#config.healthCheck.intervalMs * 2
    node.nextProbeAt = 0
  }

  end(): void {
    this.#ended = true
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
    for (const prober of this.#probers.values()) prober.end()
    this.#probers.clear()
  }
}
