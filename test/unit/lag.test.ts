import { describe, expect, it } from 'vitest'
import { completeSince, computeLag, isLagKnown, isOverLag } from '../../src/health/lag.js'

// Pure inputs: every clock value is given, so nothing here depends on the time the test runs.
const NOW = 1_700_000_000_000

describe('computeLag', () => {
  it('is 0 bytes and 0 ms when the replica has replayed everything the primary wrote', () => {
    const lag = computeLag(
      { replayLsn: 5000n, replayTimestampMs: NOW - 60_000, replicaNowMs: NOW },
      5000n,
      null,
      NOW,
    )
    expect(lag).toEqual({ lagBytes: 0, lagMs: 0, caughtUp: true, ahead: false })
  })

  it('does not count an idle primary as lag: an old last-replay timestamp alone is not lag', () => {
    // Nothing written for an hour: the replay timestamp is an hour old, the replica has everything.
    const lag = computeLag(
      { replayLsn: 9000n, replayTimestampMs: NOW - 3_600_000, replicaNowMs: NOW },
      9000n,
      NOW - 3_600_000,
      NOW,
    )
    expect(lag.lagMs).toBe(0)
    expect(lag.caughtUp).toBe(true)
  })

  it('behind: the age of the last replayed transaction when it is the smaller bound', () => {
    const lag = computeLag(
      { replayLsn: 100n, replayTimestampMs: NOW - 1_000, replicaNowMs: NOW },
      150n,
      NOW - 10_000,
      NOW,
    )
    expect(lag).toEqual({ lagBytes: 50, lagMs: 1_000, caughtUp: false, ahead: false })
  })

  it('behind after an idle period: capped by the time since the replica was last caught up', () => {
    // The last replayed commit is an hour old (idle primary), then a write arrives 200 ms ago.
    const lag = computeLag(
      { replayLsn: 100n, replayTimestampMs: NOW - 3_600_000, replicaNowMs: NOW },
      400n,
      NOW - 200,
      NOW,
    )
    expect(lag).toEqual({ lagBytes: 300, lagMs: 200, caughtUp: false, ahead: false })
  })

  it('behind, never seen caught up: the replay age', () => {
    const lag = computeLag(
      { replayLsn: 1n, replayTimestampMs: NOW - 2_500, replicaNowMs: NOW },
      2n,
      null,
      NOW,
    )
    expect(lag).toEqual({ lagBytes: 1, lagMs: 2_500, caughtUp: false, ahead: false })
  })

  it('uses the heartbeat row instead of the replay timestamp when there is one', () => {
    const lag = computeLag(
      { replayLsn: 100n, replayTimestampMs: NOW - 50_000, replicaNowMs: NOW, heartbeatMs: NOW - 700 },
      200n,
      null,
      NOW,
    )
    expect(lag.lagMs).toBe(700)
    // A null heartbeat falls back to the replay timestamp.
    const fallback = computeLag(
      { replayLsn: 100n, replayTimestampMs: NOW - 900, replicaNowMs: NOW, heartbeatMs: null },
      200n,
      null,
      NOW,
    )
    expect(fallback.lagMs).toBe(900)
  })

  it('a replica ahead of the primary is not clamped to 0: negative bytes, flagged ahead, no time lag', () => {
    // The abandoned-timeline case measured in issue 14: replica 0/5090028, new primary 0/5035F28.
    const ahead = computeLag(
      { replayLsn: 0x5090028n, replayTimestampMs: NOW, replicaNowMs: NOW },
      0x5035f28n,
      NOW - 100,
      NOW,
    )
    expect(ahead).toEqual({ lagBytes: -(0x5090028 - 0x5035f28), lagMs: null, caughtUp: false, ahead: true })
    // Replica clock behind the primary's commit timestamps: the age would be negative.
    const skew = computeLag(
      { replayLsn: 100n, replayTimestampMs: NOW + 5_000, replicaNowMs: NOW },
      200n,
      null,
      NOW,
    )
    expect(skew.lagMs).toBe(0)
    expect(skew.lagBytes).toBe(100)
  })

  it('null positions give unknown lag, not zero', () => {
    const noReplay = computeLag(
      { replayLsn: null, replayTimestampMs: null, replicaNowMs: NOW },
      100n,
      null,
      NOW,
    )
    expect(noReplay).toEqual({ lagBytes: null, lagMs: null, caughtUp: false, ahead: false })
    const noPrimary = computeLag(
      { replayLsn: 100n, replayTimestampMs: NOW, replicaNowMs: NOW },
      null,
      null,
      NOW,
    )
    expect(noPrimary).toEqual({ lagBytes: null, lagMs: null, caughtUp: false, ahead: false })
    // Bytes known, but no replay timestamp and never caught up: time lag unknown.
    const noTime = computeLag(
      { replayLsn: 100n, replayTimestampMs: null, replicaNowMs: NOW },
      300n,
      null,
      NOW,
    )
    expect(noTime).toEqual({ lagBytes: 200, lagMs: null, caughtUp: false, ahead: false })
    // No replay timestamp, but seen caught up 300 ms ago: that bounds it.
    const sinceCaughtUp = computeLag(
      { replayLsn: 100n, replayTimestampMs: null, replicaNowMs: NOW },
      300n,
      NOW - 300,
      NOW,
    )
    expect(sinceCaughtUp.lagMs).toBe(300)
  })

  it('handles LSNs beyond 32 bits', () => {
    const lag = computeLag(
      { replayLsn: 0x16_0000_0000n, replayTimestampMs: NOW, replicaNowMs: NOW },
      0x16_0001_0000n,
      null,
      NOW,
    )
    expect(lag.lagBytes).toBe(0x1_0000)
  })
})

describe('isOverLag', () => {
  it('is over when either bound is exceeded', () => {
    expect(isOverLag({ lagBytes: 1025, lagMs: 0 }, { bytes: 1024, ms: 5_000 })).toBe(true)
    expect(isOverLag({ lagBytes: 0, lagMs: 5_001 }, { bytes: 1024, ms: 5_000 })).toBe(true)
  })

  it('is not over at the bound or below', () => {
    expect(isOverLag({ lagBytes: 1024, lagMs: 5_000 }, { bytes: 1024, ms: 5_000 })).toBe(false)
    expect(isOverLag({ lagBytes: 0, lagMs: 0 }, { bytes: 0, ms: 0 })).toBe(false)
  })

  it('unknown lag never bans a replica by itself', () => {
    expect(isOverLag({ lagBytes: null, lagMs: null }, { bytes: 0, ms: 0 })).toBe(false)
    expect(isOverLag({ lagBytes: null, lagMs: 10 }, { bytes: 0, ms: 5 })).toBe(true)
  })

  it('an absent bound is no bound', () => {
    expect(isOverLag({ lagBytes: 1e12, lagMs: 1e9 }, {})).toBe(false)
    expect(isOverLag({ lagBytes: 1e12, lagMs: 1 }, { ms: 10 })).toBe(false)
    expect(isOverLag({ lagBytes: 1e12, lagMs: 1 }, { bytes: 10 })).toBe(true)
  })
})

describe('completeSince', () => {
  const samples = [
    { atMs: NOW - 3_000, lsn: 100n },
    { atMs: NOW - 2_000, lsn: 200n },
    { atMs: NOW - 1_000, lsn: 300n },
  ]

  it('is the newest primary position the replica has replayed', () => {
    expect(completeSince(samples, 250n)).toBe(NOW - 2_000)
    expect(completeSince(samples, 300n)).toBe(NOW - 1_000)
    expect(completeSince(samples, 10_000n)).toBe(NOW - 1_000)
  })

  it('is null when the replica is behind every sample, or its position is unknown', () => {
    expect(completeSince(samples, 99n)).toBeNull()
    expect(completeSince(samples, null)).toBeNull()
    expect(completeSince([], 500n)).toBeNull()
  })

  it('bounds the time lag of a replica a few bytes behind the primary in its first round', () => {
    // No replay timestamp (nothing replayed since the standby started), never seen caught up:
    // the sample from discovery's probe 40 ms ago is what makes lagMs a number.
    const lag = computeLag(
      { replayLsn: 300n, replayTimestampMs: null, replicaNowMs: NOW },
      320n,
      completeSince([{ atMs: NOW - 40, lsn: 300n }], 300n),
      NOW,
    )
    expect(lag).toEqual({ lagBytes: 20, lagMs: 40, caughtUp: false, ahead: false })
  })
})

describe('isLagKnown', () => {
  it('needs bytes, and milliseconds when maxLag bounds them', () => {
    expect(isLagKnown({ lagBytes: 0, lagMs: 0 }, { bytes: 1, ms: 1 })).toBe(true)
    expect(isLagKnown({ lagBytes: 10, lagMs: null }, { bytes: 1, ms: 1 })).toBe(false)
    expect(isLagKnown({ lagBytes: 10, lagMs: null }, { bytes: 1 })).toBe(true)
    expect(isLagKnown({ lagBytes: null, lagMs: 5 }, { ms: 10 })).toBe(false)
  })
})
