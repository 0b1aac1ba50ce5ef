import pg from 'pg'
import { computeLag } from '../health/lag.js'
import { judgeTimeline, replicaTimeline, type TimelineVerdict } from '../health/timeline.js'
import { redact } from '../index.js'
import { parseLsn } from '../pools/node.js'

/** A node to ask: its connection URL and the name it is shown under. */
export interface StatusTarget {
  name: string
  url: string
  /** What the command line said it is (`--primary`/`--replica`); `'unknown'` for `--nodes`. */
  declared: 'primary' | 'replica' | 'unknown'
}

/** A row of the primary's `pg_stat_replication`: one connected standby, as the primary sees it. */
export interface ReplicationRow {
  applicationName: string | null
  clientAddr: string | null
  clientPort: number | null
  /** `startup`, `catchup`, `streaming`, `backup`, `stopping`. */
  state: string | null
  /** `async`, `potential`, `sync`, `quorum`. */
  syncState: string | null
  replayLsn: string | null
  /** PostgreSQL's own `replay_lag`; null once the standby has caught up and the primary is idle. */
  replayLagMs: number | null
  /** The slot the standby streams through, when it uses one. */
  slotName: string | null
}

/** What one node told (or why it told nothing). */
export interface NodeStatus {
  name: string
  /** The URL given, password redacted. */
  url: string
  host: string
  port: number
  declared: StatusTarget['declared']
  health: 'up' | 'down'
  /** Why the node is down (password-free). */
  error: string | null
  role: 'primary' | 'replica' | null
  /**
   * A primary's timeline; a replica's as pgsplit's monitor reads it (src/health/timeline.ts):
   * the streaming receiver's (exact) or the control file's lower bound.
   */
  timeline: number | null
  /** Replica: true when `timeline` is the streaming receiver's, false for the lower bound. */
  timelineExact: boolean | null
  /**
   * Replica: its timeline against the primary's. `newer`, or `lagBytes` below 0, means WAL the
   * primary does not have (a standby left on an abandoned timeline): pgsplit sends it no reads.
   */
  timelineVerdict: TimelineVerdict | null
  /** Primary: `pg_current_wal_lsn()`; replica: `pg_last_wal_replay_lsn()`. */
  lsn: string | null
  /** Replica: `pg_last_wal_receive_lsn()`. */
  receiveLsn: string | null
  /**
   * Primary's LSN minus this replica's replay LSN (0 when caught up; null without a primary).
   * Negative, never clamped: the replica replayed WAL the primary does not have.
   */
  lagBytes: number | null
  /** 0 when caught up; else the age of the last replayed transaction (see the README, 'The `pgsplit status` command'). */
  lagMs: number | null
  replayPaused: boolean | null
  /** Replica: where its WAL receiver streams from (`sender_host:sender_port`). */
  upstream: string | null
  /** Replica: `pg_stat_wal_receiver.status` (`streaming`, ...); null when no receiver runs. */
  receiverStatus: string | null
  /** Replica: the primary's `pg_stat_replication` row for it, when one matched. */
  replication: (ReplicationRow & { matchedBy: 'slot' | 'application_name' }) | null
  serverVersion: string | null
  latencyMs: number | null
}

export interface StatusReport {
  /** ISO time the round started. */
  at: string
  /** Name of the primary the lag is measured against (the highest timeline among writable nodes). */
  primary: string | null
  /** Every node that answered as writable: more than one is a split brain. */
  writable: string[]
  nodes: NodeStatus[]
  /** Rows of the primary's `pg_stat_replication` that matched none of the given nodes. */
  otherStandbys: ReplicationRow[]
}

export interface StatusOptions {
  /** Bound of each node's connect + queries. Default 3000. */
  timeoutMs?: number
  /**
   * `--watch`: the last time (ms, local clock) each replica was seen caught up, by name. Caps the
   * time lag the same way pgsplit's monitor does; the function updates it.
   */
  caughtUpAt?: Map<string, number>
}

interface ProbeRow {
  in_recovery: boolean
  version: string
  wal_lsn: string | null
  timeline: number | null
  received_tli: number | null
  control_tli: number | null
  replay_lsn: string | null
  receive_lsn: string | null
  replay_ts: number | null
  now_ms: number
  paused: boolean
  receiver_status: string | null
  sender_host: string | null
  sender_port: number | null
  conninfo: string | null
  slot_name: string | null
}

// One round trip, the same questions as pgsplit's monitor (src/health/probe.ts). The CASEs keep
// primary-only functions from running on a standby, where they raise. A primary's timeline comes
// from its WAL file name: pg_control_checkpoint() lags a promotion until the next checkpoint.
const PROBE_SQL = `/* pgsplit status */ SELECT s.r AS in_recovery,
  current_setting('server_version') AS version,
  CASE WHEN s.r THEN NULL ELSE pg_current_wal_lsn()::text END AS wal_lsn,
  CASE WHEN s.r THEN NULL
       ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END AS timeline,
  CASE WHEN s.r AND w.status = 'streaming' THEN w.received_tli END AS received_tli,
  CASE WHEN s.r THEN greatest((SELECT timeline_id FROM pg_control_checkpoint()),
       (SELECT min_recovery_end_timeline FROM pg_control_recovery())) END AS control_tli,
  CASE WHEN s.r THEN pg_last_wal_replay_lsn()::text END AS replay_lsn,
  CASE WHEN s.r THEN pg_last_wal_receive_lsn()::text END AS receive_lsn,
  CASE WHEN s.r THEN (extract(epoch FROM pg_last_xact_replay_timestamp()) * 1000)::float8 END AS replay_ts,
  (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS now_ms,
  CASE WHEN s.r THEN pg_is_wal_replay_paused() ELSE false END AS paused,
  w.status AS receiver_status, w.sender_host, w.sender_port, w.conninfo, w.slot_name
FROM (SELECT pg_is_in_recovery() AS r) s LEFT JOIN pg_stat_wal_receiver w ON true`

// The walsender's slot (pg_replication_slots.active_pid = pg_stat_replication.pid) names a standby
// exactly; application_name is only a hint (defaults to 'walreceiver' for every standby).
const REPLICATION_SQL = `/* pgsplit status */ SELECT r.application_name, r.client_addr::text AS client_addr,
  r.client_port, r.state, r.sync_state, r.replay_lsn::text AS replay_lsn,
  (extract(epoch FROM r.replay_lag) * 1000)::float8 AS replay_lag_ms, sl.slot_name
FROM pg_stat_replication r LEFT JOIN pg_replication_slots sl ON sl.active_pid = r.pid
ORDER BY r.application_name, r.client_port`

interface ReplicationSqlRow {
  application_name: string | null
  client_addr: string | null
  client_port: number | null
  state: string | null
  sync_state: string | null
  replay_lsn: string | null
  replay_lag_ms: number | null
  slot_name: string | null
}

interface Probed {
  target: StatusTarget
  row: ProbeRow | null
  replication: ReplicationRow[] | null
  error: string | null
  latencyMs: number | null
  /** Still open after a good probe: a primary's LSN is read again once every replica answered. */
  client: pg.Client | null
}

function numberOrNull(v: number | string | null): number | null {
  return v === null ? null : Number(v)
}

/** Host and port of a URL for display; the URL itself is only ever shown redacted. */
function addressOf(url: string): { host: string; port: number } {
  try {
    const u = new URL(url)
    const host =
      decodeURIComponent(u.hostname).replace(/^\[|\]$/g, '') || u.searchParams.get('host') || 'localhost'
    const port = u.port !== '' ? Number(u.port) : Number(u.searchParams.get('port') ?? 5432)
    return { host, port: Number.isFinite(port) ? port : 5432 }
  } catch {
    return { host: '?', port: 0 }
  }
}

/** The name a URL is shown under by default: `host:port`, as pgsplit names nodes. */
export function defaultNodeName(url: string): string {
  const { host, port } = addressOf(url)
  return `${host}:${port}`
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code
    const text = err.message === '' && err instanceof AggregateError ? String(err.errors[0]) : err.message
    return redact(typeof code === 'string' ? `${code}: ${text}` : text)
  }
  return redact(String(err))
}

interface DestroyableClient {
  connection?: { stream?: { destroy(): void } }
}

/** Closes a client's socket at once: `end()` would wait on a peer that does not answer. */
function destroy(client: pg.Client): void {
  try {
    ;(client as unknown as DestroyableClient).connection?.stream?.destroy()
  } catch {
    // already closed
  }
  client.end().catch(() => undefined)
}

async function probe(target: StatusTarget, timeoutMs: number): Promise<Probed> {
  const started = performance.now()
  const client = new pg.Client({
    connectionString: target.url,
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
    application_name: 'pgsplit-status',
  })
  // A socket error after the deadline must not crash the command.
  client.on('error', () => undefined)
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      destroy(client)
      reject(new Error(`no answer within ${timeoutMs} ms`))
    }, timeoutMs)
  })
  const work = (async () => {
    await client.connect()
    const row = (await client.query<ProbeRow>(PROBE_SQL)).rows[0] ?? null
    let replication: ReplicationRow[] | null = null
    if (row !== null && !row.in_recovery) {
      replication = (await client.query<ReplicationSqlRow>(REPLICATION_SQL)).rows.map((r) => ({
        applicationName: r.application_name,
        clientAddr: r.client_addr,
        clientPort: r.client_port,
        state: r.state,
        syncState: r.sync_state,
        replayLsn: r.replay_lsn,
        replayLagMs: r.replay_lag_ms === null ? null : Math.round(r.replay_lag_ms),
        slotName: r.slot_name,
      }))
    }
    return { row, replication }
  })()
  try {
    const { row, replication } = await Promise.race([work, deadline])
    const latencyMs = Math.round((performance.now() - started) * 10) / 10
    return { target, row, replication, error: null, latencyMs, client }
  } catch (err) {
    work.catch(() => undefined)
    destroy(client)
    return { target, row: null, replication: null, error: describe(err), latencyMs: null, client: null }
  } finally {
    clearTimeout(timer)
  }
}

/** The primary's LSN again, after the replicas' replay LSNs were read: lag is then never understated. */
async function rereadPrimaryLsn(p: Probed, timeoutMs: number): Promise<void> {
  if (p.client === null || p.row === null) return
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('timeout')), timeoutMs)
  })
  const work = p.client.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')
  try {
    const res = await Promise.race([work, deadline])
    p.row.wal_lsn = res.rows[0]?.lsn ?? p.row.wal_lsn
  } catch {
    // Keep the first reading: only slightly less accurate.
    work.catch(() => undefined)
  } finally {
    clearTimeout(timer)
  }
}

/** `application_name` (or its fallback) from a WAL receiver's obfuscated conninfo. */
function receiverApplicationName(conninfo: string | null): string | null {
  if (conninfo === null) return null
  const own = /(?:^|\s)application_name=('(?:[^'\\]|\\.)*'|\S+)/.exec(conninfo)
  const fallback = /(?:^|\s)fallback_application_name=('(?:[^'\\]|\\.)*'|\S+)/.exec(conninfo)
  const value = own?.[1] ?? fallback?.[1]
  if (value === undefined) return null
  return value.startsWith("'") ? value.slice(1, -1).replace(/\\(.)/g, '$1') : value
}

/**
 * Asks every node, in parallel and each within `timeoutMs`, for its role, timeline, LSNs and
 * replay state, and the primary for `pg_stat_replication`. Never throws for a node that fails:
 * it is reported `down` with the reason.
 *
 * ```ts
 * const report = await collectStatus([{ name: 'a', url: PRIMARY_URL, declared: 'primary' }])
 * console.log(formatStatus(report))
 * ```
 */
export async function collectStatus(
  targets: StatusTarget[],
  options: StatusOptions = {},
): Promise<StatusReport> {
  const timeoutMs = options.timeoutMs ?? 3000
  const at = new Date().toISOString()
  const probed = await Promise.all(targets.map((t) => probe(t, timeoutMs)))
  const writable = probed.filter((p) => p.row !== null && !p.row.in_recovery)
  try {
    // Replicas first, primary second (as pgsplit's monitor): nodes are asked in parallel, and a
    // replica read after the primary could look ahead of it.
    await Promise.all(writable.map((p) => rereadPrimaryLsn(p, timeoutMs)))
  } finally {
    for (const p of probed) if (p.client !== null) destroy(p.client)
  }
  const localNow = Date.now()

  // Two writable nodes (a split brain): lag is measured against the newest timeline.
  const primary =
    writable.length === 0
      ? null
      : writable.reduce((best, p) => ((p.row?.timeline ?? 0) > (best.row?.timeline ?? 0) ? p : best))
  const primaryLsn = parseLsn(primary?.row?.wal_lsn ?? null)
  const rows = primary?.replication ?? []

  // Match replicas to the primary's pg_stat_replication rows: by slot first (exact), then by an
  // application_name that exactly one row and one replica carry.
  const used = new Set<ReplicationRow>()
  const matches = new Map<Probed, NodeStatus['replication']>()
  const replicas = probed.filter((p) => p.row?.in_recovery === true)
  for (const p of replicas) {
    const slot = p.row?.slot_name ?? null
    const row = slot === null ? undefined : rows.find((r) => r.slotName === slot && !used.has(r))
    if (row !== undefined) {
      used.add(row)
      matches.set(p, { ...row, matchedBy: 'slot' })
    }
  }
  for (const p of replicas) {
    if (matches.has(p)) continue
    const app = receiverApplicationName(p.row?.conninfo ?? null)
    if (app === null) continue
    const sameName = replicas.filter((o) => receiverApplicationName(o.row?.conninfo ?? null) === app)
    const candidates = rows.filter((r) => r.applicationName === app && !used.has(r))
    if (sameName.length === 1 && candidates.length === 1 && candidates[0] !== undefined) {
      used.add(candidates[0])
      matches.set(p, { ...candidates[0], matchedBy: 'application_name' })
    }
  }

  const nodes = probed.map((p): NodeStatus => {
    const { host, port } = addressOf(p.target.url)
    const base: NodeStatus = {
      name: p.target.name,
      url: redact(p.target.url),
      host,
      port,
      declared: p.target.declared,
      health: p.row === null ? 'down' : 'up',
      error: p.error,
      role: null,
      timeline: null,
      timelineExact: null,
      timelineVerdict: null,
      lsn: null,
      receiveLsn: null,
      lagBytes: null,
      lagMs: null,
      replayPaused: null,
      upstream: null,
      receiverStatus: null,
      replication: null,
      serverVersion: null,
      latencyMs: p.latencyMs,
    }
    const row = p.row
    if (row === null) return base
    base.serverVersion = row.version
    if (!row.in_recovery) {
      base.role = 'primary'
      base.timeline = row.timeline === null ? null : Number(row.timeline)
      base.lsn = row.wal_lsn
      return base
    }
    base.role = 'replica'
    const tl = replicaTimeline(numberOrNull(row.received_tli), numberOrNull(row.control_tli))
    base.timeline = tl.timeline
    base.timelineExact = tl.timeline === null ? null : tl.exact
    const primaryTl = primary?.row?.timeline ?? null
    const highestSeen = Math.max(0, ...writable.map((w) => Number(w.row?.timeline ?? 0)))
    base.timelineVerdict = judgeTimeline(tl, primaryTl === null ? null : Number(primaryTl), highestSeen)
    base.lsn = row.replay_lsn
    base.receiveLsn = row.receive_lsn
    base.replayPaused = row.paused
    base.receiverStatus = row.receiver_status
    base.upstream = row.sender_host === null ? null : `${row.sender_host}:${row.sender_port ?? '?'}`
    base.replication = matches.get(p) ?? null
    // The monitor's rule (src/health/lag.ts): a negative difference stays negative.
    const lag = computeLag(
      {
        replayLsn: parseLsn(row.replay_lsn),
        replayTimestampMs: row.replay_ts,
        replicaNowMs: row.now_ms,
      },
      primaryLsn,
      options.caughtUpAt?.get(p.target.name) ?? null,
      localNow,
    )
    base.lagBytes = lag.lagBytes
    base.lagMs = lag.lagMs
    if (lag.caughtUp) options.caughtUpAt?.set(p.target.name, localNow)
    return base
  })

  return {
    at,
    primary: primary?.target.name ?? null,
    writable: writable.map((p) => p.target.name),
    nodes,
    otherStandbys: rows.filter((r) => !used.has(r)),
  }
}

function formatBytes(n: number | null): string {
  if (n === null) return '-'
  if (n < 0) return `ahead ${formatBytes(-n)}`
  if (n < 1024) return `${n} B`
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`
  return `${(n / 1024 / 1024).toFixed(1)} MiB`
}

function cell(value: string | number | boolean | null): string {
  if (value === null) return '-'
  if (typeof value === 'boolean') return value ? 'yes' : 'no'
  return String(value)
}

/** Left-aligned columns, two spaces apart. */
export function renderTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd()
  return [line(header), ...rows.map(line)].join('\n')
}

/** The human-readable form of a report: one row per node, then errors and unmatched standbys. */
export function formatStatus(report: StatusReport): string {
  const header = [
    'NODE',
    'HEALTH',
    'ROLE',
    'TL',
    'LSN',
    'LAG',
    'LAG MS',
    'PAUSED',
    'UPSTREAM',
    'REPL STATE',
    'SYNC',
  ]
  const rows = report.nodes.map((n) => [
    n.name,
    n.health,
    n.role ?? '-',
    // A replica's timeline from the control file is a lower bound (see NodeStatus.timeline).
    n.timelineExact === false ? `>=${n.timeline}` : cell(n.timeline),
    cell(n.lsn),
    n.role === 'replica' ? formatBytes(n.lagBytes) : '-',
    // '?': behind, but no replayed transaction yet to date the lag from.
    n.role === 'replica' ? (n.lagMs === null && n.lagBytes !== null ? '?' : cell(n.lagMs)) : '-',
    n.role === 'replica' ? cell(n.replayPaused) : '-',
    n.role === 'replica' ? cell(n.upstream) : '-',
    n.role === 'replica' ? (n.replication?.state ?? 'not in pg_stat_replication') : '-',
    n.role === 'replica' ? (n.replication?.syncState ?? '-') : '-',
  ])
  const out = [renderTable(header, rows)]
  const notes: string[] = []
  if (report.primary === null) notes.push('no primary answered')
  if (report.writable.length > 1) {
    notes.push(
      `more than one writable node (split brain?): ${report.writable.join(', ')}; lag is against ${report.primary}`,
    )
  }
  for (const n of report.nodes) {
    if (n.error !== null) notes.push(`${n.name}: ${n.error}`)
    if (n.timelineVerdict === 'newer' || (n.lagBytes !== null && n.lagBytes < 0)) {
      notes.push(
        `${n.name}: holds WAL the primary does not have (${n.lagBytes !== null && n.lagBytes < 0 ? `${-n.lagBytes} bytes ahead` : `timeline ${n.timeline} above the primary's`}): left on an abandoned timeline? pgsplit sends it no reads`,
      )
    }
    if (n.declared !== 'unknown' && n.role !== null && n.declared !== n.role) {
      notes.push(`${n.name}: given as ${n.declared}, answers as ${n.role}`)
    }
  }
  for (const r of report.otherStandbys) {
    notes.push(
      `standby not among the given nodes: ${r.applicationName ?? '?'} from ${r.clientAddr ?? '?'}:${r.clientPort ?? '?'} (${r.state ?? '?'}, ${r.syncState ?? '?'})`,
    )
  }
  if (notes.length > 0) out.push('', ...notes.map((n) => `! ${n}`))
  return out.join('\n')
}
