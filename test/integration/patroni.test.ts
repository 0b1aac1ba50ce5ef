import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createCluster } from '../../src/index.js'
import {
  type FaultProxy,
  type PatroniTestCluster,
  startCluster,
  startFaultProxy,
} from '../../src/testing/index.js'
import {
  adminRows,
  createLoadTable,
  LoadClient,
  runFault,
  type ScenarioResult,
  waitAllRunning,
} from '../support/patroni-scenario.js'
import { eventually } from '../support/reliability.js'

// Real etcd and Patroni (Debian's packages), synchronous_mode, three members; every failover
// here is Patroni's own (no scripted promote). Two pgsplit clusters run the same load at the
// same time: one follows Patroni's REST API, one probes on its own.

const log = process.env.PGSPLIT_TEST_LOG ? (l: string) => console.log(l) : undefined

describe('Patroni (etcd + 3 members, synchronous_mode)', () => {
  let pg: PatroniTestCluster
  let withSource: LoadClient
  let probeOnly: LoadClient
  const results: ScenarioResult[] = []
  const t0 = Date.now()

  beforeAll(async () => {
    pg = await startCluster({
      backend: 'patroni',
      replicas: 2,
      synchronous: true,
      // The member addReplica() adds joins with noloadbalance.
      tags: { 3: { noloadbalance: true } },
      ...(log ? { log } : {}),
    })
    await createLoadTable(pg)
    withSource = new LoadClient('patroni source', 1, pg, true)
    probeOnly = new LoadClient('own probes', 2, pg, false)
    await Promise.all([withSource.db.ready(), probeOnly.db.ready()])
  }, 150_000)

  afterAll(async () => {
    await withSource?.end()
    await probeOnly?.end()
    await pg?.destroy()
    if (results.length > 0) console.log(JSON.stringify(results.map(summary), null, 1))
    console.log(`patroni.test.ts: ${Math.round((Date.now() - t0) / 1000)} s`)
  }, 60_000)

  it("takes Patroni's leader and members (timeline, tags) into topology()", async () => {
    const leader = pg.nodes[(await pg.leader())!]!.name
    const topo = withSource.db.topology()
    expect(topo.primary).toBe(leader)
    expect(topo.source).toMatchObject({ kind: 'patroni', healthy: true, fallback: false, leader })
    expect(topo.source!.members.map((m) => m.name).sort()).toEqual(['node0', 'node1', 'node2'])
    expect(topo.source!.members.find((m) => m.name === leader)).toMatchObject({ role: 'leader', timeline: 1 })
    expect(probeOnly.db.topology().source).toBeNull()
  })

  it('adds a member Patroni lists, keeps noloadbalance members from reads, drops a member that left', async () => {
    const added = await pg.addReplica() // node3, tagged noloadbalance
    const node = await eventually(() => {
      const n = withSource.db.topology().nodes.find((x) => x.name === added.name)
      expect(n).toMatchObject({ role: 'replica', state: 'up' })
      return n!
    }, 20_000)
    expect(node.port).toBe(added.port)
    const ports = async () => {
      const seen = new Set<number>()
      for (let i = 0; i < 60; i++) {
        const r = await withSource.db.query<{ port: number }>('SELECT inet_server_port() AS port')
        seen.add(r.rows[0]!.port)
      }
      return seen
    }
    expect(await ports()).not.toContain(added.port)
    await pg.setTags(3, { noloadbalance: false })
    await eventually(async () => expect(await ports()).toContain(added.port), 20_000)
    // Patroni removes a member that stops from /cluster: pgsplit lets it go.
    await pg.stop(3)
    await eventually(
      () => expect(withSource.db.topology().nodes.map((n) => n.name)).not.toContain(added.name),
      20_000,
    )
    await waitAllRunning(pg, 30_000, 3)
  }, 120_000)

  it('falls back to its own discovery, and says so, when no REST endpoint answers', async () => {
    const proxies: FaultProxy[] = await Promise.all(
      pg.restUrls.map((u) => startFaultProxy({ target: new URL(u).host })),
    )
    const events: { healthy: boolean; reason: string }[] = []
    const db = createCluster({
      nodes: pg.nodes.slice(0, 3).map((n) => ({ url: n.url, name: n.name })),
      patroni: { urls: proxies.map((p) => `http://${p.host}:${p.port}`), timeoutMs: 300 },
    })
    db.on('topologySource', (e) => events.push(e))
    try {
      await db.ready()
      expect(db.topology().source).toMatchObject({ healthy: true, fallback: false })
      for (const p of proxies) p.setMode('reset')
      await eventually(() => expect(db.topology().source).toMatchObject({ healthy: false, fallback: true }))
      expect(events.at(-1)).toMatchObject({ healthy: false })
      expect(events.at(-1)!.reason).toMatch(/no Patroni REST endpoint answered.*falling back/)
      // Writes and reads go on under pgsplit's own discovery.
      await db.query(`INSERT INTO patroni_load (client, seq) VALUES (9, 1)`)
      await db.query('SELECT 1')
      for (const p of proxies) p.setMode('pass')
      await eventually(() => expect(db.topology().source).toMatchObject({ healthy: true, fallback: false }))
      expect(events.at(-1)).toMatchObject({ healthy: true })
    } finally {
      await db.end()
      await Promise.all(proxies.map((p) => p.close()))
    }
  })

  it('follows nodes given as an async function: re-read on an interval, members in and out', async () => {
    const all = pg.nodes.slice(0, 3).map((n) => ({ url: n.url, name: n.name }))
    let list = all.slice(0, 2)
    let calls = 0
    const db = createCluster({
      nodes: async () => {
        calls++
        return list
      },
      discovery: { intervalMs: 100 },
    })
    try {
      await db.ready()
      const names = () =>
        db
          .topology()
          .nodes.map((n) => n.name)
          .sort()
      expect(names()).toEqual(
        all
          .slice(0, 2)
          .map((n) => n.name)
          .sort(),
      )
      expect(db.topology().source).toMatchObject({ kind: 'function', healthy: true, fallback: false })
      list = all
      await eventually(() => expect(names()).toEqual(all.map((n) => n.name).sort()))
      const leader = pg.nodes[(await pg.leader())!]!.name
      expect(db.topology().primary).toBe(leader)
      await db.query('INSERT INTO patroni_load (client, seq) VALUES (8, 1) ON CONFLICT DO NOTHING')
      // Drop one replica from the list: it leaves.
      const gone = all.find((n) => n.name !== leader)!
      list = all.filter((n) => n !== gone)
      await eventually(() => expect(names()).not.toContain(gone.name))
      expect(calls).toBeGreaterThan(2)
    } finally {
      await db.end()
    }
  })

  it('reinitializes a replica from the leader; pgsplit takes reads there again', async () => {
    const leader = await pg.leader()
    const i = [0, 1, 2].find((x) => x !== leader)!
    const name = pg.nodes[i]!.name
    await pg.reinit(i)
    const member = (await pg.clusterState()).members.find((m) => m.name === name)
    expect(member?.state).toMatch(/^(running|streaming)$/)
    await eventually(
      () =>
        expect(withSource.db.topology().nodes.find((n) => n.name === name)).toMatchObject({ noReads: null }),
      20_000,
    )
  }, 90_000)

  const check = (r: ScenarioResult, replicasRestarted = false) => {
    const [src, own] = r.clients as [ScenarioResult['clients'][0], ScenarioResult['clients'][0]]
    // Writes flowed again for both (liveness, generous).
    for (const c of r.clients) expect(c.faultToFirstAckMs, c.label).not.toBeNull()
    // With the source, every acknowledged write came from Patroni's leader of that moment, but
    // for a write acknowledged in the instant between a leader change and the next poll.
    expect(src.nonLeaderAcksOutsideRace).toBe(0)
    // Synchronous mode: no acknowledged write lost. Patroni 3.0.2 can give the lock back to a
    // leader that resumes after a freeze and rewind the interim leader: the writes that leader
    // acknowledged (as the leader, to both clients) are then lost by Patroni itself; nothing else.
    const interim = r.leaders
      .map((l) => l.leader)
      .filter((l): l is string => l !== null && l !== r.finalLeader)
    for (const c of [src, own]) {
      for (const who of Object.keys(c.lostBy))
        expect(interim, `${c.label} lost writes of ${who}`).toContain(who)
    }
    const lockReturned = r.fault === 'freeze-leader' && r.finalLeader === r.oldLeader && interim.length > 0
    if (!lockReturned) expect(src.lost).toBe(0)
    // Reads went to healthy replicas throughout. (After a freeze Patroni restarts replicas to
    // follow the new leader and rewinds the old one: a read in flight there can fail.)
    if (!replicasRestarted) {
      expect(src.readsFailed).toBe(0)
      expect(own.readsFailed).toBe(0)
    }
  }

  it('switchover under load', async () => {
    const r = await runFault(pg, [withSource, probeOnly], 'switchover', log ? { log } : {})
    results.push(r)
    check(r)
  }, 120_000)

  it("kill -9 of the leader's Patroni and postmaster under load (Patroni's automatic failover)", async () => {
    const r = await runFault(pg, [withSource, probeOnly], 'kill-leader', log ? { log } : {})
    results.push(r)
    check(r)
  }, 150_000)

  it('leader frozen (SIGSTOP) past the ttl under load', async () => {
    const r = await runFault(pg, [withSource, probeOnly], 'freeze-leader', {
      freezeMs: 14_000,
      ...(log ? { log } : {}),
    })
    results.push(r)
    check(r, true)
    const rows = await adminRows<{ n: string }>(pg.primaryUrl, 'SELECT count(*) AS n FROM patroni_load')
    expect(Number(rows[0]!.n)).toBeGreaterThan(0)
  }, 150_000)
})

function summary(r: ScenarioResult) {
  return {
    fault: r.fault,
    leaderChangeMs: r.leaderChangeMs,
    leaders: r.leaders,
    finalLeader: r.finalLeader,
    reinitialized: r.reinitialized,
    durationMs: r.durationMs,
    clients: r.clients.map((c) => ({
      label: c.label,
      faultToFirstAckMs: c.faultToFirstAckMs,
      leaderChangeToFirstAckMs: c.leaderChangeToFirstAckMs,
      writableToFirstAckMs: c.writableToFirstAckMs,
      longestGapMs: c.longestGapMs,
      acked: c.writesAcked,
      failed: c.writesFailed,
      failedKinds: c.failedWriteKinds,
      nonLeaderAcks: c.nonLeaderAcks,
      nonLeaderAcksOutsideRace: c.nonLeaderAcksOutsideRace,
      lost: c.lost,
      lostBy: c.lostBy,
      readsOk: c.readsOk,
      readsFailed: c.readsFailed,
      readErrors: c.readErrors,
    })),
  }
}
