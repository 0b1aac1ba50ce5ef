/**
 * What both backends do to a node over SQL, the same whichever way its server runs (a local
 * process or a container): waits for a start, for streaming and for a promotion, replication
 * slots, WAL replay pause, re-pointing a running standby, the synchronous quorum. Each call is
 * bounded by `deadline`, a `Date.now()` value; a wait that fails names the node and adds what
 * `details` says (the end of the server log).
 */
import { type AdminTarget, queryRows, quoteIdent, quoteLiteral, withClient } from './pg-admin.js'
import { remaining, StopWaiting, type WaitOptions, waitFor } from './wait.js'

/** A node as these operations see it. */
export interface NodeTarget {
  /** `node0`, `node1`, ...: named in messages and in the TestClusterError of a failed wait. */
  readonly name: string
  /** Where admin connections to the node go (database `postgres`). */
  readonly admin: AdminTarget
  /** Added to the message of a wait on this node that fails. */
  readonly details: () => Promise<string>
}

/** A wait on `node` with the time left until `deadline`. */
export function waitOptions(node: NodeTarget, deadline: number): WaitOptions {
  return { node: node.name, timeoutMs: remaining(deadline), details: node.details }
}

/** `CREATE DATABASE database` on `node`. */
export async function createDatabase(node: NodeTarget, database: string, timeoutMs: number): Promise<void> {
  await queryRows(node.admin, timeoutMs, `CREATE DATABASE ${quoteIdent(database)}`)
}

/** A physical replication slot `slot` on `on` (reserving WAL at once), unless it exists. */
export async function ensureSlot(on: NodeTarget, slot: string, deadline: number): Promise<void> {
  await queryRows(
    on.admin,
    remaining(deadline),
    `SELECT pg_create_physical_replication_slot($1, true)
        WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`,
    [slot],
  )
}

/** Drops a slot no standby uses any more, so it does not pin WAL on `on`. Best effort. */
export async function dropSlot(on: NodeTarget, slot: string, deadline: number): Promise<void> {
  await queryRows(
    on.admin,
    remaining(deadline),
    'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active',
    [slot],
  ).catch(() => {})
}

/** A checkpoint on `node`: its control file then names its current timeline (pg_rewind reads it). */
export async function checkpoint(node: NodeTarget, deadline: number): Promise<void> {
  await queryRows(node.admin, remaining(deadline), 'CHECKPOINT')
}

/** A primary's timeline from its current WAL file name (its control file lags after promotion). */
export async function timelineOf(node: NodeTarget, deadline: number): Promise<number> {
  const [row] = await queryRows<{ tli: number }>(
    node.admin,
    remaining(deadline),
    `SELECT CASE WHEN pg_is_in_recovery()
          THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver), (SELECT timeline_id FROM pg_control_checkpoint()))
          ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
        END AS tli`,
  )
  if (!row) throw new Error(`no timeline from ${node.name}`)
  return row.tli
}

/**
 * Waits until `node` accepts connections in the role `kind` (in recovery or not). Coming up in
 * the other role ends the wait at once, as does a reason `stopIf` gives (the server exited).
 */
export async function waitAccepting(
  node: NodeTarget,
  kind: 'primary' | 'standby',
  deadline: number,
  stopIf: () => string | undefined = () => undefined,
): Promise<void> {
  const expectRecovery = kind === 'standby'
  await waitFor(`start as a ${kind} (accepting connections)`, waitOptions(node, deadline), async (note) => {
    const stop = stopIf()
    if (stop !== undefined) throw new StopWaiting(stop)
    try {
      const [row] = await queryRows<{ rec: boolean }>(
        node.admin,
        remaining(deadline),
        'SELECT pg_is_in_recovery() AS rec',
      )
      if (row?.rec !== expectRecovery) {
        throw new StopWaiting(
          `came up ${row?.rec ? 'in recovery (a standby)' : 'as a primary'}, expected a ${kind}`,
        )
      }
      return true
    } catch (err) {
      if (err instanceof StopWaiting) throw err
      note(err instanceof Error ? err.message : String(err))
      return undefined
    }
  })
}

/** How a standby's WAL receiver shows that it is connected to its upstream. */
export interface UpstreamMatch {
  /** The column of pg_stat_wal_receiver that names the upstream. */
  readonly column: 'sender_port' | 'sender_host'
  /** Its value when the receiver is connected to the upstream. */
  readonly value: number | string
  /** How the column is called in the wait's notes (`sender port`). */
  readonly label: string
}

/** What a wait for streaming needs to know besides the two nodes. */
export interface StreamingWait {
  /** The wait, as a failure names it: `streaming from node1`. */
  readonly what: string
  readonly upstream: UpstreamMatch
  /** Checked at each poll: a reason to stop waiting at once (the server is not running). */
  readonly stopIf: () => string | undefined
  /**
   * Called at each poll that does not yet see the standby streaming, with the upstream's
   * timeline; throws StopWaiting when it never will (it says why, and what to do).
   */
  readonly hopeless?: (timeline: number) => Promise<void>
}

/**
 * Waits until `node` streams from `up`: its WAL receiver is streaming, connected to `up` and on
 * `up`'s current timeline. (pg_stat_wal_receiver on the upstream can show 'streaming' for a
 * standby that cannot follow; the receiver's side is what counts.)
 */
export async function waitStreaming(
  node: NodeTarget,
  up: NodeTarget,
  deadline: number,
  how: StreamingWait,
): Promise<void> {
  const { column, value, label } = how.upstream
  await waitFor(how.what, waitOptions(node, deadline), async (note) => {
    const stop = how.stopIf()
    if (stop !== undefined) throw new StopWaiting(stop)
    const timeline = await timelineOf(up, deadline)
    const [r] = await queryRows<{
      status: string
      sender: number | string | null
      received_tli: number | null
    }>(
      node.admin,
      remaining(deadline),
      `SELECT status, ${column} AS sender, received_tli FROM pg_stat_wal_receiver`,
    )
    if (r?.status === 'streaming' && r.sender === value && r.received_tli === timeline) return true
    note(
      r
        ? `WAL receiver ${r.status}, ${label} ${r.sender}, timeline ${r.received_tli}; ${up.name} is on timeline ${timeline}`
        : `no WAL receiver; ${up.name} is on timeline ${timeline}`,
    )
    await how.hopeless?.(timeline)
    return undefined
  })
}

/**
 * Promotes standby `node` (`pg_promote`) and returns once it accepts a real write, then
 * checkpoints it: right after promotion the control file still names the old timeline, and
 * pg_rewind against this node would rewind wrongly or not at all.
 */
export async function promoteNode(node: NodeTarget, deadline: number): Promise<void> {
  const waitSeconds = Math.max(1, Math.ceil(remaining(deadline) / 1000))
  await queryRows(node.admin, remaining(deadline), 'SELECT pg_promote(true, $1)', [waitSeconds])
  await waitFor(
    'promotion (leaving recovery and accepting a write)',
    waitOptions(node, deadline),
    async (note) =>
      withClient(node.admin, remaining(deadline), async (c) => {
        const { rows } = await c.query<{ rec: boolean }>('SELECT pg_is_in_recovery() AS rec')
        if (rows[0]?.rec !== false) {
          note('still in recovery')
          return undefined
        }
        // A real write (an xid commit); local commit so it does not wait for synchronous standbys.
        await c.query('BEGIN')
        await c.query('SET LOCAL synchronous_commit = local')
        await c.query('SELECT txid_current()')
        await c.query('COMMIT')
        return true
      }),
  )
  await checkpoint(node, deadline)
}

/**
 * Points running standby `node` at another upstream: `primary_conninfo` and `primary_slot_name`
 * by ALTER SYSTEM and a reload (PG 13+ restarts the WAL receiver on it, no server restart).
 */
export async function setUpstream(
  node: NodeTarget,
  primaryConninfo: string,
  slot: string,
  deadline: number,
): Promise<void> {
  await withClient(node.admin, remaining(deadline), async (c) => {
    await c.query(`ALTER SYSTEM SET primary_conninfo = ${quoteLiteral(primaryConninfo)}`)
    await c.query(`ALTER SYSTEM SET primary_slot_name = ${quoteLiteral(slot)}`)
    await c.query('SELECT pg_reload_conf()')
  })
}

/**
 * Pauses or resumes WAL replay on standby `node` and returns once `pg_is_wal_replay_paused()`
 * agrees. From PG 14 on it is true also while the pause is only requested: replay then stops
 * before the next record, which is what callers rely on. One connection for the call and the
 * checks: tests toggle replay many times a second, and each new connection costs an
 * authentication on a busy machine.
 */
export async function setReplayPaused(node: NodeTarget, paused: boolean, deadline: number): Promise<void> {
  await withClient(node.admin, remaining(deadline), async (c) => {
    await c.query(paused ? 'SELECT pg_wal_replay_pause()' : 'SELECT pg_wal_replay_resume()')
    await waitFor(
      paused ? 'pause of WAL replay' : 'resume of WAL replay',
      waitOptions(node, deadline),
      async (note) => {
        let row: { paused: boolean } | undefined
        try {
          row = (await c.query<{ paused: boolean }>('SELECT pg_is_wal_replay_paused() AS paused')).rows[0]
        } catch (err) {
          // This connection is gone (the server stopped): polling it again cannot help.
          throw new StopWaiting(err instanceof Error ? err.message : String(err))
        }
        note(`pg_is_wal_replay_paused() = ${row?.paused}`)
        return row?.paused === paused ? true : undefined
      },
    )
  })
}

/** A wait for enough synchronous standbys after setting synchronous_standby_names. */
export interface SynchronousWait {
  readonly count: number
  /** The wait, as a failure names it. */
  readonly what: string
}

/**
 * Sets `synchronous_standby_names` on `primary` to `value` (ALTER SYSTEM and a reload). With
 * `wait`, returns once `wait.count` standbys are synchronous (`sync` or `quorum`) in its
 * pg_stat_replication; the wait is called `wait.what`.
 */
export async function setSynchronousStandbyNames(
  primary: NodeTarget,
  value: string,
  deadline: number,
  wait?: SynchronousWait,
): Promise<void> {
  await withClient(primary.admin, remaining(deadline), async (c) => {
    await c.query(`ALTER SYSTEM SET synchronous_standby_names = ${quoteLiteral(value)}`)
    await c.query('SELECT pg_reload_conf()')
  })
  if (!wait) return
  await waitFor(wait.what, waitOptions(primary, deadline), async (note) => {
    const [row] = await queryRows<{ n: number }>(
      primary.admin,
      remaining(deadline),
      `SELECT count(*)::int AS n FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')`,
    )
    note(`${row?.n ?? 0} synchronous standbys in pg_stat_replication`)
    return (row?.n ?? 0) >= wait.count ? true : undefined
  })
}

/** The files `pg_backup_stop` returns, for the copy's `backup_label` and `tablespace_map`. */
export interface BackupFiles {
  readonly labelfile: string
  /** Empty when the source has no tablespaces. */
  readonly spcmapfile: string
}

/**
 * A base backup of `node` through the low-level API, for when there is no `pg_basebackup`:
 * `pg_backup_start(label, true)` (an immediate checkpoint), `copy()` of the data directory while
 * the backup runs, `pg_backup_stop(false)` (no wait for archiving, which is off). Before
 * PostgreSQL 15 the functions are `pg_start_backup` / `pg_stop_backup` (non-exclusive). The
 * backup is tied to this one session: it must stay open until the stop, and a session that ends
 * early aborts it.
 */
export async function lowLevelBaseBackup(
  node: NodeTarget,
  label: string,
  deadline: number,
  copy: () => Promise<void>,
): Promise<BackupFiles> {
  return withClient(node.admin, remaining(deadline), async (c) => {
    const { rows } = await c.query<{ v: number }>(`SELECT current_setting('server_version_num')::int AS v`)
    const modern = (rows[0]?.v ?? 0) >= 150_000
    await c.query(modern ? 'SELECT pg_backup_start($1, true)' : 'SELECT pg_start_backup($1, true, false)', [
      label,
    ])
    await copy()
    const stop = await c.query<BackupFiles>(
      modern
        ? 'SELECT labelfile, spcmapfile FROM pg_backup_stop(false)'
        : 'SELECT labelfile, spcmapfile FROM pg_stop_backup(false, false)',
    )
    const files = stop.rows[0]
    if (!files?.labelfile) throw new Error(`${node.name}: the backup's stop returned no backup_label`)
    return { labelfile: files.labelfile, spcmapfile: files.spcmapfile ?? '' }
  })
}
