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
  /** Negative when the replica is ahead of the primary (it diverged: see {@link Lag.ahead}). */
  lagBytes: number | null
  lagMs: number | null
  caughtUp: boolean
  /** The replica has replayed WAL the primary does not have. */
  ahead: boolean
}

/** The primary's WAL position at a moment of the local clock (when the probe that read it was sent). */
export interface PositionSample {
  atMs: number
  lsn: bigint
}

/**
 * Byte and time lag of a replica.
 *
 * - Bytes: primary `pg_current_wal_lsn()` minus the replica's replay LSN. The replica is
 *   probed first and the primary second, so a replica on the primary's history is never
 *   ahead: a negative difference means it replayed WAL the primary does not have (a standby
 *   left on an abandoned timeline, a server of another history). It is returned as it is,
 *   never clamped, and flagged `ahead`.
 * - Milliseconds: 0 when the replica has replayed all the primary has written. Otherwise the
 *   age of its last replayed transaction (or heartbeat), which alone is wrong after an idle
 *   period (it keeps growing while nothing is written), so it is capped by `completeAtMs`: the
 *   latest moment at which the replica is known to have had everything the primary had
 *   written (see {@link completeSince}); everything it has not replayed was written after it.
 *
 * ```ts
 * computeLag({ replayLsn: 100n, replayTimestampMs: 0, replicaNowMs: 60_000 }, 150n, 59_000, 60_000)
 * // { lagBytes: 50, lagMs: 1000, caughtUp: false, ahead: false }
 * ```
 */
export function computeLag(
  replica: ReplicaPosition,
  primaryLsn: bigint | null,
  completeAtMs: number | null,
  localNowMs: number,
): Lag {
  if (replica.replayLsn === null || primaryLsn === null) {
    return { lagBytes: null, lagMs: null, caughtUp: false, ahead: false }
  }
  const diff = primaryLsn - replica.replayLsn
  if (diff < 0n) return { lagBytes: Number(diff), lagMs: null, caughtUp: false, ahead: true }
  const lagBytes = Number(diff)
  if (lagBytes === 0) return { lagBytes: 0, lagMs: 0, caughtUp: true, ahead: false }
  const bounds: number[] = []
  if (replica.heartbeatMs !== undefined && replica.heartbeatMs !== null) {
    bounds.push(replica.replicaNowMs - replica.heartbeatMs)
  } else if (replica.replayTimestampMs !== null) {
    bounds.push(replica.replicaNowMs - replica.replayTimestampMs)
  }
  if (completeAtMs !== null) bounds.push(localNowMs - completeAtMs)
  const lagMs = bounds.length === 0 ? null : Math.max(0, Math.round(Math.min(...bounds)))
  return { lagBytes, lagMs, caughtUp: false, ahead: false }
}

/**
 * The latest moment (local clock) at which a replica that has replayed up to `replayLsn` had
 * everything the primary had written: the newest sample of the primary's position at or below
 * `replayLsn`. `null` when it is behind every sample. With samples from earlier rounds (and from
 * discovery's probe), a replica a few bytes behind the position of this round's primary probe
 * still has a measured time lag, in the very first round too.
 *
 * ```ts
 * completeSince([{ atMs: 1000, lsn: 10n }, { atMs: 2000, lsn: 20n }], 15n) // 1000
 * ```
 */
export function completeSince(samples: readonly PositionSample[], replayLsn: bigint | null): number | null {
  if (replayLsn === null) return null
  let best: number | null = null
  for (const s of samples) {
    if (s.lsn <= replayLsn && (best === null || s.atMs > best)) best = s.atMs
  }
  return best
}

/** True when a known lag is beyond either bound. Unknown lag is not "over": eligibility asks for a known one. */
export function isOverLag(lag: { lagBytes: number | null; lagMs: number | null }, max: MaxLag): boolean {
  if (max.bytes !== undefined && lag.lagBytes !== null && lag.lagBytes > max.bytes) return true
  if (max.ms !== undefined && lag.lagMs !== null && lag.lagMs > max.ms) return true
  return false
}

/** True when every bound of `max` can be checked: bytes always, milliseconds when bounded. */
export function isLagKnown(lag: { lagBytes: number | null; lagMs: number | null }, max: MaxLag): boolean {
  return lag.lagBytes !== null && (max.ms === undefined || lag.lagMs !== null)
}
