import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  type Cluster,
  type ClusterConfig,
  createCluster,
  NoPrimaryError,
  WriteOutcomeUnknownError,
} from '../../src/index.js'
import { startCluster, type TestCluster } from '../../src/testing/index.js'
import { nodeName, type Recorded, recordEvents, until as waitUntil } from '../support/cluster.js'
import { adminQuery as direct, sleep } from '../support/reliability.js'

// Issue 5: failover, through the library only. The servers are moved by pgsplit/testing (as an
// operator or a failover manager would); the Cluster objects are never restarted. The tests of
// each describe block share one cluster and run in order, each from the state the previous left.

/** `until` of the support module where a check that throws means "not yet": servers come and go here. */
const until = <T>(what: string, check: Parameters<typeof waitUntil<T>>[1], timeoutMs?: number): Promise<T> =>
  waitUntil(what, check, timeoutMs, { everyMs: 25, retryErrors: true })

const record = (db: Cluster): Recorded[] =>
  recordEvents(db, ['nodeDown', 'nodeUp', 'primaryLost', 'failover', 'splitBrain', 'readRetried'])

async function writePort(db: Cluster, v: string): Promise<number> {
  const { rows } = await db.query<{ port: number }>(
    'INSERT INTO items (v) VALUES ($1) RETURNING inet_server_port() AS port',
    [v],
  )
  return Number(rows[0]!.port)
}

async function readPorts(db: Cluster, n: number): Promise<Map<number, number>> {
  const counts = new Map<number, number>()
  for (let i = 0; i < n; i++) {
    const { rows } = await db.query<{ port: number }>('SELECT inet_server_port() AS port')
    const p = Number(rows[0]!.port)
    counts.set(p, (counts.get(p) ?? 0) + 1)
  }
  return counts
}

const rowsOn = async (u: string) =>
  (await direct<{ v: string }>(u, 'SELECT v FROM items ORDER BY id')).map((r) => r.v)

async function sameRowsEverywhere(primaryUrl: string, replicaUrls: string[]): Promise<string[]> {
  return until(
    'every replica shows the same rows as the primary',
    async () => {
      const expected = await rowsOn(primaryUrl)
      for (const u of replicaUrls) {
        if (JSON.stringify(await rowsOn(u)) !== JSON.stringify(expected)) return undefined
      }
      return expected
    },
    15_000,
  )
}

/** Waits until `db` sees the rejoined old primary (on `port`) as an up replica and reads reach it. */
async function rejoinedAsReplica(db: Cluster, port: number): Promise<void> {
  const name = nodeName(port)
  await until(
    'old primary seen as an up replica',
    () => {
      const n = db.topology().nodes.find((x) => x.name === name)!
      return n.role === 'replica' && n.state === 'up' && !n.fenced && !n.lagging
    },
    15_000,
  )
  await until(
    'reads on the rejoined node',
    async () => ((await readPorts(db, 30)).get(port) ?? 0) > 0,
    10_000,
  )
}

async function countOn(u: string, v: string): Promise<number> {
  const [row] = await direct<{ n: number }>(u, 'SELECT count(*)::int AS n FROM items WHERE v = $1', [v])
  return row!.n
}

describe('the primary-replica verification procedure, a failover, a split brain, a rejoin', () => {
  let pgc: TestCluster
  let db: Cluster
  let events: Recorded[]
  const others: Cluster[] = []
  const url = (i: number) => pgc.nodes[i]!.url
  const port = (i: number) => pgc.nodes[i]!.port

  const config = (extra: Partial<ClusterConfig> = {}): ClusterConfig => ({
    primary: url(0),
    replicas: [url(1), url(2)],
    healthCheck: { intervalMs: 200, timeoutMs: 1_000, maxBackoffMs: 1_000 },
    failover: { timeoutMs: 20_000 },
    pool: { connectionTimeoutMillis: 2_000 },
    ...extra,
  })

  beforeAll(async () => {
    pgc = await startCluster({ backend: 'local', replicas: 2 })
    await direct(url(0), 'CREATE TABLE items (id bigserial PRIMARY KEY, v text NOT NULL)')
    db = createCluster(config())
    events = record(db)
    await db.ready()
  })

  afterAll(async () => {
    await Promise.all([db?.end(), ...others.map((o) => o.end())])
    await pgc?.destroy()
  })

  it('nodes: [...] without roles finds the primary wherever it is in the list', async () => {
    const found = createCluster({ nodes: [url(1), url(2), url(0)], healthCheck: { intervalMs: 200 } })
    others.push(found)
    await found.ready()
    const topo = found.topology()
    expect(topo.primary).toBe(nodeName(port(0)))
    expect(topo.nodes.map((n) => n.role)).toEqual(['replica', 'replica', 'primary'])
    expect(await writePort(found, 'found')).toBe(port(0))
    await found.query("DELETE FROM items WHERE v = 'found'")
    const ports = await readPorts(found, 10)
    expect(ports.get(port(0)) ?? 0).toBe(0)
  })

  it('step 1: an insert and a delete on the primary show the same rows on every replica', async () => {
    for (const v of ['a', 'b', 'c']) expect(await writePort(db, v)).toBe(port(0))
    await db.query('DELETE FROM items WHERE v = $1', ['b'])
    const rows = await sameRowsEverywhere(url(0), [url(1), url(2)])
    expect(rows).toEqual(['a', 'c'])
    // Reads through the cluster see them too (on a replica).
    const { rows: read } = await db.query<{ v: string; port: number }>(
      'SELECT v, inet_server_port() AS port FROM items ORDER BY id',
    )
    expect(read.map((r) => r.v)).toEqual(['a', 'c'])
    expect([port(1), port(2)]).toContain(Number(read[0]!.port))
  })

  it('step 2: a write forced to a replica fails with 25006', async () => {
    const err = await db.replica.query("INSERT INTO items (v) VALUES ('nope')").catch((e: unknown) => e)
    expect((err as { code?: string }).code).toBe('25006')
    expect(await countOn(url(0), 'nope')).toBe(0)
  })

  it('step 3: a replica added to the running cluster has the same data and takes reads', async () => {
    const added = await pgc.addReplica()
    const snap = await db.addNode(added.url)
    expect(snap).toMatchObject({ name: nodeName(added.port), role: 'replica', state: 'up', port: added.port })
    expect(await sameRowsEverywhere(url(0), [added.url])).toEqual(['a', 'c'])
    const ports = await readPorts(db, 30)
    expect(ports.get(added.port)).toBeGreaterThan(0)
    expect(ports.get(port(0)) ?? 0).toBe(0)
  })

  it('step 4: stop the primary, promote a replica, repoint the others: the same db writes to the new primary', async () => {
    // A second Cluster that never opened a pooled connection to the old primary (its first write
    // will fail to connect), and a third with idle pooled connections to it. Their monitors are
    // slow on purpose: the write path itself must find the new primary.
    const lazy = createCluster({ ...config(), healthCheck: { intervalMs: 60_000 } })
    const idle = createCluster({ ...config(), healthCheck: { intervalMs: 60_000 } })
    others.push(lazy, idle)
    record(lazy)
    record(idle)
    await Promise.all([lazy.ready(), idle.ready()])
    await Promise.all(Array.from({ length: 3 }, (_, i) => writePort(idle, `idle-warm-${i}`)))
    await idle.query("DELETE FROM items WHERE v LIKE 'idle-warm-%'")
    expect(idle.topology().nodes[0]!.pool.idle).toBeGreaterThan(0)

    // A transaction that loses its connection before COMMIT is re-run on the new primary.
    let attempts = 0
    const txPorts: number[] = []
    let openGate: () => void = () => {}
    const gate = new Promise<void>((r) => {
      openGate = r
    })
    let inside: () => void = () => {}
    const entered = new Promise<void>((r) => {
      inside = r
    })
    const tx = db.transaction(
      async (client) => {
        attempts++
        const { rows } = await client.query<{ port: number }>('SELECT inet_server_port() AS port')
        txPorts.push(Number(rows[0]!.port))
        await client.query("INSERT INTO items (v) VALUES ('tx')")
        if (attempts === 1) {
          inside()
          await gate
        }
        await client.query("INSERT INTO items (v) VALUES ('tx-2')")
        return attempts
      },
      { retryOnFailover: true },
    )
    await entered

    const stoppedAt = Date.now()
    await pgc.stop(0)
    // A write issued while there is no primary waits for the new one.
    const waiting = writePort(db, 'during-failover')
    await sleep(300)
    const promoteAt = Date.now()
    await pgc.promote(1)
    const promoted = Date.now()
    openGate()
    const firstPort = await writePort(db, 'after-promotion')
    const firstWriteAt = Date.now()
    console.log(
      `[failover] stop -> promote() called ${promoteAt - stoppedAt} ms; promote() took ${promoted - promoteAt} ms; ` +
        `first write acknowledged ${firstWriteAt - promoted} ms after promote() returned`,
    )
    expect(firstPort).toBe(port(1))
    expect(await waiting).toBe(port(1))
    expect(await tx).toBe(2)
    expect(txPorts).toEqual([port(0), port(1)])

    await pgc.repoint(2, 1)
    await pgc.repoint(3, 1)

    // The lazy and idle clusters write to the new primary, exactly once each.
    expect(await writePort(lazy, 'lazy')).toBe(port(1))
    expect(await writePort(idle, 'idle')).toBe(port(1))
    for (const v of ['lazy', 'idle', 'during-failover', 'after-promotion', 'tx', 'tx-2']) {
      expect(await countOn(url(1), v), v).toBe(1)
    }

    const lost = events.find((e) => e.name === 'primaryLost')
    expect(lost?.payload.node).toBe(nodeName(port(0)))
    const failover = events.find((e) => e.name === 'failover')
    expect(failover?.payload).toMatchObject({ from: nodeName(port(0)), to: nodeName(port(1)) })
    expect(failover!.payload.durationMs).toBeTypeOf('number')
    console.log(`[failover] failover event: ${JSON.stringify(failover!.payload)}`)
    expect(db.topology().primary).toBe(nodeName(port(1)))
    expect(db.topology().timeline).toBe(2)

    // Writes go to the new primary, reads to the remaining replicas.
    for (let i = 0; i < 5; i++) expect(await writePort(db, `new-${i}`)).toBe(port(1))
    await until(
      'reads on both remaining replicas',
      async () => {
        const ports = await readPorts(db, 20)
        return (ports.get(port(2)) ?? 0) > 0 && (ports.get(port(3)) ?? 0) > 0
      },
      15_000,
    )
    const ports = await readPorts(db, 30)
    expect((ports.get(port(2)) ?? 0) + (ports.get(port(3)) ?? 0)).toBe(30)
  })

  it('step 5: steps 1 and 2 again on the new topology', async () => {
    await db.query("DELETE FROM items WHERE v LIKE 'new-%' OR v IN ('lazy', 'idle')")
    for (const v of ['d', 'e']) expect(await writePort(db, v)).toBe(port(1))
    await db.query("DELETE FROM items WHERE v = 'a'")
    const rows = await sameRowsEverywhere(url(1), [url(2), url(3)])
    expect([...rows].sort()).toEqual(['after-promotion', 'c', 'd', 'during-failover', 'e', 'tx', 'tx-2'])
    const err = await db.replica.query("INSERT INTO items (v) VALUES ('nope')").catch((e: unknown) => e)
    expect((err as { code?: string }).code).toBe('25006')
  })

  it('split brain: the old primary restarted writable on the old timeline gets no write', async () => {
    const startedAt = Date.now()
    await pgc.start(0) // comes back as a primary of timeline 1, beside the promoted node 1
    const [old] = await direct<{ rec: boolean }>(url(0), 'SELECT pg_is_in_recovery() AS rec')
    expect(old!.rec).toBe(false)
    const split = await until(
      'splitBrain event',
      () => events.find((e) => e.name === 'splitBrain' && e.at >= startedAt),
      10_000,
    )
    expect(split.payload).toMatchObject({ primary: nodeName(port(1)) })
    expect([...(split.payload.nodes as string[])].sort()).toEqual(
      [nodeName(port(0)), nodeName(port(1))].sort(),
    )
    const snap = db.topology().nodes.find((n) => n.name === nodeName(port(0)))!
    expect(snap.fenced).toBe(true)
    expect(snap.role).not.toBe('primary')
    expect(db.topology().primary).toBe(nodeName(port(1)))
    for (let i = 0; i < 10; i++) expect(await writePort(db, `split-${i}`)).toBe(port(1))
    const ports = await readPorts(db, 20)
    expect(ports.get(port(0)) ?? 0).toBe(0)
    expect(await countOn(url(0), 'split-0')).toBe(0)

    // A Cluster started now, with role-less nodes, picks the higher timeline too.
    const fresh = createCluster({ nodes: [url(0), url(1), url(2), url(3)], healthCheck: { intervalMs: 200 } })
    others.push(fresh)
    const freshEvents = record(fresh)
    await fresh.ready()
    expect(fresh.topology().primary).toBe(nodeName(port(1)))
    expect(await writePort(fresh, 'fresh')).toBe(port(1))
    expect(freshEvents.some((e) => e.name === 'splitBrain')).toBe(true)
    expect(fresh.topology().nodes[0]!.fenced).toBe(true)
  })

  it('the old primary rejoined with pg_rewind shows up as a replica and takes reads', async () => {
    await pgc.rejoin(0, 1)
    await rejoinedAsReplica(db, port(0))
    await sameRowsEverywhere(url(1), [url(0)])
    expect(await writePort(db, 'after-rejoin')).toBe(port(1))
  })
})

describe('kill -9 of the primary under concurrent writes (synchronous: 1)', () => {
  let pgc: TestCluster
  let db: Cluster
  let events: Recorded[]
  let short: Cluster
  const url = (i: number) => pgc.nodes[i]!.url
  const port = (i: number) => pgc.nodes[i]!.port

  beforeAll(async () => {
    pgc = await startCluster({ backend: 'local', replicas: 2, synchronous: 1 })
    await direct(
      url(0),
      'CREATE TABLE w (id bigserial PRIMARY KEY, writer int NOT NULL, seq int NOT NULL, UNIQUE (writer, seq))',
    )
    const base: ClusterConfig = {
      primary: url(0),
      replicas: [url(1), url(2)],
      healthCheck: { intervalMs: 200, timeoutMs: 1_000, maxBackoffMs: 1_000 },
      pool: { connectionTimeoutMillis: 2_000 },
    }
    db = createCluster({ ...base, failover: { timeoutMs: 20_000 } })
    short = createCluster({ ...base, failover: { timeoutMs: 1_500 } })
    events = record(db)
    record(short)
    await Promise.all([db.ready(), short.ready()])
  })

  afterAll(async () => {
    await Promise.all([db?.end(), short?.end()])
    await pgc?.destroy()
  })

  it('every acknowledged write survives; a write in flight gets WriteOutcomeUnknownError; writes resume', async () => {
    const acked = new Map<string, number>() // "writer:seq" -> time acknowledged
    const unknown: string[] = []
    const unexpected: unknown[] = []
    let writing = true
    const writers = Array.from({ length: 4 }, async (_, writer) => {
      for (let seq = 0; seq < 100_000 && writing; seq++) {
        try {
          await db.query('INSERT INTO w (writer, seq) VALUES ($1, $2)', [writer, seq])
          acked.set(`${writer}:${seq}`, Date.now())
        } catch (err) {
          if (err instanceof WriteOutcomeUnknownError) unknown.push(`${writer}:${seq}`)
          else unexpected.push(err)
        }
      }
    })
    // A write that is surely mid-flight when the primary dies.
    const sleeper = db.query('INSERT INTO w (writer, seq) SELECT 99, 1 FROM pg_sleep(5)').then(
      () => null,
      (err: unknown) => err,
    )
    await until('the long write running on the primary', async () => {
      const rows = await direct(
        url(0),
        "SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%pg_sleep(5)%' AND pid <> pg_backend_pid()",
      )
      return rows.length > 0
    })
    await until('some acknowledged writes', () => acked.size >= 50, 10_000)

    const killedAt = Date.now()
    await pgc.kill(0)
    const sleeperError = await sleeper
    expect(sleeperError).toBeInstanceOf(WriteOutcomeUnknownError)
    expect((sleeperError as WriteOutcomeUnknownError).code).toBe('PGSPLIT_WRITE_OUTCOME_UNKNOWN')
    expect((sleeperError as WriteOutcomeUnknownError).node).toBe(nodeName(port(0)))
    expect((sleeperError as Error).cause).toBeInstanceOf(Error)

    // Nobody is promoted yet: a Cluster with a small failover.timeoutMs gives up with NoPrimaryError.
    const t0 = Date.now()
    const noPrimary = await short.query('INSERT INTO w (writer, seq) VALUES (98, 1)').then(
      () => null,
      (err: unknown) => err,
    )
    const waited = Date.now() - t0
    console.log(
      `[failover] write without a primary failed after ${waited} ms (failover.timeoutMs 1500): ${String(noPrimary)}`,
    )
    expect(noPrimary).toBeInstanceOf(NoPrimaryError)
    expect(waited).toBeGreaterThanOrEqual(1_000)
    expect(waited).toBeLessThan(1_500 + 5_000)

    // Promote the standby that has received the most WAL: with ANY 1 it holds every acknowledged commit.
    const positions = await Promise.all(
      [1, 2].map(async (i) => {
        const [row] = await direct<{ lsn: string }>(url(i), 'SELECT pg_last_wal_receive_lsn()::text AS lsn')
        const [hi, lo] = row!.lsn.split('/')
        return { i, lsn: row!.lsn, value: (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`) }
      }),
    )
    const best = positions[0]!.value >= positions[1]!.value ? positions[0]! : positions[1]!
    const other = best.i === 1 ? 2 : 1
    console.log(
      `[failover] standby receive LSNs: ${positions.map((p) => `node${p.i}=${p.lsn}`).join(', ')}; promoting node${best.i}`,
    )
    const ackedBeforePromotion = acked.size
    const promoteAt = Date.now()
    await pgc.promote(best.i)
    const promoted = Date.now()
    await pgc.repoint(other, best.i)
    await until('writes acknowledged again', () => acked.size > ackedBeforePromotion + 20, 20_000)
    writing = false
    await Promise.all(writers)

    // Writes acknowledged while the killed postmaster's backends lingered came before promoteAt.
    const firstAfter = Math.min(...[...acked.values()].filter((t) => t >= promoteAt))
    console.log(
      `[failover] kill -> promote() called ${promoteAt - killedAt} ms; first acknowledged write ` +
        `${firstAfter - promoteAt} ms after promote() was called (promote() itself returned after ` +
        `${promoted - promoteAt} ms: it also checkpoints); ${acked.size} acked, ${unknown.length} outcome unknown`,
    )
    expect(unexpected).toEqual([])

    const rows = await direct<{ writer: number; seq: number }>(url(best.i), 'SELECT writer, seq FROM w')
    const present = new Set(rows.map((r) => `${r.writer}:${r.seq}`))
    const missing = [...acked.keys()].filter((k) => !present.has(k))
    expect(missing).toEqual([])
    expect(present.has('98:1')).toBe(false)

    const failover = events.find((e) => e.name === 'failover')
    expect(failover?.payload).toMatchObject({ from: nodeName(port(0)), to: nodeName(port(best.i)) })
    console.log(`[failover] failover event: ${JSON.stringify(failover!.payload)}`)
    expect(events.find((e) => e.name === 'primaryLost')?.payload.node).toBe(nodeName(port(0)))
    expect(db.topology().primary).toBe(nodeName(port(best.i)))
  })

  it('the killed primary rejoined with pg_rewind shows up as a replica and takes reads', async () => {
    const newPrimary = pgc.nodes.findIndex((n) => n.role === 'primary')
    expect(newPrimary).toBeGreaterThan(0)
    await pgc.rejoin(0, newPrimary)
    await rejoinedAsReplica(db, port(0))
    const snap = db.topology().nodes.find((x) => x.name === nodeName(port(0)))!
    expect(snap).toMatchObject({ role: 'replica', state: 'up', fenced: false, timeline: 2 })
    await db.query('INSERT INTO w (writer, seq) VALUES (97, 1)')
  })
})
