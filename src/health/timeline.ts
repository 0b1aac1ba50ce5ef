/**
 * Which timeline a standby is on, and whether that lets it serve reads.
 *
 * What PostgreSQL 15 offers on a standby, measured on this project's clusters:
 *
 * - `pg_stat_wal_receiver.received_tli` with `status = 'streaming'`: the timeline the standby
 *   streams. Exact for the question that matters: a standby that replayed past the point where
 *   the primary's timeline forked off can never stream that timeline (its startup process
 *   refuses: "new timeline N forked off current database system timeline ... before current
 *   recovery point"), so streaming the primary's timeline proves its history is a prefix of the
 *   primary's. NULL when the receiver is not streaming (exactly the standby a failover left
 *   behind) and always for a role without `pg_read_all_stats` (then only `pid` is shown).
 *   After the failed attempt to follow it showed `received_tli = 1, status = 'waiting'`, hence
 *   the status filter.
 * - `pg_control_checkpoint().timeline_id` and `pg_control_recovery().min_recovery_end_timeline`:
 *   readable by any role, one control-file read (microseconds). They name the timeline of the
 *   last restartpoint and of the last minimum-recovery-point update, so the higher of the two
 *   is a LOWER BOUND of the replay timeline: it only moves at a restartpoint (checkpoint_timeout,
 *   5 min by default), a buffer flush, or pg_rewind (which writes the new one). Measured: a
 *   standby that followed a promotion without a restart still showed the old timeline 7 s later;
 *   right after pg_rewind it showed the new one.
 * - The replay timeline itself (`IDENTIFY_SYSTEM` on a replication connection) needs the
 *   REPLICATION attribute and a second connection; the primary's history file needs
 *   `pg_read_server_files`. Neither is worth a second round trip per probe.
 *
 * So: an exact timeline equal to the primary's is current. A lower bound equal to the primary's
 * is current only when no newer timeline has been seen in this process: a standby can only have
 * moved past its bound by following a promotion, and a promotion to a timeline above the
 * primary's means the primary is on an older one (an HA manager re-elected a stale leader).
 * A timeline above the primary's (exact or bound) holds WAL the primary never had: diverged.
 * Below it: not readable (waiting to switch, or diverged without proof yet).
 */
export type TimelineVerdict = 'current' | 'older' | 'newer' | 'unknown'

export interface ReplicaTimeline {
  /** The timeline, or null when nothing told it. */
  timeline: number | null
  /** True for the streaming receiver's timeline; false for the control file's lower bound. */
  exact: boolean
}

/** The standby's timeline from the probe's two sources (see the module comment). */
export function replicaTimeline(receivedTli: number | null, controlTli: number | null): ReplicaTimeline {
  if (receivedTli !== null && receivedTli > 0) return { timeline: receivedTli, exact: true }
  if (controlTli !== null && controlTli > 0) return { timeline: controlTli, exact: false }
  return { timeline: null, exact: false }
}

/**
 * How a standby's timeline compares to the primary's current one.
 *
 * ```ts
 * judgeTimeline({ timeline: 2, exact: true }, 2, 2)  // 'current'
 * judgeTimeline({ timeline: 1, exact: false }, 1, 2) // 'unknown': it may have followed timeline 2
 * ```
 */
export function judgeTimeline(
  replica: ReplicaTimeline,
  primaryTimeline: number | null,
  highestSeen: number,
): TimelineVerdict {
  if (replica.timeline === null || primaryTimeline === null) return 'unknown'
  if (replica.timeline > primaryTimeline) return 'newer'
  if (replica.timeline < primaryTimeline) return replica.exact ? 'older' : 'unknown'
  if (replica.exact) return 'current'
  return primaryTimeline >= highestSeen ? 'current' : 'unknown'
}
