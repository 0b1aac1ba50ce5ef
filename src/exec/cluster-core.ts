import type { EventEmitter } from 'node:events'
import type pg from 'pg'
import type { ClusterEvents, SessionOptions, TopologySnapshot } from '../cluster-types.js'
import {
  addressKey,
  type ClusterConfig,
  DEFAULTS,
  type NodeInput,
  normalizeAddedNode,
  normalizeConfig,
  type PoolOptions,
  validateConsistency,
} from '../config.js'
import { ClusterEndedError, NoPrimaryError, PgsplitError, TimeoutError } from '../errors.js'
import { Discovery } from '../health/discovery.js'
import { LsnReader } from '../health/lsn-reader.js'
import { HealthMonitor } from '../health/monitor.js'
import { describeError } from '../health/probe.js'
import { ReplayWatch } from '../health/replay-watch.js'
import { createTopologyFollower, type TopologyFollower } from '../health/topology-follower.js'
import { ClusterNode, type NodeHooks, type NodeSnapshot } from '../pools/node.js'
import { isConnectionLevel } from '../pools/outcome.js'
import { Topology } from '../pools/topology.js'
import { StatementClassifier } from '../router/classify.js'
import { CausalSession, currentScope, laterToken, runInScope } from '../router/consistency.js'
import { ReadRouter } from '../router/route.js'
import { createStrategy } from '../router/strategies.js'
import { TokenCodec } from '../router/token-codec.js'
import { TokenGuard } from '../router/token-guard.js'
import type { ExecContext, ExecState } from './context.js'

/**
 * The parts of a Cluster and their lifecycle: built from the config, wired to each other and
 * to the Cluster's events, started, and ended. The Cluster class is the `pg.Pool` facade over it.
 */
export class ClusterCore {
  readonly context: ExecContext
  readonly #emitter: EventEmitter<ClusterEvents>
  readonly #topology = new Topology()
  readonly #monitor: HealthMonitor
  readonly #discovery: Discovery
  readonly #follower: TopologyFollower | null
  readonly #lsnReader: LsnReader
  readonly #replayWatch: ReplayWatch
  readonly #state: ExecState
  readonly #hooks: NodeHooks
  readonly #config
  readonly #connectHooks = new Set<(client: pg.PoolClient, node: string) => Promise<void> | void>()

  constructor(config: ClusterConfig, emitter: EventEmitter<ClusterEvents>) {
    this.#emitter = emitter
    const cfg = normalizeConfig(config)
    this.#config = cfg
    this.#hooks = {
      // Every checkout passes here twice: nothing is built for an event nobody listens to.
      poolEvent: (event, client, node) => {
        if (this.#emitter.listenerCount(event) !== 0) this.#emit(event, client, node.name)
      },
      poolRelease: (err, client, node) => {
        if (this.#emitter.listenerCount('release') !== 0) this.#emit('release', err, client, node.name)
      },
      signalBackend: (node, pid, how) => {
        // Best effort, on the monitor's own connection: the statement stops using the node.
        const fn = how === 'terminate' ? 'pg_terminate_backend' : 'pg_cancel_backend'
        this.#monitor
          .prober(node)
          .query(`SELECT ${fn}($1)`, [pid])
          .catch(() => undefined)
      },
      onConnect: (client, node) =>
        this.#connectHooks.size === 0 ? undefined : this.#runConnectHooks(client, node),
    }
    for (const node of cfg.nodes) this.#topology.add(this.#newNode(node))
    const emit = this.#emit.bind(this) as ExecContext['emit']
    this.#monitor = new HealthMonitor(this.#topology, cfg, {
      nodeDown: (p) => emit('nodeDown', p),
      nodeUp: (p) => emit('nodeUp', p),
      replicaLagging: (p) => emit('replicaLagging', p),
      replicaCaughtUp: (p) => emit('replicaCaughtUp', p),
      replicaDiverged: (p) => emit('replicaDiverged', p),
      foreignNode: (p) => emit('foreignNode', p),
      duplicateNode: (p) => emit('duplicateNode', p),
      suspectPrimaryChange: (reason) => {
        void this.#discovery.trigger(reason)
      },
    })
    this.#discovery = new Discovery(
      this.#topology,
      this.#monitor,
      {
        primaryLost: (p) => {
          // Its connections are not reused: callers queued in its pool are routed again at once.
          void this.#topology.find(p.node)?.replacePool()
          // The topology source may already name the new leader: ask it now, not at its next poll.
          void this.#follower?.refresh()
          emit('primaryLost', p)
        },
        failover: (p) => emit('failover', p),
        splitBrain: (p) => emit('splitBrain', p),
        primaryChanged: (from) => {
          // Connections opened to the old primary are not reused for anything.
          if (from !== null) void from.replacePool()
        },
      },
      cfg.failover.pollIntervalMs,
    )
    this.#follower = createTopologyFollower(cfg, {
      nodes: () => this.#topology.nodes,
      primary: () => this.#topology.primary,
      addNode: (input) => this.addNode(input),
      removeNode: (name) => this.removeNode(name),
      rediscover: (reason) => void this.#discovery.trigger(reason),
      revokePrimary: (reason) => this.#discovery.revoke(reason),
      sourceEvent: (p) => emit('topologySource', p),
    })
    // An authority (Patroni) decides which writable node may be the primary, while it answers.
    if (this.#follower !== null) this.#discovery.setAuthority(() => this.#follower?.leader())
    this.#lsnReader = new LsnReader(cfg.healthCheck.timeoutMs)
    this.#replayWatch = new ReplayWatch(cfg.healthCheck.timeoutMs, {
      replayed: (node, lsn) => this.#monitor.noteReplayLsn(node, lsn),
      failed: (node) => this.#monitor.markSuspect(node),
    })
    const tokens = new TokenGuard(new TokenCodec(cfg.tokens), {
      // The primary's position known without I/O: a token within it is accepted at once.
      known: () => {
        const primary = this.#topology.primary
        if (primary === null) return null
        const probed =
          primary.lsn !== null && primary.timeline !== null
            ? { timeline: primary.timeline, lsn: primary.lsn }
            : null
        return laterToken(probed, this.#lsnReader.latestOf(primary))
      },
      fresh: () => {
        const primary = this.#topology.primary
        if (primary === null) {
          return Promise.reject(new NoPrimaryError('no primary known to check a write token against', 0))
        }
        return this.#lsnReader.read(primary)
      },
    })
    this.#state = { ended: false, initialized: false, initial: this.#start() }
    this.context = {
      config: cfg,
      topology: this.#topology,
      router: new ReadRouter(this.#topology, createStrategy(cfg.readStrategy)),
      classifier: new StatementClassifier({
        writeFunctions: cfg.writeFunctions,
        cacheSize: cfg.classifierCacheSize,
      }),
      monitor: this.#monitor,
      discovery: this.#discovery,
      follower: this.#follower,
      lsnReader: this.#lsnReader,
      replayWatch: this.#replayWatch,
      tokens,
      global: new CausalSession(),
      schema: new CausalSession({ eager: true }),
      state: this.#state,
      emit,
      noPrimaryReason: () => this.#noPrimaryReason(),
    }
  }

  /** Runs `hook` on every new physical connection of every node before its first use. */
  addConnectHook(hook: (client: pg.PoolClient, node: string) => Promise<void> | void): () => void {
    this.#connectHooks.add(hook)
    return () => this.#connectHooks.delete(hook)
  }

  async #runConnectHooks(client: pg.PoolClient, node: ClusterNode): Promise<void> {
    for (const hook of this.#connectHooks) await hook(client, node.name)
  }

  #newNode(node: ConstructorParameters<typeof ClusterNode>[0]): ClusterNode {
    return new ClusterNode(node, (n, err, client) => this.#onIdleError(n, err, client), this.#hooks)
  }

  async #start(): Promise<void> {
    await Promise.resolve()
    try {
      // The source's first answer (bounded by its timeout) comes before the first decision.
      if (this.#follower !== null) await this.#follower.start()
      // Discovery probes every node: roles, states, positions. Then one ordered round gives lag.
      await this.#discovery.trigger('startup')
      // Then rounds until every reachable replica has a measured timeline and lag.
      if (!this.#state.ended) await this.#monitor.measureAll()
    } finally {
      this.#state.initialized = true
      this.#monitor.start()
    }
  }

  #emit<K extends keyof ClusterEvents>(event: K, ...args: ClusterEvents[K]): void {
    // pg.Pool semantics: 'error' only to listeners; an idle client's error never crashes anything.
    if (event === 'error' && this.#emitter.listenerCount('error') === 0) return
    try {
      ;(this.#emitter.emit as (e: K, ...a: ClusterEvents[K]) => boolean)(event, ...args)
    } catch (err) {
      // A throwing listener must not break the monitor or a pool; surface it asynchronously.
      queueMicrotask(() => {
        throw err
      })
    }
  }

  #onIdleError(node: ClusterNode, err: Error, client: pg.PoolClient | undefined): void {
    node.lastError = describeError(err)
    if (node.role === 'replica') this.#monitor.markSuspect(node)
    if (node === this.#topology.primary && isConnectionLevel(err)) {
      void this.#discovery.trigger(`idle connection to primary ${node.name} failed: ${node.lastError}`)
    }
    this.#emit('error', err, client, node.name)
  }

  #noPrimaryReason(): string {
    const errors = this.#topology.nodes
      .filter((n) => n.lastError !== null)
      .map((n) => `${n.name}: ${n.lastError}`)
      .join('; ')
    return errors === '' ? 'no node is writable' : errors
  }

  async ready(timeoutMs: number): Promise<void> {
    const started = Date.now()
    let timer: NodeJS.Timeout | undefined
    const bound = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(new TimeoutError(`ready() timed out after ${timeoutMs} ms: first probe round not finished`)),
        timeoutMs,
      )
      // Not unref'd: the caller waits on it (with allowExitOnIdle the monitor's sockets do not).
    })
    try {
      await Promise.race([this.#state.initial, bound])
    } finally {
      clearTimeout(timer)
    }
    const left = Math.max(1, timeoutMs - (Date.now() - started))
    await this.#topology.waitForPrimary(left, this.#noPrimaryReason())
  }

  /** `db.session()`: a causal (or the configured sticky) scope, with an optional outside token. */
  session<T>(fn: () => T, options: SessionOptions): T {
    const session = new CausalSession({ eager: true })
    const tokens = this.context.tokens
    if (typeof options.token === 'string' && options.token !== '') {
      session.admit(tokens.check(tokens.parse(options.token)))
    }
    const configured = this.#config.consistency
    const consistency =
      options.consistency !== undefined
        ? validateConsistency(options.consistency, 'session consistency')
        : configured === 'eventual'
          ? 'causal'
          : configured
    return runInScope({ session, consistency }, fn)
  }

  /** The token of the scope's (or the process's) latest write, `undefined` before any. */
  async lastWriteToken(): Promise<string | undefined> {
    const token = await (currentScope()?.session ?? this.context.global).token()
    return token === null ? undefined : this.context.tokens.format(token)
  }

  snapshot(): TopologySnapshot {
    const primary = this.#topology.primary
    return {
      primary: primary?.name ?? null,
      timeline: this.#topology.timeline === 0 ? null : this.#topology.timeline,
      searching: this.#discovery.searching,
      nodes: this.#topology.nodes.map((n) => n.snapshot()),
      source: this.#follower?.snapshot() ?? null,
    }
  }

  async addNode(input: NodeInput): Promise<NodeSnapshot> {
    const normalized = normalizeAddedNode(input, this.#config.pool)
    const taken = this.#topology.nodes.find(
      // Same server by address identity (localhost = 127.0.0.1 = ::1, default ports), not by spelling.
      (n) =>
        n.name === normalized.name || addressKey(n.address.host, n.address.port) === normalized.addressKey,
    )
    if (taken !== undefined) {
      throw new PgsplitError(
        'PGSPLIT_DUPLICATE_NODE',
        `node ${normalized.name} is already in the cluster (${taken.name})`,
      )
    }
    const node = this.#newNode(normalized)
    this.#topology.add(node)
    await this.#monitor.probeNodes([node])
    // Its lag is known after one ordered round; until then it takes no reads.
    await this.#monitor.runRound({ all: true })
    return node.snapshot()
  }

  async removeNode(name: string): Promise<void> {
    const node = this.#topology.find(name)
    if (node === undefined)
      throw new PgsplitError('PGSPLIT_UNKNOWN_NODE', `no node named ${JSON.stringify(name)}`)
    if (node === this.#topology.primary) {
      throw new PgsplitError('PGSPLIT_REMOVE_PRIMARY', `cannot remove ${name}: it is the primary`)
    }
    this.#topology.remove(node)
    this.#monitor.forget(node)
    this.#replayWatch.forget(node)
    await node.end()
  }

  /** The pool options every node starts from: the defaults and the config's shared `pool`. */
  get poolOptions(): Readonly<PoolOptions> {
    // As pg-pool normalized them for a node, without what is per node or secret.
    const options: Record<string, unknown> = { ...(this.#topology.nodes[0]?.pool.options ?? DEFAULTS.pool) }
    for (const key of ['host', 'port', 'database', 'user', 'password', 'connectionString', 'ssl'])
      delete options[key]
    return Object.freeze(options) as PoolOptions
  }

  sum(count: (pool: pg.Pool) => number): number {
    let total = 0
    for (const node of this.#topology.nodes) total += count(node.pool)
    return total
  }

  /** Ends everything; resolves when every pool has drained. */
  async end(): Promise<void> {
    this.#state.ended = true
    this.#follower?.end()
    this.#monitor.end()
    this.#discovery.end()
    this.#lsnReader.end()
    this.#replayWatch.end()
    this.#topology.end()
    await Promise.all(this.#topology.nodes.map((n) => n.end(() => new ClusterEndedError('query'))))
  }
}
