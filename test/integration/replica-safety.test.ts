import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { type Cluster, type ClusterConfig, createCluster, type NodeSnapshot } from '../../src/index.js'
import { type FaultProxy, startCluster, startFaultProxy, type TestCluster } from '../../src/testing/index.js'
import { nodeName, recordEvents, until as waitUntil } from '../support/cluster.js'
import { adminQuery as direct, sleep } from '../support/reliability.js'

// Issue 14: a replica never serves a row the primary does not have. Real clusters, moved by
// pgsplit/testing as an operator or an HA manager would; the Cluster objects live through it.

const INTERVAL = 100

/** `until` where a check that throws means "not yet": servers come and go here. */
const until = <T>(what: string, check: Parameters<typeof waitUntil<T>>[1], timeoutMs = 20_000): Promise<T> =>
  waitUntil(what, check, timeoutMs, { everyMs: 25, retryErrors: true })

const EVENTS = [
  'nodeDown',
  'nodeUp',
  'primaryLost',
  'failover',
  'splitBrain',
  'replicaDiverged',
  'foreignNode',
  'duplicateNode',
]

let dbs: Cluster[] = []
const clusters: TestCluster[] = []

function makeDb(config: ClusterConfig): Cluster {
  const db = createCluster({
    ...config,
    healthCheck: { intervalMs: INTERVAL, timeoutMs: 1_000, maxBackoffMs: 500, ...config.healthCheck },
    failover: { timeoutMs: 20_000, pollIntervalMs: 100, ...config.failover },
  })
  dbs.push(db)
  return db
}

async function newCluster(replicas = 2): Promise<TestCluster> {
  const pgc = await startCluster({ backend: 'local', replicas })
  clusters.push(pgc)
  return pgc
}

function snap(db: Cluster, port: number): NodeSnapshot {
  const node = db.topology().nodes.find((n) => n.port === port)
  if (node === undefined) throw new Error(`no node on port ${port}`)
  return node
}

async function readPort(db: Cluster): Promise<number> {
  const { rows } = await db.query<{ port: number }>('SELECT inet_server_port() AS port')
  return Number(rows[0]!.port)
}

async function readPorts(db: Cluster, n: number): Promise<Map<number, number>> {
  const counts = new Map<number, number>()
  for (let i = 0; i < n; i++) {
    const p = await readPort(db)
    counts.set(p, (counts.get(p) ?? 0) + 1)
  }
  return counts
}

/** A login role with CONNECT and SELECT only: no pg_read_all_stats, no pg_monitor, no superuser. */
async function createReader(pgc: TestCluster, tables: string[]): Promise<(url: string) => string> {
  await direct(pgc.primaryUrl, `CREATE ROLE reader LOGIN PASSWORD 'r3ader-pw'`)
  await direct(pgc.primaryUrl, 'GRANT CONNECT ON DATABASE app TO reader')
  for (const t of tables) await direct(pgc.primaryUrl, `GRANT SELECT ON ${t} TO reader`)
  return (url) => url.replace('postgres:postgres@', 'reader:r3ader-pw@')
}

/** Pass-through TCP proxies: a second address for the same server (a port forward). */
const proxies: FaultProxy[] = []

afterEach(async () => {
  await Promise.all(dbs.map((db) => db.end()))
  dbs = []
  await Promise.all(proxies.splice(0).map((p) => p.close()))
})

afterAll(async () => {
  for (const pgc of clusters) await pgc.destroy()
})

/**
 * The abandoned timeline of issue 14: stop replica node1; write 3,000 rows on node0, node2
 * receives them; kill node0; start and promote node1. node2 is now ahead of the new primary on
 * timeline 1 with rows the primary does not have. From the moment pgsplit knows the new
 * primary, not one read may run on node2 until it follows the new timeline (rejoin: pg_rewind),
 * and every causal read sees its write.
 */
async function abandonedTimeline(privileged: boolean): Promise<void> {
  const pgc = await newCluster()
  const admin = (i: number) => pgc.nodes[i]!.url
  const port = (i: number) => pgc.nodes[i]!.port
  await direct(admin(0), 'CREATE TABLE t (id serial PRIMARY KEY, v text NOT NULL)')
  const as = privileged ? (u: string) => u : await createReader(pgc, ['t'])
  if (!privileged) {
    // What the monitor sees with this role: no receiver details, control data yes.
    const [row] = await direct<{ tli: number | null; pid: number | null; ctl: number }>(
      as(admin(2)),
      `SELECT (SELECT received_tli FROM pg_stat_wal_receiver) AS tli, (SELECT pid FROM pg_stat_wal_receiver) AS pid,
              (SELECT timeline_id FROM pg_control_checkpoint()) AS ctl`,
    )
    expect(row).toMatchObject({ tli: null, ctl: 1 })
    expect(row!.pid).not.toBeNull()
  }
  const db = makeDb({ primary: as(admin(0)), replicas: [as(admin(1)), as(admin(2))] })
  const events = recordEvents(db, EVENTS)
  await db.ready()
  expect(db.topology().nodes.map((n) => n.timelineExact)).toEqual([true, privileged, privileged])

  await pgc.stop(1)
  await direct(admin(0), `INSERT INTO t (v) SELECT 'lost ' || g FROM generate_series(1, 3000) g`)
  await until('node2 has the 3,000 rows', async () => {
    const [r] = await direct<{ n: number }>(admin(2), 'SELECT count(*)::int AS n FROM t')
    return r!.n === 3000
  })
  await pgc.kill(0)
  await pgc.start(1)
  await pgc.promote(1)
  const [pos] = await direct<{ p: string }>(admin(1), 'SELECT pg_current_wal_lsn()::text AS p')
  const [rep] = await direct<{ r: string }>(admin(2), 'SELECT pg_last_wal_replay_lsn()::text AS r')
  console.log(`[safety] new primary node1 at ${pos!.p}, node2 replayed ${rep!.r} on timeline 1`)

  await until('pgsplit knows node1 as the primary', () => db.topology().primary === nodeName(port(1)))
  const knownAt = Date.now()
  const diverged = await until('node2 diverged in topology()', () => {
    const s = snap(db, port(2))
    return s.diverged && s.noReads === 'diverged' ? s : undefined
  })
  console.log(
    `[safety] node2 diverged ${Date.now() - knownAt} ms after the new primary was known: ${JSON.stringify({
      lagBytes: diverged.lagBytes,
      timeline: diverged.timeline,
      timelineExact: diverged.timelineExact,
    })}`,
  )
  expect(diverged.lagBytes).toBeLessThan(0)
  expect(db.topology().timeline).toBe(2)
  const event = events.find((e) => e.name === 'replicaDiverged' && e.payload.node === nodeName(port(2)))
  expect(event?.payload).toMatchObject({ reason: 'ahead', primaryTimeline: 2 })

  // Reads and causal reads while node2 sits on the abandoned timeline, then while it is rewound.
  // The diverged server is gone once the rejoin stops it (nodeDown): no read may reach it before.
  let divergedServerGone = false
  db.on('nodeDown', ({ node }) => {
    if (node === nodeName(port(2))) divergedServerGone = true
  })
  let reading = true
  let onDiverged = 0
  let onRewound = 0
  let wrongRows = 0
  let plain = 0
  const reader = (async () => {
    for (let i = 0; i < 100_000 && reading; i++) {
      const gone = divergedServerGone
      const { rows } = await db.query<{ port: number; n: number }>(
        `SELECT inet_server_port() AS port, (SELECT count(*)::int FROM t WHERE v LIKE 'lost %') AS n`,
      )
      plain++
      if (Number(rows[0]!.port) === port(2)) {
        if (gone) onRewound++
        else onDiverged++
      }
      if (rows[0]!.n > 0) wrongRows++
      await sleep(2)
    }
  })()
  let stale = 0
  let causal = 0
  const writer = (async () => {
    for (let i = 0; i < 100_000 && reading; i++) {
      const v = `new ${i}`
      // The writes go through an admin connection (the reader role may not write); the read
      // carries the write's token, as a request carrying x-pgsplit-lsn would.
      const [w] = await direct<{ id: number }>(admin(1), 'INSERT INTO t (v) VALUES ($1) RETURNING id', [v])
      // The token is read after the commit was acknowledged (inside the INSERT it would point
      // before its commit record).
      const [tok] = await direct<{ lsn: string; tli: number }>(
        admin(1),
        `SELECT pg_current_wal_lsn()::text AS lsn,
           ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS tli`,
      )
      const { rows } = await db.query<{ v: string; port: number }>(
        'SELECT v, inet_server_port() AS port FROM t WHERE id = $1',
        [w!.id],
        { after: `${tok!.tli}:${tok!.lsn}` },
      )
      causal++
      if (rows[0]?.v !== v) stale++
    }
  })()
  try {
    await sleep(1_500)
    expect(snap(db, port(2)).noReads).toBe('diverged')
    await pgc.rejoin(2, 1)
    // node2 follows timeline 2 now: it takes reads again once measured, with the primary's rows.
    await until('node2 takes reads again', async () => snap(db, port(2)).noReads === null, 30_000)
    await sleep(300)
  } finally {
    reading = false
    await Promise.all([reader, writer])
  }
  console.log(
    `[safety] ${privileged ? 'superuser' : 'reader role'}: ${plain} reads and ${causal} causal reads from the new primary's election until node2 followed: ${onDiverged} on diverged node2, ${wrongRows} with lost rows, ${stale} stale; ${onRewound} on node2 after its rewind`,
  )
  expect(divergedServerGone).toBe(true)
  expect(onDiverged).toBe(0)
  expect(wrongRows).toBe(0)
  expect(stale).toBe(0)
  expect(causal).toBeGreaterThan(5)
  const after = snap(db, port(2))
  expect(after).toMatchObject({ diverged: false, timeline: 2, measured: true, role: 'replica' })
  await until('a read on node2, without the lost rows', async () => {
    const { rows } = await db.query<{ port: number; n: number }>(
      `SELECT inet_server_port() AS port, (SELECT count(*)::int FROM t WHERE v LIKE 'lost %') AS n`,
    )
    return Number(rows[0]!.port) === port(2) && rows[0]!.n === 0
  })
}

describe('abandoned timeline', () => {
  it('a replica ahead of the new primary serves no read until it follows (superuser monitor)', async () => {
    await abandonedTimeline(true)
  })

  it('the same with a login role that has no pg_read_all_stats', async () => {
    await abandonedTimeline(false)
  })
})

describe('the cluster timeline follows its primary both ways', () => {
  it('a primary re-elected on an older timeline: replicas on it take reads again', async () => {
    const pgc = await newCluster()
    const admin = (i: number) => pgc.nodes[i]!.url
    const port = (i: number) => pgc.nodes[i]!.port
    await direct(admin(0), 'CREATE TABLE t (id serial PRIMARY KEY, v text NOT NULL)')
    const db = makeDb({ nodes: [admin(0), admin(1), admin(2)] })
    recordEvents(db, EVENTS)
    await db.ready()
    expect(db.topology()).toMatchObject({ primary: nodeName(port(0)), timeline: 1 })

    // node1 becomes the leader on timeline 2 (node0 shut down cleanly: node2 has all its WAL).
    await pgc.stop(0)
    await pgc.promote(1)
    await until(
      'timeline 2',
      () => db.topology().primary === nodeName(port(1)) && db.topology().timeline === 2,
    )
    // node2 still follows node0's timeline 1: not the primary's, no reads.
    await until('node2 excluded on timeline 1', () => snap(db, port(2)).noReads === 'timeline')
    expect((await readPorts(db, 20)).get(port(2)) ?? 0).toBe(0)

    // The HA manager gives the lock back to node0 on timeline 1; node1 goes away.
    await pgc.stop(1)
    await pgc.start(0)
    await direct(admin(0), `INSERT INTO t (v) VALUES ('back on 1')`)
    await until(
      'timeline back to 1',
      () => db.topology().primary === nodeName(port(0)) && db.topology().timeline === 1,
    )
    await until('node2 takes reads again', async () => ((await readPorts(db, 10)).get(port(2)) ?? 0) > 0)
    expect(snap(db, port(2))).toMatchObject({ timeline: 1, noReads: null, diverged: false })
    const { rows } = await db.query<{ v: string }>('SELECT v FROM t')
    expect(rows.map((r) => r.v)).toEqual(['back on 1'])
  })
})

describe('cluster identity', () => {
  let pgc: TestCluster
  let stranger: TestCluster
  const admin = (i: number) => pgc.nodes[i]!.url
  const port = (i: number) => pgc.nodes[i]!.port

  beforeAll(async () => {
    pgc = await newCluster()
    stranger = await newCluster(0)
    await direct(admin(0), 'CREATE TABLE t (id serial PRIMARY KEY, v text NOT NULL)')
    await direct(stranger.primaryUrl, 'CREATE TABLE t (id serial PRIMARY KEY, v text NOT NULL)')
  })

  it('a primary of another cluster listed as a replica takes no reads and no writes; writes work', async () => {
    const db = makeDb({ primary: admin(0), replicas: [admin(1), stranger.primaryUrl, admin(2)] })
    const events = recordEvents(db, EVENTS)
    await db.ready()
    const strangerName = nodeName(stranger.nodes[0]!.port)
    const s = snap(db, stranger.nodes[0]!.port)
    expect(s).toMatchObject({ foreign: true, noReads: 'foreign', role: 'unknown' })
    expect(s.systemIdentifier).not.toBe(snap(db, port(0)).systemIdentifier)
    expect(events.find((e) => e.name === 'foreignNode')?.payload).toMatchObject({
      node: strangerName,
      expected: snap(db, port(0)).systemIdentifier,
    })
    expect(events.filter((e) => e.name === 'splitBrain')).toEqual([])
    const ports = await readPorts(db, 40)
    expect(ports.get(stranger.nodes[0]!.port) ?? 0).toBe(0)
    for (let i = 0; i < 10; i++) await db.query(`INSERT INTO t (v) VALUES ('mine')`)
    const [theirs] = await direct<{ n: number }>(stranger.primaryUrl, 'SELECT count(*)::int AS n FROM t')
    expect(theirs!.n).toBe(0)
    // Rounds later it is still foreign, and writes keep working.
    await sleep(INTERVAL * 5)
    expect(snap(db, stranger.nodes[0]!.port).foreign).toBe(true)
    await db.query(`INSERT INTO t (v) VALUES ('still mine')`)
  })

  it('discovery over nodes: [...] with a stranger first never picks the stranger as the primary', async () => {
    const db = makeDb({ nodes: [stranger.primaryUrl, admin(1), admin(0), admin(2)] })
    recordEvents(db, EVENTS)
    await db.ready()
    expect(db.topology().primary).toBe(nodeName(port(0)))
    expect(snap(db, stranger.nodes[0]!.port)).toMatchObject({ foreign: true, noReads: 'foreign' })
    const { rows } = await db.query<{ port: number }>(
      `INSERT INTO t (v) VALUES ('via nodes') RETURNING inet_server_port() AS port`,
    )
    expect(Number(rows[0]!.port)).toBe(port(0))
  })

  // `localhost` beside `127.0.0.1` is refused at createCluster (ConfigError): a port forward to the
  // same server (a TCP proxy here) cannot be known from the address, only from the server itself.
  it('the same server under two addresses is a configuration mistake, not a split brain', async () => {
    const forward = await startFaultProxy({ target: admin(0) })
    proxies.push(forward)
    const db = makeDb({ primary: forward.urlFor(admin(0)), replicas: [admin(1), admin(0), admin(2)] })
    const events = recordEvents(db, EVENTS)
    await db.ready()
    const twin = db.topology().nodes.find((n) => n.port === port(0))!
    const primary = db.topology().nodes.find((n) => n.port === forward.port)!
    expect(db.topology().primary).toBe(primary.name)
    expect(twin).toMatchObject({ duplicateOf: primary.name, noReads: 'duplicate' })
    expect(twin.role).not.toBe('primary')
    expect(events.filter((e) => e.name === 'splitBrain')).toEqual([])
    expect(events.find((e) => e.name === 'duplicateNode')?.payload).toEqual({
      node: twin.name,
      of: primary.name,
    })
    // Writes work; reads go to the two real replicas only.
    for (let i = 0; i < 5; i++) await db.query(`INSERT INTO t (v) VALUES ('twice')`)
    const ports = await readPorts(db, 40)
    expect(ports.get(port(0)) ?? 0).toBe(0)
    expect((ports.get(port(1)) ?? 0) + (ports.get(port(2)) ?? 0)).toBe(40)
    await sleep(INTERVAL * 5)
    expect(db.topology().primary).toBe(primary.name)
    expect(db.topology().searching).toBe(false)
  })

  it('the same replica under two addresses: one takes the reads, the other is a duplicate', async () => {
    const forward = await startFaultProxy({ target: admin(1) })
    proxies.push(forward)
    const db = makeDb({ primary: admin(0), replicas: [admin(1), forward.urlFor(admin(1)), admin(2)] })
    const events = recordEvents(db, EVENTS)
    await db.ready()
    const dup = db.topology().nodes.find((n) => n.port === forward.port)!
    expect(dup).toMatchObject({ duplicateOf: nodeName(port(1)), noReads: 'duplicate' })
    expect(events.find((e) => e.name === 'duplicateNode')?.payload).toEqual({
      node: dup.name,
      of: nodeName(port(1)),
    })
    expect(dup.queries).toBe(0)
    await readPorts(db, 20)
    expect(db.topology().nodes.find((n) => n.port === forward.port)!.queries).toBe(0)
  })
})

describe('no read before measurement', () => {
  let pgc: TestCluster
  const admin = (i: number) => pgc.nodes[i]!.url
  const port = (i: number) => pgc.nodes[i]!.port

  beforeAll(async () => {
    pgc = await newCluster()
  })

  it('ready(): every reachable replica has a measured lag (lagMs a number)', async () => {
    for (let round = 0; round < 5; round++) {
      const db = makeDb({ primary: admin(0), replicas: [admin(1), admin(2)] })
      // Traffic on the primary while it starts: its position moves between the probes.
      const busy = direct(admin(0), 'SELECT pg_switch_wal(), pg_sleep(0.01)')
      await db.ready()
      await busy
      for (const n of db.topology().nodes) {
        expect(n).toMatchObject({ measured: true, noReads: n.role === 'primary' ? 'not-replica' : null })
        expect(n.lagMs).toBeTypeOf('number')
        expect(n.lagBytes).toBeTypeOf('number')
      }
      await db.end()
    }
  })

  /** What topology() said of a node at the moment its nodeUp event fired (the probe that saw it up). */
  function noReadsAtNodeUp(db: Cluster, p: number): (string | null)[] {
    const seen: (string | null)[] = []
    db.on('nodeUp', ({ node }) => {
      if (node === nodeName(p)) seen.push(snap(db, p).noReads)
    })
    return seen
  }

  it('a node added with addNode takes no read before a probe measured it', async () => {
    const db = makeDb({ primary: admin(0), replicas: [admin(1)] })
    await db.ready()
    const atUp = noReadsAtNodeUp(db, port(2))
    const added = db.addNode(admin(2))
    // Synchronously after addNode() started: in the topology, not readable.
    expect(snap(db, port(2)).noReads).toBe('down')
    expect(snap(db, port(2)).measured).toBe(false)
    const snapshot = await added
    // Up after its first probe, but not measured until the ordered round that followed.
    expect(atUp).toEqual(['unmeasured'])
    expect(snapshot).toMatchObject({ measured: true, noReads: null, state: 'up' })
    expect(snapshot.lagMs).toBeTypeOf('number')
    expect((await readPorts(db, 20)).get(port(2)) ?? 0).toBeGreaterThan(0)
  })

  it('a replica coming back up takes no read before a measuring probe', async () => {
    const db = makeDb({ primary: admin(0), replicas: [admin(1), admin(2)] })
    recordEvents(db, EVENTS)
    await db.ready()
    const atUp = noReadsAtNodeUp(db, port(2))
    await pgc.stop(2)
    await until('node2 down', () => snap(db, port(2)).state === 'down')
    expect(snap(db, port(2))).toMatchObject({ measured: false, noReads: 'down' })
    // While it is away the primary moves on: its old measurement says nothing about now.
    await direct(admin(0), 'CREATE TABLE back (id int)')
    await pgc.start(2)
    await until('node2 takes reads', async () => ((await readPorts(db, 10)).get(port(2)) ?? 0) > 0)
    expect(atUp).toEqual(['unmeasured'])
    expect(snap(db, port(2))).toMatchObject({ measured: true, noReads: null })
  })
})
