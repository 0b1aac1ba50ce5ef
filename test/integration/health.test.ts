import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import {
  type Cluster,
  type ClusterConfig,
  createCluster,
  type NodeSnapshot,
  NoReplicaAvailableError,
} from '../../src/index.js'
import { type FaultProxy, startCluster, startFaultProxy, type TestCluster } from '../../src/testing/index.js'
import { nodeName, type Recorded, recordEvents, until } from '../support/cluster.js'
import { adminQuery as direct, sleep } from '../support/reliability.js'

// Issue 4: health and lag, on one real cluster (a primary and two streaming replicas) shared by
// the tests of this file. Each test makes its own Cluster and leaves the servers as it found them.

const PASSWORD = 'h3alth-Secret-pw'
const INTERVAL = 200

let pgc: TestCluster
let dbs: Cluster[] = []
let proxies: FaultProxy[] = []

const url = (i: number) => pgc.nodes[i]!.url
const port = (i: number) => pgc.nodes[i]!.port

const record = (db: Cluster): Recorded[] =>
  recordEvents(db, [
    'nodeDown',
    'nodeUp',
    'replicaLagging',
    'replicaCaughtUp',
    'primaryLost',
    'failover',
    'readRetried',
  ])

function eventFor(list: Recorded[], name: string, node: string, after = 0): Recorded | undefined {
  return list.find((e) => e.name === name && e.payload.node === node && e.at >= after)
}

function makeDb(config: Partial<ClusterConfig> = {}): Cluster {
  const db = createCluster({
    primary: url(0),
    replicas: [url(1), url(2)],
    ...config,
    healthCheck: { intervalMs: INTERVAL, timeoutMs: 1_000, maxBackoffMs: 1_000, ...config.healthCheck },
  })
  dbs.push(db)
  return db
}

async function servedBy(db: Cluster, sql = 'SELECT inet_server_port() AS port'): Promise<number> {
  const { rows } = await db.query<{ port: number }>(sql)
  return Number(rows[0]!.port)
}

/** `n` reads, `concurrency` at a time; returns how many each server port answered. */
async function readPorts(db: Cluster, n: number, concurrency = 1): Promise<Map<number, number>> {
  const counts = new Map<number, number>()
  let next = 0
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) {
        next++
        const p = await servedBy(db)
        counts.set(p, (counts.get(p) ?? 0) + 1)
      }
    }),
  )
  return counts
}

function snapshotOf(db: Cluster, name: string): NodeSnapshot {
  const node = db.topology().nodes.find((n) => n.name === name)
  if (node === undefined) throw new Error(`no node ${name} in topology`)
  return node
}

/** Replicas replay everything the primary has written (so each test starts from caught-up replicas). */
async function replicasCaughtUp(): Promise<void> {
  await until(
    'replicas caught up',
    async () => {
      const [p] = await direct<{ lsn: string }>(url(0), 'SELECT pg_current_wal_lsn()::text AS lsn')
      for (const i of [1, 2]) {
        const [r] = await direct<{ behind: string }>(
          url(i),
          'SELECT pg_wal_lsn_diff($1::pg_lsn, pg_last_wal_replay_lsn())::text AS behind',
          [p!.lsn],
        )
        if (Number(r!.behind) > 0) return false
      }
      return true
    },
    20_000,
  )
}

beforeAll(async () => {
  pgc = await startCluster({ backend: 'local', replicas: 2, password: PASSWORD })
  await direct(url(0), 'CREATE TABLE t (id bigserial PRIMARY KEY, v text NOT NULL)')
})

afterEach(async () => {
  await Promise.all(dbs.map((db) => db.end()))
  dbs = []
  await Promise.all(proxies.map((p) => p.close()))
  proxies = []
})

afterAll(async () => {
  await pgc?.destroy()
})

describe('health and lag', () => {
  it('ready() resolves after a full round; topology() shows every field and no password', async () => {
    const db = makeDb()
    await db.ready()
    const topo = db.topology()
    expect(topo.primary).toBe(nodeName(port(0)))
    expect(topo.timeline).toBe(1)
    expect(topo.searching).toBe(false)
    expect(topo.nodes.map((n) => [n.name, n.role, n.state])).toEqual([
      [nodeName(port(0)), 'primary', 'up'],
      [nodeName(port(1)), 'replica', 'up'],
      [nodeName(port(2)), 'replica', 'up'],
    ])
    for (const n of topo.nodes) {
      expect(n.host).toBe('127.0.0.1')
      expect(typeof n.port).toBe('number')
      expect(n.database).toBe('app')
      // ready() waits until every reachable replica is measured: lag known, timeline checked.
      expect(n.measured).toBe(true)
      expect(n.noReads).toBe(n.role === 'primary' ? 'not-replica' : null)
      expect(n.diverged).toBe(false)
      expect(n.foreign).toBe(false)
      expect(n.duplicateOf).toBeNull()
      expect(n.systemIdentifier).toMatch(/^[0-9]+$/)
      expect(n.lastProbeAt).not.toBeNull()
      expect(Date.parse(n.lastProbeAt!)).toBeLessThanOrEqual(Date.now())
      expect(typeof n.lastProbeLatencyMs).toBe('number')
      expect(n.lagBytes).toBeTypeOf('number')
      expect(n.lagMs).toBeTypeOf('number')
      expect(n.lagging).toBe(false)
      expect(n.fenced).toBe(false)
      expect(n.timeline).toBe(1)
      expect(n.lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/)
      expect(n.inFlight).toBe(0)
      expect(n.queries).toBe(0)
      expect(n.errors).toBe(0)
      expect(n.retries).toBe(0)
      expect(n.weight).toBe(1)
      expect(n.pool).toEqual({ total: expect.any(Number), idle: expect.any(Number), waiting: 0 })
    }
    expect(new Set(topo.nodes.map((n) => n.systemIdentifier)).size).toBe(1)
    expect(JSON.stringify(topo)).not.toContain(PASSWORD)
    // Counters move with the traffic.
    await readPorts(db, 10)
    await db.query("INSERT INTO t (v) VALUES ('ready')")
    const after = db.topology()
    expect(after.nodes[0]!.queries).toBe(1)
    expect(after.nodes[1]!.queries + after.nodes[2]!.queries).toBe(10)
  })

  it('a replica whose replay is paused stops taking reads once past maxLag, and takes them again after', async () => {
    await replicasCaughtUp()
    const maxBytes = 256 * 1024
    const db = makeDb({ maxLag: { bytes: maxBytes, ms: 60_000 } })
    const events = record(db)
    await db.ready()
    const lagging = nodeName(port(1))
    // Both replicas take reads to begin with.
    expect((await readPorts(db, 10)).get(port(1))).toBeGreaterThan(0)

    await pgc.pauseReplay(1)
    const [paused] = await direct<{ lsn: string }>(url(1), 'SELECT pg_last_wal_replay_lsn()::text AS lsn')
    let writing = true
    let written = 0
    const writer = (async () => {
      for (let i = 0; i < 2_000 && writing; i++) {
        await db.query("INSERT INTO t (v) SELECT repeat('x', 1000) FROM generate_series(1, 20)")
        written++
        await sleep(15)
      }
    })()
    try {
      // When the server-side lag passes maxLag (measured outside the library).
      const passedAt = await until(
        'lag past maxLag',
        async () => {
          const [row] = await direct<{ d: string }>(
            url(0),
            'SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::text AS d',
            [paused!.lsn],
          )
          return Number(row!.d) > maxBytes ? Date.now() : undefined
        },
        20_000,
      )
      const lagEvent = await until(
        'replicaLagging',
        () => eventFor(events, 'replicaLagging', lagging),
        10_000,
      )
      const reaction = lagEvent.at - passedAt
      console.log(
        `[health] lag passed ${maxBytes} B; replicaLagging ${reaction} ms later (interval ${INTERVAL} ms)`,
      )
      // Two probe intervals plus a probe's time; generous for a shared 2-core machine.
      expect(reaction).toBeLessThan(3_000)
      expect(lagEvent.payload.lagBytes).toBeGreaterThan(maxBytes)
      expect(snapshotOf(db, lagging).lagging).toBe(true)

      // Writes go on; no read reaches the lagging replica.
      const before = snapshotOf(db, lagging).queries
      const ports = await readPorts(db, 60, 3)
      expect(ports.get(port(1)) ?? 0).toBe(0)
      expect(snapshotOf(db, lagging).queries).toBe(before)

      const resumedAt = Date.now()
      await pgc.resumeReplay(1)
      const caughtUp = await until(
        'replicaCaughtUp',
        () => eventFor(events, 'replicaCaughtUp', lagging, resumedAt),
        15_000,
      )
      console.log(
        `[health] replicaCaughtUp ${caughtUp.at - resumedAt} ms after resume (${written} batches written)`,
      )
    } finally {
      writing = false
      await writer
      await pgc.resumeReplay(1)
    }
    expect(snapshotOf(db, lagging).lagging).toBe(false)
    expect((await readPorts(db, 20)).get(port(1))).toBeGreaterThan(0)
  })

  it('a killed replica is marked down without a failed read, and takes reads again after a restart', async () => {
    await replicasCaughtUp()
    const db = makeDb({ pool: { connectionTimeoutMillis: 2_000 } })
    const events = record(db)
    await db.ready()
    const victim = nodeName(port(2))
    await readPorts(db, 40, 4) // warm both pools
    let reading = true
    const failures: unknown[] = []
    let reads = 0
    const readers = Array.from({ length: 4 }, async () => {
      for (let i = 0; i < 100_000 && reading; i++) {
        try {
          await servedBy(db)
          reads++
        } catch (err) {
          failures.push(err)
        }
        await sleep(2)
      }
    })
    await sleep(300)
    const killedAt = Date.now()
    await pgc.kill(2)
    const down = await until('nodeDown', () => eventFor(events, 'nodeDown', victim), 10_000)
    console.log(
      `[health] killed replica marked down ${down.at - killedAt} ms after kill: ${down.payload.reason}`,
    )
    const queriesAtDown = snapshotOf(db, victim).queries
    await sleep(500)
    reading = false
    await Promise.all(readers)
    expect(failures).toEqual([])
    expect(reads).toBeGreaterThan(20)
    expect(snapshotOf(db, victim).queries).toBe(queriesAtDown)
    expect(snapshotOf(db, victim).state).toBe('down')
    const retried = events.filter((e) => e.name === 'readRetried').length
    console.log(`[health] ${reads} reads during the kill, ${retried} retried elsewhere, 0 failed`)

    const restartAt = Date.now()
    await pgc.start(2)
    const up = await until('nodeUp', () => eventFor(events, 'nodeUp', victim, restartAt), 15_000)
    console.log(`[health] restarted replica up ${up.at - restartAt} ms after start()`)
    expect(snapshotOf(db, victim).state).toBe('up')
    await until('restarted replica measured', () => snapshotOf(db, victim).noReads === null, 10_000)
    expect((await readPorts(db, 20)).get(port(2))).toBeGreaterThan(0)
  })

  it('all replicas down: reads go to the primary, or fail with NoReplicaAvailableError', async () => {
    await replicasCaughtUp()
    const toPrimary = makeDb({ onNoReplica: 'primary' })
    const strict = makeDb({ onNoReplica: 'error' })
    const eventsP = record(toPrimary)
    const eventsE = record(strict)
    await Promise.all([toPrimary.ready(), strict.ready()])
    await Promise.all([readPorts(toPrimary, 10, 2), readPorts(strict, 10, 2)])

    // One killed (its sessions may not know yet), one shut down: from the very first read after,
    // each read answers from the primary or fails typed.
    const stoppedAt = Date.now()
    await Promise.all([pgc.kill(1), pgc.stop(2)])
    let afterFailedRead = 0
    for (let i = 0; i < 30; i++) {
      expect(await servedBy(toPrimary)).toBe(port(0))
      const err = await servedBy(strict).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(NoReplicaAvailableError)
      // With a cause: the read was tried on a replica that failed (not yet known down).
      if ((err as Error).cause !== undefined) afterFailedRead++
      await sleep(10)
    }
    console.log(
      `[health] all replicas down: ${afterFailedRead} of 30 strict reads failed typed after a replica failed`,
    )
    for (const [events, label] of [
      [eventsP, 'primary'],
      [eventsE, 'error'],
    ] as const) {
      for (const i of [1, 2]) {
        await until(
          `nodeDown ${label} ${i}`,
          () => eventFor(events, 'nodeDown', nodeName(port(i)), stoppedAt),
          10_000,
        )
      }
    }
    expect((await readPorts(toPrimary, 10)).get(port(0))).toBe(10)
    expect(await toPrimary.replica.query('SELECT 1 AS one')).toMatchObject({ rows: [{ one: 1 }] })
    const err = await strict.query('SELECT 1').catch((e: unknown) => e)
    expect(err).toBeInstanceOf(NoReplicaAvailableError)
    expect((err as NoReplicaAvailableError).code).toBe('PGSPLIT_NO_REPLICA')
    await expect(strict.replica.query('SELECT 1')).rejects.toBeInstanceOf(NoReplicaAvailableError)
    // Writes are not affected.
    await strict.query("INSERT INTO t (v) VALUES ('no replicas')")

    const startedAt = Date.now()
    await Promise.all([pgc.start(1), pgc.start(2)])
    for (const i of [1, 2]) {
      await until(`nodeUp ${i}`, () => eventFor(eventsE, 'nodeUp', nodeName(port(i)), startedAt), 15_000)
      // Up is reachable; reads come after a probe measured its timeline and lag (issue 14).
      await until(
        `replica ${i} readable`,
        () => snapshotOf(strict, nodeName(port(i))).noReads === null,
        10_000,
      )
    }
    const ports = await readPorts(strict, 20)
    expect(ports.get(port(0)) ?? 0).toBe(0)
    expect((ports.get(port(1)) ?? 0) + (ports.get(port(2)) ?? 0)).toBe(20)
  })

  it('a blackholed replica is marked down after the probe timeout; no caller waits past the bounds', async () => {
    await replicasCaughtUp()
    const proxy = await startFaultProxy({ target: url(1) })
    proxies.push(proxy)
    const probeTimeout = 500
    const pool = { connectionTimeoutMillis: 500, query_timeout: 1_000 }
    const db = createCluster({
      primary: url(0),
      replicas: [proxy.url!, url(2)],
      pool,
      healthCheck: { intervalMs: INTERVAL, timeoutMs: probeTimeout, maxBackoffMs: 1_000 },
    })
    dbs.push(db)
    const events = record(db)
    await db.ready()
    const holed = nodeName(proxy.port)
    expect(db.topology().nodes.map((n) => n.name)).toContain(holed)
    await readPorts(db, 40, 4) // pooled connections through the proxy too

    proxy.setMode('blackhole')
    const holedAt = Date.now()
    let reading = true
    const durations: number[] = []
    const failures: { err: unknown; startedAt: number }[] = []
    const readers = Array.from({ length: 4 }, async () => {
      for (let i = 0; i < 100_000 && reading; i++) {
        const t0 = Date.now()
        try {
          await servedBy(db)
        } catch (err) {
          failures.push({ err, startedAt: t0 })
        }
        durations.push(Date.now() - t0)
        await sleep(5)
      }
    })
    const down = await until('nodeDown', () => eventFor(events, 'nodeDown', holed), 10_000)
    console.log(
      `[health] blackholed replica down ${down.at - holedAt} ms after the blackhole: ${down.payload.reason}`,
    )
    const queriesAtDown = snapshotOf(db, holed).queries
    await sleep(600)
    reading = false
    await Promise.all(readers)
    const longest = Math.max(...durations)
    console.log(
      `[health] ${durations.length} reads during the blackhole, longest ${longest} ms, ${failures.length} failed`,
    )
    // A read stuck on the blackholed replica gives up after query_timeout (or connectionTimeoutMillis);
    // slack for a shared machine. A client-side timeout is the caller's answer (it is never re-run
    // elsewhere: the statement may still be running), so the only failures are those timeouts, of
    // reads sent before the replica was known to be down.
    expect(longest).toBeLessThan(pool.query_timeout + pool.connectionTimeoutMillis + 1_500)
    for (const f of failures) {
      expect(String(f.err)).toMatch(
        /Query read timeout|timeout exceeded when trying to connect|no free connection/,
      )
      expect(f.startedAt).toBeLessThanOrEqual(down.at)
    }
    // The down node takes no reads at all.
    expect(snapshotOf(db, holed).queries).toBe(queriesAtDown)
    const snap = snapshotOf(db, holed)
    expect(snap.state).toBe('down')
    expect(snap.lastError).toMatch(/time/i)
    expect(JSON.stringify(db.topology())).not.toContain(PASSWORD)

    const healedAt = Date.now()
    proxy.setMode('pass')
    await until('nodeUp', () => eventFor(events, 'nodeUp', holed, healedAt), 15_000)
    await until('healed replica measured', () => snapshotOf(db, holed).noReads === null, 10_000)
    expect((await readPorts(db, 20)).get(port(1))).toBeGreaterThan(0)
  })
})

describe('read strategies', () => {
  it('round-robin splits 1,000 reads evenly (within 10%)', async () => {
    await replicasCaughtUp()
    const db = makeDb({ readStrategy: 'round-robin' })
    await db.ready()
    const ports = await readPorts(db, 1_000, 8)
    console.log(`[health] round-robin: ${JSON.stringify([...ports])}`)
    expect(ports.get(port(0)) ?? 0).toBe(0)
    expect(Math.abs((ports.get(port(1)) ?? 0) - 500)).toBeLessThanOrEqual(50)
    expect(Math.abs((ports.get(port(2)) ?? 0) - 500)).toBeLessThanOrEqual(50)
  })

  it('random is roughly even', async () => {
    const db = makeDb({ readStrategy: 'random' })
    await db.ready()
    const ports = await readPorts(db, 1_000, 8)
    console.log(`[health] random: ${JSON.stringify([...ports])}`)
    // 1,000 fair coin flips: the standard deviation is ~16; 100 is over 6 of them.
    expect(Math.abs((ports.get(port(1)) ?? 0) - 500)).toBeLessThan(100)
    expect((ports.get(port(1)) ?? 0) + (ports.get(port(2)) ?? 0)).toBe(1_000)
  })

  it('weighted follows the weights (3:1)', async () => {
    const db = makeDb({
      readStrategy: 'weighted',
      replicas: [
        { url: url(1), weight: 3 },
        { url: url(2), weight: 1 },
      ],
    })
    await db.ready()
    const ports = await readPorts(db, 1_000, 8)
    console.log(`[health] weighted 3:1: ${JSON.stringify([...ports])}`)
    // Expected 750; the standard deviation is ~14.
    expect(Math.abs((ports.get(port(1)) ?? 0) - 750)).toBeLessThan(75)
    expect((ports.get(port(1)) ?? 0) + (ports.get(port(2)) ?? 0)).toBe(1_000)
  })

  it('least-lag prefers the fresher replica (both within maxLag)', async () => {
    await replicasCaughtUp()
    const db = makeDb({ readStrategy: 'least-lag', maxLag: { bytes: 64 * 1024 * 1024, ms: 120_000 } })
    await db.ready()
    await pgc.pauseReplay(1)
    try {
      await db.query("INSERT INTO t (v) SELECT 'least-lag' FROM generate_series(1, 50)")
      const behind = nodeName(port(1))
      const fresh = nodeName(port(2))
      await until('the monitor sees replica 1 behind and replica 2 caught up', () => {
        const b = snapshotOf(db, behind)
        const f = snapshotOf(db, fresh)
        return (b.lagBytes ?? 0) > 0 && f.lagBytes === 0
      })
      expect(snapshotOf(db, behind).lagging).toBe(false)
      const ports = await readPorts(db, 200, 4)
      expect(ports.get(port(2))).toBe(200)
    } finally {
      await pgc.resumeReplay(1)
    }
  })

  it('least-busy prefers the idle replica', async () => {
    const db = makeDb({ readStrategy: 'least-busy' })
    await db.ready()
    const long = db.query<{ port: number }>('SELECT inet_server_port() AS port, pg_sleep(4) AS slept')
    const busy = await until('a replica with a query in flight', () =>
      db.topology().nodes.find((n) => n.role === 'replica' && n.inFlight === 1),
    )
    const ports = await readPorts(db, 50)
    // Every short read ran while the long one held its replica.
    expect(snapshotOf(db, busy.name).inFlight).toBe(1)
    const { rows } = await long
    expect(nodeName(Number(rows[0]!.port))).toBe(busy.name)
    const idlePort = Number(rows[0]!.port) === port(1) ? port(2) : port(1)
    expect(ports.get(idlePort)).toBe(50)
  })

  it('a user function strategy is used', async () => {
    const seen = new Set<string>()
    const db = makeDb({
      readStrategy: (candidates) => {
        for (const c of candidates) seen.add(c.name)
        return candidates.find((c) => c.port === port(2))
      },
    })
    await db.ready()
    const ports = await readPorts(db, 30)
    expect(ports.get(port(2))).toBe(30)
    expect([...seen].sort()).toEqual([nodeName(port(1)), nodeName(port(2))].sort())
  })
})

describe('heartbeat', () => {
  it('writes a heartbeat table on the primary and gives lagMs numbers, also when the app is idle', async () => {
    await replicasCaughtUp()
    const maxMs = 2_000
    const db = makeDb({ healthCheck: { heartbeat: true }, maxLag: { bytes: 64 * 1024 * 1024, ms: maxMs } })
    const events = record(db)
    await db.ready()
    const [first] = await until('heartbeat row on the primary', async () => {
      const rows = await direct<{ ts: Date }>(url(0), 'SELECT ts FROM pgsplit_heartbeat WHERE id = 1').catch(
        () => [],
      )
      return rows.length === 1 ? rows : undefined
    })
    await until('heartbeat row moving', async () => {
      const [row] = await direct<{ ts: Date }>(url(0), 'SELECT ts FROM pgsplit_heartbeat WHERE id = 1')
      return row!.ts.getTime() > first!.ts.getTime()
    })
    await until('heartbeat replicated', async () => {
      const rows = await direct<{ ts: Date }>(url(2), 'SELECT ts FROM pgsplit_heartbeat WHERE id = 1').catch(
        () => [],
      )
      return rows.length === 1
    })
    for (const n of db.topology().nodes) {
      expect(n.lagMs).toBeTypeOf('number')
      expect(n.lagMs!).toBeGreaterThanOrEqual(0)
      expect(n.lagMs!).toBeLessThan(maxMs)
    }
    // No application writes at all: the heartbeat alone shows a paused replica falling behind.
    const pausedAt = Date.now()
    await pgc.pauseReplay(1)
    try {
      const lagging = await until(
        'replicaLagging from the heartbeat',
        () => eventFor(events, 'replicaLagging', nodeName(port(1)), pausedAt),
        10_000,
      )
      console.log(
        `[health] heartbeat: paused idle replica lagging after ${lagging.at - pausedAt} ms: ${JSON.stringify(lagging.payload)}`,
      )
      expect(lagging.payload.lagMs).toBeGreaterThan(maxMs)
      expect(snapshotOf(db, nodeName(port(2))).lagging).toBe(false)
    } finally {
      await pgc.resumeReplay(1)
    }
    await until(
      'replicaCaughtUp',
      () => eventFor(events, 'replicaCaughtUp', nodeName(port(1)), pausedAt),
      10_000,
    )
  })
})
