/**
 * The part of a `TestCluster` handle that is the same for every backend: the list of nodes and
 * what it says (roles, URLs), looking a node up, and the operations as steps over the nodes
 * (stop, start, promote, repoint, rejoin, replay pause, the synchronous quorum) with the checks
 * before each. A backend says how its servers are created, started, stopped, killed, cloned and
 * rewound, and whether one runs.
 */
import { TestClusterError } from './errors.js'
import {
  checkpoint,
  dropSlot,
  ensureSlot,
  type NodeTarget,
  promoteNode,
  type SynchronousWait,
  setReplayPaused,
  setSynchronousStandbyNames,
  waitOptions,
} from './node-operations.js'
import { synchronousStandbyNames } from './server-config.js'
import type { TestNode, TestNodeRole } from './types.js'
import type { WaitOptions } from './wait.js'

/** What the handle knows of one node. `kind` survives stops: it is what the node starts as. */
export interface HandleNode {
  readonly index: number
  /** `node0`, `node1`, ...: also its application_name as a standby. */
  readonly name: string
  /** Where this process reaches the server. */
  readonly host: string
  readonly port: number
  kind: 'primary' | 'standby'
  /** Index of the node a standby streams from. */
  upstream: number | undefined
}

/** The resolved options the shared part reads (a backend's have more). */
export interface HandleOptions {
  readonly user: string
  readonly password: string
  readonly database: string
  /** Standbys that must confirm each commit; 0 = asynchronous. */
  readonly syncCount: number
  /** Bound of each operation. */
  readonly timeoutMs: number
  readonly log: (line: string) => void
}

/**
 * A backend's handle extends this with its node record `N` and its resolved options `O`, and
 * implements the abstract steps (and `init`, `kill`, `addReplica`) for its kind of server.
 */
export abstract class ClusterHandle<N extends HandleNode, O extends HandleOptions> {
  protected readonly states: N[] = []
  protected primaryIndex = 0
  protected destroyPromise: Promise<void> | undefined

  constructor(protected readonly opts: O) {}

  /** Whether `s`'s server runs, as far as the handle knows. */
  protected abstract isRunning(s: N): boolean

  /** The end of `s`'s server log, for the message of a wait that fails ('' when there is none). */
  protected abstract logDetails(s: N): Promise<string>

  /** Stops every server and removes what the cluster made; `destroy()` runs it once. */
  protected abstract doDestroy(): Promise<void>

  /**
   * Starts `s`'s server in its kind (no-op when it runs); returns when it accepts connections
   * and, for a standby whose upstream runs, when it streams from it.
   */
  protected abstract startNode(s: N, deadline: number): Promise<void>

  /** Fast shutdown of `s` (sessions ended, shutdown checkpoint); returns when the server is gone. */
  protected abstract stopNode(s: N, deadline: number): Promise<void>

  /** Makes stopped `s` a standby of `up` (standby.signal, primary_conninfo, slot); sets kind and upstream. */
  protected abstract configureStandby(s: N, up: N): Promise<void>

  /** Running standby `s` follows `up` (its slot on `up` exists); returns when it streams from it. */
  protected abstract streamFrom(s: N, up: N, deadline: number): Promise<void>

  /**
   * pg_rewind of stopped `s` from `up`, then removes the slots of its time as a primary (they
   * would pin WAL on the standby forever; pg_rewind keeps them). False when no rewind was needed.
   */
  protected abstract rewind(s: N, up: N, deadline: number): Promise<boolean>

  // --- the handle's state -----------------------------------------------------------------------

  get primaryUrl(): string {
    return this.urlOf(this.states[this.primaryIndex]!)
  }

  get replicaUrls(): string[] {
    return this.states.filter((s) => this.isRunning(s) && s.kind === 'standby').map((s) => this.urlOf(s))
  }

  get nodes(): readonly TestNode[] {
    return this.states.map((s) => this.snapshot(s))
  }

  protected snapshot(s: N): TestNode {
    const role: TestNodeRole = !this.isRunning(s) ? 'stopped' : s.kind === 'primary' ? 'primary' : 'replica'
    return Object.freeze({ name: s.name, url: this.urlOf(s), host: s.host, port: s.port, role })
  }

  protected urlOf(s: N): string {
    const { user, password, database } = this.opts
    const host = s.host.includes(':') ? `[${s.host}]` : s.host
    return `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${host}:${s.port}/${encodeURIComponent(database)}`
  }

  /** Node `i`; a TestClusterError when there is none or the cluster was destroyed. */
  protected node(i: number): N {
    const s = Number.isInteger(i) ? this.states[i] : undefined
    if (!s) {
      throw new TestClusterError(
        `pgsplit/testing: no node ${String(i)}; the cluster has nodes 0..${this.states.length - 1}`,
      )
    }
    if (this.destroyPromise) throw new TestClusterError('pgsplit/testing: the cluster was destroyed', s.name)
    return s
  }

  // --- operations -------------------------------------------------------------------------------

  async stop(i: number): Promise<void> {
    const s = this.node(i)
    await this.stopNode(s, this.deadline())
    this.opts.log(`pgsplit/testing: ${s.name} stopped`)
  }

  async start(i: number): Promise<void> {
    const s = this.node(i)
    await this.startNode(s, this.deadline())
  }

  async promote(i: number): Promise<void> {
    const s = this.node(i)
    const deadline = this.deadline()
    const t0 = Date.now()
    if (!this.isRunning(s))
      throw new TestClusterError(`pgsplit/testing: cannot promote ${s.name}: it is not running`, s.name)
    if (s.kind !== 'standby')
      throw new TestClusterError(`pgsplit/testing: cannot promote ${s.name}: it is not a standby`, s.name)
    await promoteNode(this.at(s), deadline)
    s.kind = 'primary'
    s.upstream = undefined
    this.primaryIndex = s.index
    if (this.opts.syncCount > 0) await this.updateSynchronousNames(s)
    this.opts.log(`pgsplit/testing: ${s.name} promoted (${Date.now() - t0} ms)`)
  }

  async repoint(i: number, j: number): Promise<void> {
    const s = this.node(i)
    const up = this.node(j)
    const deadline = this.deadline()
    const t0 = Date.now()
    if (s === up) throw new TestClusterError(`pgsplit/testing: ${s.name} cannot stream from itself`, s.name)
    if (s.kind !== 'standby') {
      throw new TestClusterError(
        `pgsplit/testing: cannot repoint ${s.name}: it is a primary; use rejoin(${i}, ${j}) to make it a standby`,
        s.name,
      )
    }
    this.checkUpstreamRunning('repoint', s, up)
    const previous = s.upstream === undefined ? undefined : this.states[s.upstream]
    await ensureSlot(this.at(up), s.name, deadline)
    s.upstream = up.index
    if (this.isRunning(s)) {
      await this.streamFrom(s, up, deadline)
    } else {
      await this.configureStandby(s, up)
      await this.startNode(s, deadline)
    }
    if (previous && previous !== up && this.isRunning(previous)) {
      await dropSlot(this.at(previous), s.name, deadline)
    }
    this.opts.log(`pgsplit/testing: ${s.name} streams from ${up.name} (${Date.now() - t0} ms)`)
  }

  async rejoin(i: number, j: number): Promise<void> {
    const s = this.node(i)
    const up = this.node(j)
    const deadline = this.deadline()
    const t0 = Date.now()
    if (s === up) throw new TestClusterError(`pgsplit/testing: ${s.name} cannot rejoin itself`, s.name)
    this.checkUpstreamRunning('rejoin', s, up)
    await this.stopNode(s, deadline)
    // pg_rewind reads the source's timeline from its control file, which a checkpoint updates.
    await checkpoint(this.at(up), deadline)
    await ensureSlot(this.at(up), s.name, deadline)
    const rewound = await this.rewind(s, up, deadline)
    s.kind = 'standby'
    await this.configureStandby(s, up)
    await this.startNode(s, deadline)
    this.opts.log(
      `pgsplit/testing: ${s.name} rejoined as a standby of ${up.name}${rewound ? '' : ' (no rewind was needed)'} (${Date.now() - t0} ms)`,
    )
  }

  async pauseReplay(i: number): Promise<void> {
    await this.setReplayPaused(this.node(i), true)
  }

  async resumeReplay(i: number): Promise<void> {
    await this.setReplayPaused(this.node(i), false)
  }

  destroy(): Promise<void> {
    this.destroyPromise ??= this.doDestroy()
    return this.destroyPromise
  }

  /** The primary a new replica clones; throws when the cluster was destroyed or it does not run. */
  protected primaryForNewReplica(): N {
    if (this.destroyPromise) throw new TestClusterError('pgsplit/testing: the cluster was destroyed')
    const primary = this.states[this.primaryIndex]!
    if (!this.isRunning(primary)) {
      throw new TestClusterError(
        `pgsplit/testing: cannot add a replica: the primary ${primary.name} is not running`,
      )
    }
    return primary
  }

  // --- building blocks --------------------------------------------------------------------------

  protected deadline(): number {
    return Date.now() + this.opts.timeoutMs
  }

  /** `s` for the SQL-level operations (node-operations.ts): admin connections as `user`. */
  protected at(s: N): NodeTarget {
    const { user, password } = this.opts
    return {
      name: s.name,
      admin: { host: s.host, port: s.port, user, password, database: 'postgres' },
      details: () => this.logDetails(s),
    }
  }

  protected waitOpts(s: N, deadline: number): WaitOptions {
    return waitOptions(this.at(s), deadline)
  }

  /**
   * Sets synchronous_standby_names on `primary` to a quorum over every other node, by
   * application_name (= node name); with `wait`, returns once enough standbys are synchronous.
   */
  protected async updateSynchronousNames(primary: N, wait?: SynchronousWait): Promise<void> {
    const names = this.states.filter((s) => s !== primary).map((s) => s.name)
    await setSynchronousStandbyNames(
      this.at(primary),
      synchronousStandbyNames(this.opts.syncCount, names),
      this.deadline(),
      wait,
    )
  }

  private async setReplayPaused(s: N, paused: boolean): Promise<void> {
    const deadline = this.deadline()
    if (!this.isRunning(s) || s.kind !== 'standby') {
      throw new TestClusterError(`pgsplit/testing: ${s.name} is not a running standby`, s.name)
    }
    await setReplayPaused(this.at(s), paused, deadline)
    this.opts.log(`pgsplit/testing: ${s.name} replay ${paused ? 'paused' : 'resumed'}`)
  }

  private checkUpstreamRunning(op: 'repoint' | 'rejoin', s: N, up: N): void {
    if (!this.isRunning(up)) {
      throw new TestClusterError(
        `pgsplit/testing: cannot ${op} ${s.name} to ${up.name}: ${up.name} is not running`,
        s.name,
      )
    }
  }
}

/** Runs `cluster.init()` and returns the cluster; when it fails, destroys what it made and rethrows. */
export async function initialized<C extends { init(): Promise<void>; destroy(): Promise<void> }>(
  cluster: C,
): Promise<C> {
  try {
    await cluster.init()
  } catch (err) {
    await cluster.destroy().catch(() => {})
    throw err
  }
  return cluster
}
