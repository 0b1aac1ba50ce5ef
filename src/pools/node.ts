import pg from 'pg'
import type { MaxLag, NormalizedNode, ReadCandidate } from '../config.js'
import type { NodeAddress } from './connection-string.js'

export type NodeRole = 'primary' | 'replica' | 'unknown'
export type NodeState = 'unknown' | 'up' | 'down'

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
  lagBytes: number | null
  lagMs: number | null
  timeline: number | null
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

/** One node of the cluster: its pool, what the monitor knows of it, and its counters. */
export class ClusterNode implements ReadCandidate {
  readonly name: string
  readonly address: NodeAddress
  readonly weight: number
  readonly maxLag: MaxLag | undefined
  readonly #config: NormalizedNode
  readonly #onIdleError: (node: ClusterNode, err: Error) => void
  #pool: pg.Pool

  role: NodeRole
  state: NodeState = 'unknown'
  fenced = false
  /** A topology source said so (Patroni's `noloadbalance` tag): takes no reads. */
  noReads = false
  lagging = false
  lagBytes: number | null = null
  lagMs: number | null = null
  timeline: number | null = null
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

  constructor(config: NormalizedNode, onIdleError: (node: ClusterNode, err: Error) => void) {
    this.#config = config
    this.name = config.name
    this.address = config.address
    this.weight = config.weight
    this.maxLag = config.maxLag
    this.role = config.declaredRole
    this.#onIdleError = onIdleError
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
    const pool = new pg.Pool(this.#config.poolConfig)
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
    pool.on('error', (err) => {
      // pg-pool hangs the dead client on the error (err.client): its connection parameters
      // hold the password, which a logger with showHidden (or a deep serializer) would print.
      delete (err as { client?: unknown }).client
      this.#onIdleError(this, err)
    })
    // pg-pool removes its error listener from a client while it is checked out. A server that
    // dies while pgsplit holds a client between two protocol steps (e.g. kill -9: ReadyForQuery
    // and FATAL 57P01 in one read) then emits 'error' with no listener, which crashes the
    // process. The failure still surfaces: the client is no longer queryable, and the next use
    // or the release reports it.
    pool.on('connect', (client) => client.on('error', ignoreCheckedOutError))
    return pool
  }

  /**
   * Swaps in a fresh pool and drains the old one in the background (its checked-out clients
   * finish their work; idle ones close). Used when this node stops being the primary, so no
   * connection opened to the old role is reused.
   */
  replacePool(): Promise<void> {
    const old = this.#pool
    this.#pool = this.#createPool()
    return old.end().catch(() => undefined)
  }

  end(): Promise<void> {
    return this.#pool.end().catch(() => undefined)
  }

  isEligibleReplica(now: number): boolean {
    return (
      this.role === 'replica' &&
      this.state === 'up' &&
      !this.lagging &&
      !this.fenced &&
      !this.noReads &&
      this.suspectUntil <= now
    )
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
