import pg from 'pg'
import type { MaxLag, NormalizedNode, ReadCandidate } from '../config.js'
import type { NodeAddress } from './connection-string.js'
import { IntrusiveList } from './intrusive-list.js'
import type { Waiter } from './lease.js'
import { notSentError } from './lease.js'
import { DeadlineSweep, StatementDeadlines } from './statement-deadlines.js'

export type NodeRole = 'primary' | 'replica' | 'unknown'
export type NodeState = 'unknown' | 'up' | 'down'

/** How a replica's timeline compares to the primary's (see health/timeline.ts). */
export type TimelineState = 'current' | 'older' | 'newer' | 'unknown'

/**
 * Why a node takes no replica reads now (`null`: it takes them). In the order they are checked:
 * `down` (last probes failed or none yet), `foreign` (another cluster's `system_identifier`),
 * `duplicate` (the same server as an earlier node, under another address), `not-replica` (the
 * primary, or a role not known), `fenced` (a stale writable old primary), `unmeasured` (no probe
 * has measured its timeline and lag since it was added, came back, or the primary changed),
 * `diverged` (it replayed WAL the primary does not have), `timeline` (not provably on the
 * primary's timeline), `lagging` (beyond maxLag), `suspect` (a read just failed there), `weight`
 * (weight 0), `noloadbalance` (a topology source said so: Patroni's `noloadbalance` tag).
 */
export type NoReadsReason =
  | 'down'
  | 'foreign'
  | 'duplicate'
  | 'not-replica'
  | 'fenced'
  | 'unmeasured'
  | 'diverged'
  | 'timeline'
  | 'lagging'
  | 'suspect'
  | 'weight'
  | 'noloadbalance'

/** What `topology()` shows of a node. Plain data: safe to log or serialize (no password). */
export interface NodeSnapshot {
  name: string
  host: string
  port: number
  database: string | undefined
  role: NodeRole
  state: NodeState
  /** A writable node that lost to a newer timeline: takes neither reads nor writes. */
  fenced: boolean
  lagging: boolean
  /** Negative when the replica is ahead of the primary (then `diverged`). */
  lagBytes: number | null
  lagMs: number | null
  /** Primary: its timeline. Replica: the one it streams (exact), else its control file's (a lower bound). */
  timeline: number | null
  /** False when `timeline` is only a lower bound (no streaming receiver visible to the monitor's role). */
  timelineExact: boolean
  /** `pg_control_system().system_identifier`: the same on every node of one physical cluster. */
  systemIdentifier: string | null
  /** A server of another cluster (its identifier differs from the primary's): no reads, no writes. */
  foreign: boolean
  /** The same server as this earlier node, under another address (a configuration mistake). */
  duplicateOf: string | null
  /** It replayed WAL the primary does not have (ahead of it, or on a timeline it never had). */
  diverged: boolean
  /** A probe measured its timeline and lag since it was added, came back up, or the primary changed. */
  measured: boolean
  /** Why it takes no replica reads now, or null. */
  noReads: NoReadsReason | null
  /** Current WAL LSN (primary) or last replayed LSN (replica), as PostgreSQL prints it. */
  lsn: string | null
  replayPaused: boolean
  lastProbeAt: string | null
  lastProbeLatencyMs: number | null
  lastError: string | null
  inFlight: number
  queries: number
  errors: number
  retries: number
  weight: number
  pool: { total: number; idle: number; waiting: number }
}

/** pg-pool's client events, forwarded with the node's name (`pg.Pool` parity for the Cluster). */
export interface NodeHooks {
  poolEvent?(event: 'connect' | 'acquire' | 'remove', client: pg.PoolClient, node: ClusterNode): void
  poolRelease?(err: Error | undefined, client: pg.PoolClient, node: ClusterNode): void
  /**
   * Cancels the statement of (or ends) a server backend of this node: a statement whose
   * client-side timeout fired, or that its caller aborted.
   */
  signalBackend?(node: ClusterNode, pid: number, how: 'cancel' | 'terminate'): void
  /** Runs before a new physical connection is handed out (pg-pool's `onConnect`). */
  onConnect?(client: pg.PoolClient, node: ClusterNode): Promise<void> | undefined
}

/** One node of the cluster: its pool, what the monitor knows of it, and its counters. */
export class ClusterNode implements ReadCandidate {
  readonly name: string
  readonly address: NodeAddress
  readonly weight: number
  readonly maxLag: MaxLag | undefined
  readonly #config: NormalizedNode
  readonly #onIdleError: (node: ClusterNode, err: Error, client: pg.PoolClient | undefined) => void
  readonly #hooks: NodeHooks
  #pool: pg.Pool
  /** Callers queued in the current pool's connect(): settled at once when it is replaced or ended. */
  readonly waiters = new IntrusiveList<Waiter>()
  /** The pool's `query_timeout` for statements on leases (see StatementDeadlines). */
  readonly deadlines: StatementDeadlines
  /** The pool's `connectionTimeoutMillis`, 0 for none (see #createPool and NodeLease). */
  readonly connectTimeoutMs: number
  /** Keeps `connectTimeoutMs` for callers queued behind busy clients (see NodeLease#request). */
  readonly queueSweep: DeadlineSweep<Waiter>

  role: NodeRole
  state: NodeState = 'unknown'
  fenced = false
  /** A topology source said so (Patroni's `noloadbalance` tag): takes no reads. */
  noLoadBalance = false
  lagging = false
  lagBytes: number | null = null
  lagMs: number | null = null
  timeline: number | null = null
  timelineExact = false
  /** Set by the monitor after each measuring probe (health/timeline.ts). */
  timelineState: TimelineState = 'unknown'
  systemIdentifier: string | null = null
  /** `pg_postmaster_start_time()` in microseconds, as text: tells one running server from another. */
  startedAt: string | null = null
  foreign = false
  duplicateOf: string | null = null
  diverged = false
  /** Only a probe that measured timeline and lag sets it; going down or a new primary clears it. */
  measured = false
  /** Primary: pg_current_wal_lsn(); replica: pg_last_wal_replay_lsn(). */
  lsn: bigint | null = null
  receiveLsn: bigint | null = null
  replayPaused = false
  /** Last time (ms) this replica was seen with everything the primary had written. */
  caughtUpAt: number | null = null
  lastProbeAt: number | null = null
  lastProbeLatencyMs: number | null = null
  lastError: string | null = null
  /** A read failed here for a node reason: skip it for reads until this time (or a good probe). */
  suspectUntil = 0
  /** Consecutive failed / good probes (hysteresis counters, see health/node-health.ts). */
  failures = 0
  successes = 0
  /** Earliest time of the next scheduled probe (backoff of down nodes). */
  nextProbeAt = 0

  inFlight = 0
  queries = 0
  errors = 0
  retries = 0

  constructor(
    config: NormalizedNode,
    onIdleError: (node: ClusterNode, err: Error, client: pg.PoolClient | undefined) => void,
    hooks: NodeHooks = {},
  ) {
    this.#config = config
    this.#hooks = hooks
    this.name = config.name
    this.address = config.address
    this.weight = config.weight
    this.maxLag = config.maxLag
    this.role = config.declaredRole
    this.#onIdleError = onIdleError
    const timeout = (config.poolConfig as { query_timeout?: unknown }).query_timeout
    this.deadlines = new StatementDeadlines(typeof timeout === 'number' && timeout > 0 ? timeout : 0)
    const connectTimeout = config.poolConfig.connectionTimeoutMillis
    this.connectTimeoutMs = typeof connectTimeout === 'number' && connectTimeout > 0 ? connectTimeout : 0
    this.queueSweep = new DeadlineSweep(this.waiters, this.connectTimeoutMs)
    this.#pool = this.#createPool()
  }

  get host(): string {
    return this.address.host
  }

  get port(): number {
    return this.address.port
  }

  get pool(): pg.Pool {
    return this.#pool
  }

  /** The pg config of this node (password non-enumerable), for the monitor's own connections. */
  get connectionConfig(): pg.ClientConfig {
    return this.#config.poolConfig
  }

  #createPool(): pg.Pool {
    const hooks = this.#hooks
    const onConnect = hooks.onConnect
    const config = this.#config.poolConfig
    const userOnConnect = (config as { onConnect?: (c: pg.PoolClient) => unknown }).onConnect
    // A copy with its descriptors (the password and URL stay non-enumerable).
    const options = Object.defineProperties({}, Object.getOwnPropertyDescriptors(config)) as pg.PoolConfig
    if (this.connectTimeoutMs > 0) {
      // pg-pool arms a timer on every checkout when connectionTimeoutMillis is set, even when a
      // client is idle. pgsplit bounds the two waits itself instead: a new connection through
      // the client's own connect timeout, a caller that queues for a busy pool in NodeLease.
      options.connectionTimeoutMillis = 0
      ;(options as BoundedOptions)[CONNECT_TIMEOUT] = this.connectTimeoutMs
      options.Client = boundedClient(config.Client ?? pg.Client)
    }
    if (onConnect !== undefined) {
      // The user's hook first, then the cluster's (Kysely's onCreateConnection), both awaited.
      ;(options as { onConnect?: (client: pg.PoolClient) => Promise<void> }).onConnect = async (client) => {
        await userOnConnect?.(client)
        await onConnect(client, this)
      }
    }
    const pool = new pg.Pool(options)
    // pg-pool copies its options with Object.assign, which drops the non-enumerable URL: its
    // parameters (sslmode, sslrootcert, application_name, options, ...) would be silently lost
    // for every pooled connection. Put it back, still hidden from JSON and inspection.
    const url = this.#config.poolConfig.connectionString
    if (url !== undefined && pool.options.connectionString === undefined) {
      Object.defineProperty(pool.options, 'connectionString', {
        value: url,
        enumerable: false,
        writable: true,
        configurable: true,
      })
    }
    // An idle client's socket error must never become an unhandled 'error' event.
    pool.on('error', (err, client) => {
      // pg-pool hangs the dead client on the error (err.client): its connection parameters
      // hold the password, which a logger with showHidden (or a deep serializer) would print.
      delete (err as { client?: unknown }).client
      this.#onIdleError(this, err, client)
    })
    // pg-pool removes its error listener from a client while it is checked out. A server that
    // dies while pgsplit holds a client between two protocol steps (e.g. kill -9: ReadyForQuery
    // and FATAL 57P01 in one read) then emits 'error' with no listener, which crashes the
    // process. The failure still surfaces: the client is no longer queryable, and the next use
    // or the release reports it.
    pool.on('connect', (client) => {
      client.on('error', ignoreCheckedOutError)
      // A connected client never needs its password again (pg-pool makes new clients from its
      // options): drop it, so that no event, log or inspection of a client can show it.
      forgetPassword(client)
      this.#hooks.poolEvent?.('connect', client, this)
    })
    if (hooks.poolEvent !== undefined) {
      pool.on('acquire', (client) => hooks.poolEvent?.('acquire', client, this))
      pool.on('remove', (client) => hooks.poolEvent?.('remove', client, this))
    }
    if (hooks.poolRelease !== undefined) {
      pool.on('release', (err, client) => hooks.poolRelease?.(err, client, this))
    }
    return pool
  }

  /** Cancels or ends backend `pid` of this node (best effort; see NodeHooks.signalBackend). */
  signalBackend(pid: number, how: 'cancel' | 'terminate'): void {
    this.#hooks.signalBackend?.(this, pid, how)
  }

  /** Settles every caller still queued for a client of the current pool with `err`. */
  #abandonPending(err: () => Error): void {
    this.waiters.drain(
      () => true,
      (waiter) => waiter.abandon(err()),
    )
  }

  /**
   * Swaps in a fresh pool and drains the old one in the background (its checked-out clients
   * finish their work; idle ones close). Used when this node stops being the primary, so no
   * connection opened to the old role is reused.
   */
  replacePool(): Promise<void> {
    const old = this.#pool
    this.#pool = this.#createPool()
    // Callers queued in the old pool would wait connectionTimeoutMillis for a client that is
    // never coming: they never got one, so nothing was sent; their paths route them again.
    this.#abandonPending(() => notSentError(`pool of ${this.name} replaced (its role changed)`))
    return old.end().catch(() => undefined)
  }

  /** Ends the pool; callers still queued get `err()` at once (pg-pool would leave them waiting). */
  end(err: () => Error = () => notSentError(`pool of ${this.name} ended`)): Promise<void> {
    this.#abandonPending(err)
    return this.#pool.end().catch(() => undefined)
  }

  /**
   * True when this node may take a replica read now: a replica of the primary's cluster, up,
   * measured since it was last seen down, provably on the primary's timeline and not ahead of
   * it, within maxLag, not fenced, suspect or weighted 0. Every read asks: constants only.
   */
  isEligibleReplica(now: number): boolean {
    return this.noReads(now) === null
  }

  /** Why this node takes no replica reads now (null: it takes them). */
  noReads(now: number): NoReadsReason | null {
    if (this.state !== 'up') return 'down'
    if (this.foreign) return 'foreign'
    if (this.duplicateOf !== null) return 'duplicate'
    if (this.role !== 'replica') return 'not-replica'
    if (this.fenced) return 'fenced'
    if (!this.measured) return 'unmeasured'
    if (this.diverged) return 'diverged'
    if (this.timelineState !== 'current') return 'timeline'
    if (this.lagging) return 'lagging'
    if (this.suspectUntil > now) return 'suspect'
    if (this.weight <= 0) return 'weight'
    if (this.noLoadBalance) return 'noloadbalance'
    return null
  }

  /** Forget what the probes measured: the node takes no reads until the next measuring probe. */
  unmeasure(): void {
    this.measured = false
    this.timelineState = 'unknown'
  }

  snapshot(): NodeSnapshot {
    return {
      name: this.name,
      host: this.address.host,
      port: this.address.port,
      database: this.address.database,
      role: this.role,
      state: this.state,
      fenced: this.fenced,
      lagging: this.lagging,
      lagBytes: this.lagBytes,
      lagMs: this.lagMs,
      timeline: this.timeline,
      timelineExact: this.timelineExact,
      systemIdentifier: this.systemIdentifier,
      foreign: this.foreign,
      duplicateOf: this.duplicateOf,
      diverged: this.diverged,
      measured: this.measured,
      noReads: this.noReads(Date.now()),
      lsn: this.lsn === null ? null : formatLsn(this.lsn),
      replayPaused: this.replayPaused,
      lastProbeAt: this.lastProbeAt === null ? null : new Date(this.lastProbeAt).toISOString(),
      lastProbeLatencyMs: this.lastProbeLatencyMs,
      lastError: this.lastError,
      inFlight: this.inFlight,
      queries: this.queries,
      errors: this.errors,
      retries: this.retries,
      weight: this.weight,
      pool: { total: this.#pool.totalCount, idle: this.#pool.idleCount, waiting: this.#pool.waitingCount },
    }
  }
}

/** `'16/B374D848'` -> 0x16B374D848n. Returns null for null input. */
export function parseLsn(text: string | null | undefined): bigint | null {
  if (text === null || text === undefined) return null
  const slash = text.indexOf('/')
  if (slash <= 0) throw new TypeError(`not an LSN: ${JSON.stringify(text)}`)
  const hi = text.slice(0, slash)
  const lo = text.slice(slash + 1)
  if (!/^[0-9A-Fa-f]{1,8}$/.test(hi) || !/^[0-9A-Fa-f]{1,8}$/.test(lo)) {
    throw new TypeError(`not an LSN: ${JSON.stringify(text)}`)
  }
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`)
}

/** 0x16B374D848n -> `'16/B374D848'`, as PostgreSQL prints it. */
export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`
}

/** See `ClusterNode#createPool`: keeps a checked-out client's 'error' from being unhandled. */
function ignoreCheckedOutError(): void {}

/** Removes the password a connected pg client keeps (on itself and in its connection parameters). */
function forgetPassword(client: pg.PoolClient): void {
  const holders = [client, (client as unknown as { connectionParameters?: object }).connectionParameters]
  for (const holder of holders) {
    if (holder === undefined || !Object.hasOwn(holder, 'password')) continue
    Object.defineProperty(holder, 'password', {
      value: null,
      enumerable: false,
      writable: true,
      configurable: true,
    })
  }
}

type ClientClass = NonNullable<pg.PoolConfig['Client']>

/** The client's connect timeout, through pg-pool (whose own is 0): it copies its options to each client. */
const CONNECT_TIMEOUT = Symbol('pgsplit.connectTimeoutMs')

type BoundedOptions = pg.PoolConfig & { [CONNECT_TIMEOUT]?: number }

const BOUNDED_CLASSES = new WeakMap<ClientClass, ClientClass>()

/**
 * `Base` with the `connectionTimeoutMillis` its pool passes under CONNECT_TIMEOUT. One class per
 * `Base`, shared by every node and every pool replacement: a class per pool gave each node's
 * clients their own hidden class, and pg's methods, running on clients of several classes in one
 * process, went megamorphic (callgrind: 1,500 to 3,900 more instructions per query in V8's
 * property-access builtins than a plain pg.Pool; none more since).
 */
function boundedClient(Base: ClientClass): ClientClass {
  const known = BOUNDED_CLASSES.get(Base)
  if (known !== undefined) return known
  const Bounded = class PgsplitClient extends (Base as typeof pg.Client) {
    constructor(config?: pg.ClientConfig) {
      // With its descriptors: pg-pool keeps the password (and pgsplit the URL) non-enumerable.
      const own = Object.defineProperties({}, Object.getOwnPropertyDescriptors(config ?? {}))
      const ms = (config as BoundedOptions | undefined)?.[CONNECT_TIMEOUT]
      super((ms === undefined ? own : Object.assign(own, { connectionTimeoutMillis: ms })) as pg.ClientConfig)
    }
  } as unknown as ClientClass
  BOUNDED_CLASSES.set(Base, Bounded)
  return Bounded
}
