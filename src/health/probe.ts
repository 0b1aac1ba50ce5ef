import pg from 'pg'
import { redact } from '../pools/connection-string.js'
import type { ClusterNode } from '../pools/node.js'
import { parseLsn } from '../pools/node.js'
import { isConnectionLevel } from '../pools/outcome.js'
import { replicaTimeline } from './timeline.js'

/** What one probe round trip tells about a node. */
export interface ProbeResult {
  inRecovery: boolean
  /**
   * Primary: its timeline from the current WAL file name (exact). Replica: the timeline it
   * streams, else the control file's lower bound (see health/timeline.ts); null when unknown.
   */
  timeline: number | null
  /** True when `timeline` is exact (a primary, or a streaming receiver); false for a lower bound. */
  timelineExact: boolean
  /** Primary: pg_current_wal_lsn(). Replica: pg_last_wal_replay_lsn(). */
  lsn: bigint | null
  receiveLsn: bigint | null
  replayTimestampMs: number | null
  nowMs: number
  replayPaused: boolean
  heartbeatMs: number | null
  /** `pg_control_system().system_identifier`, as text (a 64-bit number). */
  systemIdentifier: string | null
  /** `pg_postmaster_start_time()` in microseconds since the epoch, as text. */
  startedAt: string | null
  /** Local clock when the probe was sent: the primary's position was read after it. */
  sentAtMs: number
  latencyMs: number
}

/**
 * One round trip that answers every question the monitor and discovery ask. The CASEs keep
 * primary-only functions (pg_current_wal_lsn, pg_walfile_name) from running on a standby,
 * where they raise errors. The timeline of a primary comes from its WAL file name:
 * pg_control_checkpoint() lags behind a promotion until the next checkpoint. A standby's
 * timeline comes from its streaming WAL receiver, else from its control file (a lower bound;
 * health/timeline.ts says why both and what each proves). Each control-file function is called
 * once (a composite's fields read as `(f()).x` would call it once per field). The start time is
 * read as an integer so that no session's TimeZone or DateStyle changes its text.
 */
function probeSql(heartbeatTable: string | null): string {
  const heartbeat = heartbeatTable
    ? `(SELECT (extract(epoch FROM ts) * 1000)::float8 FROM ${heartbeatTable} WHERE id = 1)`
    : 'NULL::float8'
  return `/* pgsplit probe */ SELECT r AS in_recovery,
  CASE WHEN r THEN NULL ELSE pg_current_wal_lsn()::text END AS wal_lsn,
  CASE WHEN r THEN NULL ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END AS timeline,
  CASE WHEN r THEN (SELECT received_tli FROM pg_stat_wal_receiver WHERE status = 'streaming' LIMIT 1) END AS received_tli,
  CASE WHEN r THEN greatest((SELECT timeline_id FROM pg_control_checkpoint()),
                            (SELECT min_recovery_end_timeline FROM pg_control_recovery())) END AS control_tli,
  CASE WHEN r THEN pg_last_wal_replay_lsn()::text END AS replay_lsn,
  CASE WHEN r THEN pg_last_wal_receive_lsn()::text END AS receive_lsn,
  CASE WHEN r THEN (extract(epoch FROM pg_last_xact_replay_timestamp()) * 1000)::float8 END AS replay_ts,
  (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS now_ms,
  CASE WHEN r THEN pg_is_wal_replay_paused() ELSE false END AS paused,
  (SELECT system_identifier::text FROM pg_control_system()) AS system_id,
  (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint::text AS started_us,
  ${heartbeat} AS heartbeat_ms
FROM (SELECT pg_is_in_recovery() AS r) s`
}

interface ProbeRow {
  in_recovery: boolean
  wal_lsn: string | null
  timeline: number | null
  received_tli: number | null
  control_tli: number | null
  replay_lsn: string | null
  receive_lsn: string | null
  replay_ts: number | null
  now_ms: number
  paused: boolean
  system_id: string | null
  started_us: string | null
  heartbeat_ms: number | null
}

interface DestroyableClient {
  connection?: { stream?: { destroy(): void } }
}

/** Closes a client's socket at once: `end()` would wait on a blackholed peer. */
export function destroyClient(client: pg.Client): void {
  const stream = (client as unknown as DestroyableClient).connection?.stream
  try {
    stream?.destroy()
  } catch {
    // already gone
  }
  client.end().catch(() => undefined)
}

/** Runs `fn` with a bound; on timeout calls `onTimeout` and rejects. */
export function withDeadline<T>(
  promise: Promise<T>,
  ms: number,
  what: string,
  onTimeout: () => void,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onTimeout()
      reject(new Error(`${what} timed out after ${ms} ms`))
    }, ms)
    timer.unref()
  })
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer))
}

/** How long a probe runs without the heartbeat table after finding it missing (42P01). */
const HEARTBEAT_RETRY_MS = 1_000

/**
 * The monitor's own connection to one node: never taken from (or visible in) the user's pool,
 * opened lazily, thrown away on any failure so the next probe starts clean.
 */
export class NodeProber {
  readonly #node: ClusterNode
  readonly #timeoutMs: number
  #client: pg.Client | null = null
  #connecting: Promise<pg.Client> | null = null
  #heartbeatTable: string | null
  /** The configured table: reading it is tried again after a while when it was missing. */
  readonly #configuredHeartbeat: string | null
  #heartbeatRetryAt = 0
  #sql: string
  #ended = false
  /** The statement in flight: the next one starts after it (pg 9 drops client-side queueing). */
  #tail: Promise<unknown> = Promise.resolve()

  constructor(node: ClusterNode, timeoutMs: number, heartbeatTable: string | null) {
    this.#node = node
    this.#timeoutMs = timeoutMs
    this.#heartbeatTable = heartbeatTable
    this.#configuredHeartbeat = heartbeatTable
    this.#sql = probeSql(heartbeatTable)
  }

  /** Stop reading the heartbeat table for a while (it does not exist yet, or was dropped). */
  disableHeartbeat(): void {
    this.#heartbeatTable = null
    this.#sql = probeSql(null)
    this.#heartbeatRetryAt = Date.now() + HEARTBEAT_RETRY_MS
  }

  get heartbeatEnabled(): boolean {
    return this.#heartbeatTable !== null
  }

  async #connect(): Promise<pg.Client> {
    if (this.#client !== null) return this.#client
    if (this.#connecting !== null) return this.#connecting
    const client = new pg.Client({
      ...this.#node.connectionConfig,
      password: this.#node.connectionConfig.password,
      connectionString: this.#node.connectionConfig.connectionString,
      connectionTimeoutMillis: this.#timeoutMs,
      query_timeout: undefined,
      statement_timeout: undefined,
      application_name: 'pgsplit-monitor',
      keepAlive: true,
    })
    // A socket error while idle must not crash the process; the next probe reconnects.
    client.on('error', () => {
      if (this.#client === client) this.#client = null
    })
    this.#connecting = client
      .connect()
      .then(() => {
        if (this.#ended) {
          destroyClient(client)
          throw new Error('prober ended')
        }
        this.#client = client
        // allowExitOnIdle: an idle monitor socket never keeps the process alive (as pg.Pool's idle clients).
        if (this.#exitOnIdle) (client as unknown as { unref(): void }).unref()
        return client
      })
      .catch((err: unknown) => {
        destroyClient(client)
        throw err
      })
      .finally(() => {
        this.#connecting = null
      })
    return this.#connecting
  }

  #drop(): void {
    const client = this.#client
    this.#client = null
    if (client !== null) destroyClient(client)
  }

  /** Runs `sql` on the monitor's connection within the probe timeout. */
  get #exitOnIdle(): boolean {
    return (this.#node.connectionConfig as { allowExitOnIdle?: boolean }).allowExitOnIdle === true
  }

  async query<R extends pg.QueryResultRow>(sql: string, values?: unknown[]): Promise<R[]> {
    // One statement at a time on this connection; the deadline counts the wait behind another.
    let abandoned = false
    const work = this.#tail.then(async () => {
      // Its caller gave up while it waited: do not send it at all.
      if (abandoned) throw new Error(`probe of ${this.#node.name} abandoned`)
      const client = await this.#connect()
      // allowExitOnIdle: the socket holds the process only while a probe is in flight.
      const socket = client as unknown as { ref(): void; unref(): void }
      if (this.#exitOnIdle) socket.ref()
      try {
        return (await client.query<R>(sql, values)).rows
      } finally {
        if (this.#exitOnIdle) socket.unref()
      }
    })
    this.#tail = work.catch(() => undefined)
    try {
      return await withDeadline(work, this.#timeoutMs, `probe of ${this.#node.name}`, () => this.#drop())
    } catch (err) {
      abandoned = true
      work.catch(() => undefined)
      if (isConnectionError(err)) this.#drop()
      throw err
    }
  }

  async probe(): Promise<ProbeResult> {
    if (
      this.#heartbeatTable === null &&
      this.#configuredHeartbeat !== null &&
      Date.now() >= this.#heartbeatRetryAt
    ) {
      // The table is created by the first round, after the first probes: read it once it exists.
      this.#heartbeatTable = this.#configuredHeartbeat
      this.#sql = probeSql(this.#configuredHeartbeat)
    }
    const sentAtMs = Date.now()
    const started = performance.now()
    let rows: ProbeRow[]
    try {
      rows = await this.query<ProbeRow>(this.#sql)
    } catch (err) {
      // 42P01: heartbeat table missing on this node (not replicated yet): probe without it.
      if ((err as { code?: string }).code === '42P01' && this.#heartbeatTable !== null) {
        this.disableHeartbeat()
        rows = await this.query<ProbeRow>(this.#sql)
      } else {
        throw err
      }
    }
    const row = rows[0]
    if (row === undefined) throw new Error('probe returned no row')
    const standby = replicaTimeline(
      row.received_tli === null ? null : Number(row.received_tli),
      row.control_tli === null ? null : Number(row.control_tli),
    )
    return {
      inRecovery: row.in_recovery,
      timeline: row.in_recovery ? standby.timeline : row.timeline === null ? null : Number(row.timeline),
      timelineExact: row.in_recovery ? standby.exact : row.timeline !== null,
      lsn: parseLsn(row.in_recovery ? row.replay_lsn : row.wal_lsn),
      receiveLsn: parseLsn(row.receive_lsn),
      replayTimestampMs: row.replay_ts,
      nowMs: row.now_ms,
      replayPaused: row.paused,
      heartbeatMs: row.heartbeat_ms,
      systemIdentifier: row.system_id,
      startedAt: row.started_us,
      sentAtMs,
      latencyMs: Math.round((performance.now() - started) * 100) / 100,
    }
  }

  end(): void {
    this.#ended = true
    this.#drop()
  }
}

/**
 * An error that says the connection (not the SQL) failed, for the monitor and discovery: the
 * outcome rule's connection failures, plus a recovery conflict's FATAL form (57P04) and the
 * client-side timeouts of probes and queries (the node did not answer in time).
 */
export function isConnectionError(err: unknown): boolean {
  if (isConnectionLevel(err)) return true
  const code = (err as { code?: unknown } | null)?.code
  if (code === '57P04') return true
  const message = (err as { message?: unknown } | null)?.message
  return (
    (code === undefined || code === '') &&
    typeof message === 'string' &&
    /not queryable|timed out|timeout exceeded|Query read timeout/i.test(message)
  )
}

/** A short, password-free description of an error for topology() and events. */
export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code
    return redact(typeof code === 'string' ? `${code}: ${err.message}` : err.message)
  }
  return redact(String(err))
}
