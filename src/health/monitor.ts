import type { NormalizedConfig } from '../config.js'
import type { ClusterNode } from '../pools/node.js'
import type { Topology } from '../pools/topology.js'
import { sameServer } from './identity.js'
import { completeSince, computeLag, isLagKnown, isOverLag, type PositionSample } from './lag.js'
import { applyProbe, type HealthThresholds, nextProbeDelay } from './node-health.js'
import { describeError, isConnectionError, NodeProber, type ProbeResult } from './probe.js'
import { judgeTimeline } from './timeline.js'

/** Events the monitor raises; the Cluster re-emits them. */
export interface MonitorEvents {
  nodeDown(payload: { node: string; reason: string }): void
  nodeUp(payload: { node: string }): void
  replicaLagging(payload: { node: string; lagBytes: number | null; lagMs: number | null }): void
  replicaCaughtUp(payload: { node: string; lagBytes: number | null; lagMs: number | null }): void
  /**
   * A replica replayed WAL the primary does not have: it is ahead of the primary (`ahead`), or on
   * a timeline above the primary's (`newer-timeline`). It takes no reads until the server is
   * rewound or re-cloned (restarted) or another primary is elected.
   */
  replicaDiverged(payload: {
    node: string
    reason: 'ahead' | 'newer-timeline'
    timeline: number | null
    primaryTimeline: number | null
    lagBytes: number | null
  }): void
  /** A node's `system_identifier` is not the cluster's: a server of another cluster. No reads, no writes. */
  foreignNode(payload: { node: string; systemIdentifier: string | null; expected: string }): void
  /** A node is the same running server as another (two addresses for one server): a configuration mistake. */
  duplicateNode(payload: { node: string; of: string }): void
  /** Something says the primary may have changed: discovery should look. */
  suspectPrimaryChange(reason: string): void
}

/** Positions of the primary kept for time lag (see lag.ts `completeSince`). */
const SAMPLES_KEPT = 32

interface PrimarySamples {
  timeline: number | null
  startedAt: string | null
  list: PositionSample[]
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
  /** Per writable node: its recent WAL positions (only the current primary's are used). */
  readonly #samples = new Map<ClusterNode, PrimarySamples>()

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
    this.#samples.delete(node)
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

  /**
   * A full round that starts after this call (one in flight may have probed against a primary
   * that is no longer the primary): after a primary change, replicas take reads again as soon as
   * it has measured them, not one interval later.
   */
  requestRound(): Promise<void> {
    if (this.#round === null) return this.runRound({ all: true })
    return this.#round.catch(() => undefined).then(() => this.runRound({ all: true }))
  }

  /**
   * Rounds until every reachable replica of the cluster is measured (timeline and lag), at most
   * `maxRounds`: what `ready()` waits for, so that `lagMs` right after it is a number for every
   * replica that takes reads. A replica whose lag cannot be measured (replay paused before any
   * transaction replayed, say) keeps `measured: false` and takes no reads.
   */
  async measureAll(maxRounds = 10): Promise<void> {
    for (let i = 0; i < maxRounds && !this.#ended; i++) {
      await this.runRound({ all: true })
      const pending = this.#topology.nodes.some(
        (n) =>
          n.state === 'up' && n.role === 'replica' && !n.foreign && n.duplicateOf === null && !n.measured,
      )
      if (!pending || this.#topology.primary === null) return
      await new Promise((r) => setTimeout(r, Math.min(100, this.#config.healthCheck.intervalMs)).unref())
    }
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
      if (transition === 'down') {
        // Whatever it was before, it is measured again when it comes back.
        node.unmeasure()
        this.#events.nodeDown({ node: node.name, reason: node.lastError })
      }
      if (node === this.#topology.primary && isConnectionError(error)) {
        this.#events.suspectPrimaryChange(`probe of primary ${node.name} failed: ${node.lastError}`)
      }
      return
    }
    node.lastError = null
    node.lastProbeLatencyMs = result.latencyMs
    node.suspectUntil = 0
    if (node.startedAt !== null && result.startedAt !== node.startedAt) {
      // Another server process (restarted, rewound, re-cloned): judged afresh.
      node.unmeasure()
      node.diverged = false
    }
    node.systemIdentifier = result.systemIdentifier
    node.startedAt = result.startedAt
    node.timeline = result.timeline
    node.timelineExact = result.timelineExact
    node.lsn = result.lsn
    node.receiveLsn = result.receiveLsn
    node.replayPaused = result.replayPaused
    // The declared primary names the cluster (a no-op once established).
    if (node === this.#topology.primary) this.#topology.establishIdentity(result.systemIdentifier)
    this.#classify(node)
    if (!result.inRecovery && !node.foreign && node.duplicateOf === null) this.#notePosition(node, result)
    if (node.foreign) {
      node.role = 'unknown'
      if (node === this.#topology.primary) {
        this.#events.suspectPrimaryChange(`primary ${node.name} is a server of another cluster`)
      }
    } else if (node.duplicateOf !== null) {
      // The same server as another node: it is that node's job to take reads or writes.
      node.role = result.inRecovery ? 'replica' : 'unknown'
    } else if (result.inRecovery) {
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
      // The cluster's timeline is the primary's, up or down (replicas are then measured again).
      this.#topology.noteTimeline(result.timeline)
      // The primary is the reference: no lag (a declared primary never went through setPrimary).
      node.lagBytes = 0
      node.lagMs = 0
      node.measured = true
      node.timelineState = 'current'
    }
    if (transition === 'up') this.#events.nodeUp({ node: node.name })
  }

  /** Foreign (another cluster's identifier) and duplicate (the same server as another node) flags. */
  #classify(node: ClusterNode): void {
    const expected = this.#topology.systemIdentifier
    const foreign = expected !== null && node.systemIdentifier !== null && node.systemIdentifier !== expected
    if (foreign !== node.foreign) {
      node.foreign = foreign
      if (foreign) {
        node.unmeasure()
        this.#events.foreignNode({
          node: node.name,
          systemIdentifier: node.systemIdentifier,
          expected: expected!,
        })
      }
    }
    const twin = foreign ? undefined : this.#twinOf(node)
    const of = twin?.name ?? null
    if (of !== node.duplicateOf) {
      node.duplicateOf = of
      if (of !== null) {
        node.unmeasure()
        this.#events.duplicateNode({ node: node.name, of })
      }
    }
  }

  /**
   * The node this one is a second address of: the primary if it is the same server, else the
   * first node (in configuration order) that is. The primary is never anyone's duplicate.
   */
  #twinOf(node: ClusterNode): ClusterNode | undefined {
    const primary = this.#topology.primary
    if (node === primary || node.state !== 'up') return undefined
    const same = (other: ClusterNode) =>
      other !== node && other.state === 'up' && !other.foreign && sameServer(other, node)
    if (primary !== null && same(primary)) return primary
    const nodes = this.#topology.nodes
    const index = nodes.indexOf(node)
    return nodes.find(
      (other, i) => i < index && other !== primary && same(other) && other.duplicateOf === null,
    )
  }

  /** Every node's foreign and duplicate flags again (discovery calls it once the cluster's identity is known). */
  classifyIdentities(): void {
    for (const node of this.#topology.nodes) this.#classify(node)
  }

  #notePosition(node: ClusterNode, result: ProbeResult): void {
    if (result.lsn === null) return
    let samples = this.#samples.get(node)
    if (
      samples === undefined ||
      samples.timeline !== result.timeline ||
      samples.startedAt !== result.startedAt
    ) {
      samples = { timeline: result.timeline, startedAt: result.startedAt, list: [] }
      this.#samples.set(node, samples)
    }
    samples.list.push({ atMs: result.sentAtMs, lsn: result.lsn })
    if (samples.list.length > SAMPLES_KEPT) samples.list.shift()
  }

  #applyLag(outcomes: ProbeOutcome[], primaryOutcome: ProbeOutcome | null): void {
    const primary = this.#topology.primary
    const presult = primaryOutcome?.result
    // No fresh position of the current primary: keep the last known lag.
    if (primary === null || primaryOutcome?.node !== primary || presult == null) return
    if (presult.inRecovery || primary.foreign || presult.lsn === null) return
    const primaryLsn = presult.lsn
    const samples = this.#samples.get(primary)?.list ?? []
    const now = Date.now()
    for (const { node, result } of outcomes) {
      if (result === null || !result.inRecovery || node.role !== 'replica') continue
      // A node still counted down (hysteresis) is measured by the probe that sees it up, not before.
      if (node.state !== 'up' || node.foreign || node.duplicateOf !== null) continue
      const lag = computeLag(
        {
          replayLsn: result.lsn,
          replayTimestampMs: result.replayTimestampMs,
          replicaNowMs: result.nowMs,
          heartbeatMs: result.heartbeatMs,
        },
        primaryLsn,
        completeSince(samples, result.lsn),
        now,
      )
      node.lagBytes = lag.lagBytes
      node.lagMs = lag.lagMs
      const verdict = judgeTimeline(
        { timeline: result.timeline, exact: result.timelineExact },
        this.#topology.timeline,
        this.#topology.highestTimeline,
      )
      node.timelineState = verdict
      if (lag.ahead || verdict === 'newer') {
        // Sticky until the server restarts (a rewind or re-clone does) or another primary is elected.
        if (!node.diverged) {
          node.diverged = true
          this.#events.replicaDiverged({
            node: node.name,
            reason: lag.ahead ? 'ahead' : 'newer-timeline',
            timeline: node.timeline,
            primaryTimeline: this.#topology.timeline,
            lagBytes: node.lagBytes,
          })
        }
      }
      const max = node.maxLag ?? this.#config.maxLag
      node.measured = lag.ahead || isLagKnown(lag, max)
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
