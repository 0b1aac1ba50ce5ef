import type { MaxLag } from '../config.js'

/** What a replica's probe told about its replay position (its own clock for timestamps). */
export interface ReplicaPosition {
  replayLsn: bigint | null
  /** `pg_last_xact_replay_timestamp()` in epoch ms, replica clock. */
  replayTimestampMs: number | null
  /** `clock_timestamp()` at the probe, replica clock. */
  replicaNowMs: number
  /** Heartbeat row as replayed on the replica, epoch ms (primary clock), if enabled. */
  heartbeatMs?: number | null
}

export interface Lag {
  lagBytes: number | null
  lagMs: number | null
  caughtUp: boolean
}

/**
 * Byte and time lag of a replica.
 *
 * - Bytes: primary `pg_current_wal_lsn()` minus the replica's replay LSN. The replica is
 *   probed first and the primary second, so a healthy replica never shows a negative lag;
 *   anything below zero (the primary moved) is clamped to 0.
 * - Milliseconds: 0 when the replica has replayed all the primary has written. Otherwise the
 *   age of its last replayed transaction, which alone is wrong after an idle period (it keeps
 *   growing while nothing is written), so it is capped by the time since the replica was last
 *   seen caught up: everything it has not replayed was written after that moment.
 *
 * ```ts
 * computeLag({ replayLsn: 100n, replayTimestampMs: 0, replicaNowMs: 60_000 }, 150n, 59_000, 60_000)
 * // { lagBytes: 50, lagMs: 1000, caughtUp: false }
 * ```
 */
export function computeLag(
  replica: ReplicaPosition,
  primaryLsn: bigint | null,
  caughtUpAtMs: number | null,
  localNowMs: number,
): Lag {
  if (replica.replayLsn === null || primaryLsn === null) {
    return { lagBytes: null, lagMs: null, caughtUp: false }
  }
  const diff = primaryLsn - replica.replayLsn
  const lagBytes = diff > 0n ? Number(diff) : 0
  if (lagBytes === 0) return { lagBytes: 0, lagMs: 0, caughtUp: true }
  const bounds: number[] = []
  if (replica.heartbeatMs !== undefined && replica.heartbeatMs !== null) {
    bounds.push(replica.replicaNowMs - replica.heartbeatMs)
  } else if (replica.replayTimestampMs !== null) {
    bounds.push(replica.replicaNowMs - replica.replayTimestampMs)
  }
  if (caughtUpAtMs !== null) bounds.push(localNowMs - caughtUpAtMs)
  const lagMs = bounds.length === 0 ? null : Math.max(0, Math.round(Math.min(...bounds)))
  return { lagBytes, lagMs, caughtUp: false }
}

/** True when a known lag is beyond either bound. Unknown lag never bans a replica by itself. */
export function isOverLag(lag: { lagBytes: number | null; lagMs: number | null }, max: MaxLag): boolean {
  if (max.bytes !== undefined && lag.lagBytes !== null && lag.lagBytes > max.bytes) return true
  if (max.ms !== undefined && lag.lagMs !== null && lag.lagMs > max.ms) return true
  return false
}
