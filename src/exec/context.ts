import type { ClusterEvents } from '../cluster-types.js'
import type { NormalizedConfig } from '../config.js'
import type { Discovery } from '../health/discovery.js'
import type { LsnReader } from '../health/lsn-reader.js'
import type { HealthMonitor } from '../health/monitor.js'
import type { ReplayWatch } from '../health/replay-watch.js'
import type { TopologyFollower } from '../health/topology-follower.js'
import type { Topology } from '../pools/topology.js'
import type { StatementClassifier } from '../router/classify.js'
import type { CausalSession } from '../router/consistency.js'
import type { ReadRouter } from '../router/route.js'
import type { TokenGuard } from '../router/token-guard.js'

/** The lifecycle flags every path checks. */
export interface ExecState {
  ended: boolean
  initialized: boolean
  readonly initial: Promise<void>
}

/**
 * What every execution path (read, write, transaction, Submittable, connect) shares: the
 * cluster's parts and state. Paths are functions over it, so none holds a copy of a rule.
 */
export interface ExecContext {
  readonly config: NormalizedConfig
  readonly topology: Topology
  readonly router: ReadRouter
  readonly classifier: StatementClassifier
  readonly monitor: HealthMonitor
  readonly discovery: Discovery
  /** The topology source's follower (Patroni, `nodes` as a function), or null. */
  readonly follower: TopologyFollower | null
  readonly lsnReader: LsnReader
  /** Causal reads waiting for a replica share its position polls. */
  readonly replayWatch: ReplayWatch
  /** Parses, verifies, signs and bounds tokens: every token from outside enters through it. */
  readonly tokens: TokenGuard
  /** Every write of this process (per-call `consistency: 'causal'` reads see them all). */
  readonly global: CausalSession
  /** Schema changes of this process: every later read, whatever its mode, waits for them. */
  readonly schema: CausalSession
  readonly state: ExecState
  emit<K extends keyof ClusterEvents>(event: K, ...args: ClusterEvents[K]): void
  /** Why no primary is known, from the nodes' last errors (for NoPrimaryError messages). */
  noPrimaryReason(): string
}
