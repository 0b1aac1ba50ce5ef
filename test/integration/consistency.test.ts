import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Cluster, createCluster, parseToken } from '../../src/index.js'
import { startCluster, type TestCluster } from '../../src/testing/index.js'
import { eventually } from '../support/cluster.js'
import { startReplayChaos } from '../support/reliability.js'

let pgc: TestCluster
let primaryPort: number

async function tableOnReplicas(urls: string[], table: string): Promise<void> {
  await eventually(async () => {
    for (const url of urls) {
      const c = new pg.Client(url)
      await c.connect()
      const { rows } = await c.query('SELECT to_regclass($1) IS NOT NULL AS ok', [table])
      await c.end()
      if (!rows[0].ok) return false
    }
    return true
  })
}

beforeAll(async () => {
  pgc = await startCluster({ replicas: 2, backend: 'local' })
  primaryPort = pgc.nodes[0]!.port
  const c = new pg.Client(pgc.primaryUrl)
  await c.connect()
  await c.query('CREATE TABLE notes (id int PRIMARY KEY, body text)')
  await c.end()
  await tableOnReplicas(pgc.replicaUrls, 'notes')
})

afterAll(async () => {
  await pgc?.destroy()
})

interface LoopOptions {
  /** Read-after-write pairs per caller. */
  iterations: number
  firstId: number
  /** Replay pauses and resumes at random on the replicas while the loop runs. */
  chaos?: false | { spreadMs?: number }
  /** Concurrent callers, each in its own `db.session()` (1: one caller, no session). */
  callers?: number
}

/** INSERT then SELECT of the same row by each caller, counting reads that missed it. */
async function readAfterWriteLoop(db: Cluster, options: LoopOptions) {
  const { iterations, firstId, chaos = false, callers = 1 } = options
  let stale = 0
  let onReplica = 0
  let reads = 0
  const oneCaller = async (caller: number) => {
    for (let i = 0; i < iterations; i++) {
      const id = firstId + caller * iterations + i
      await db.query('INSERT INTO notes (id, body) VALUES ($1, $2)', [id, `n${id}`])
      const { rows } = await db.query<{ body: string; p: number }>(
        'SELECT body, inet_server_port() AS p FROM notes WHERE id = $1',
        [id],
      )
      reads++
      if (rows.length === 0 || rows[0]!.body !== `n${id}`) stale++
      else if (rows[0]!.p !== primaryPort) onReplica++
    }
  }
  const chaosLoop = chaos === false ? null : startReplayChaos(pgc, chaos)
  try {
    if (callers === 1) await oneCaller(0)
    else await Promise.all(Array.from({ length: callers }, (_, c) => db.session(() => oneCaller(c))))
  } finally {
    await chaosLoop?.stop()
  }
  return { stale, onReplica, reads }
}

describe('causal consistency', () => {
  it('5,000 read-after-write iterations with replay pausing at random: 0 stale, mostly on replicas', async () => {
    const db = createCluster({
      primary: pgc.primaryUrl,
      replicas: pgc.replicaUrls,
      consistency: 'causal',
      healthCheck: { intervalMs: 250 },
    })
    await db.ready()
    const { stale, onReplica } = await readAfterWriteLoop(db, { iterations: 5000, firstId: 1, chaos: {} })
    console.log(`causal loop: stale=${stale} servedByReplicas=${onReplica}/5000`)
    expect(stale).toBe(0)
    expect(onReplica).toBeGreaterThan(2500)
    await db.end()
    // A liveness bound only: 28 s alone, about 60 s on a loaded 2-core machine; a timeout would
    // leave the loop and its replay toggler running into the next tests.
  }, 180_000)

  it('24 concurrent sessions sharing position polls, replay pausing at random: 0 stale, mostly on replicas', async () => {
    // Reads waiting on one replica share its polls (ReplayWatch): one answer settles many reads
    // of different tokens, so a read released by another read's poll is the case to catch.
    const db = createCluster({
      primary: pgc.primaryUrl,
      replicas: pgc.replicaUrls,
      consistency: 'causal',
      causalWaitMs: 200,
      healthCheck: { intervalMs: 250 },
    })
    await db.ready()
    let result: Awaited<ReturnType<typeof readAfterWriteLoop>>
    try {
      result = await readAfterWriteLoop(db, {
        iterations: 125,
        firstId: 1_000_000,
        chaos: { spreadMs: 30 },
        callers: 24,
      })
    } finally {
      await db.end()
    }
    const { stale, onReplica, reads } = result
    console.log(`concurrent causal loop: stale=${stale} servedByReplicas=${onReplica}/${reads}`)
    expect(reads).toBe(3_000)
    expect(stale).toBe(0)
    expect(onReplica).toBeGreaterThan(1_500)
  }, 180_000)

  it('a causal read waiting for a replica holds none of its pooled connections', async () => {
    const db = createCluster({
      primary: pgc.primaryUrl,
      replicas: pgc.replicaUrls,
      consistency: 'causal',
      causalWaitMs: 10_000,
      pool: { max: 2 },
    })
    await db.ready()
    await db.query("INSERT INTO notes (id, body) VALUES (1100000, 'seen')")
    await eventually(async () => {
      const ports = await Promise.all(
        [0, 1].map(() =>
          db.replica.query<{ p: number }>('SELECT inet_server_port() AS p FROM notes WHERE id = 1100000'),
        ),
      )
      return ports.every((r) => r.rows.length === 1)
    })
    await pgc.pauseReplay(1)
    await pgc.pauseReplay(2)
    let waiting: Promise<{ body: string; p: number }[][]> = Promise.resolve([])
    try {
      // 20 sessions each write, then read their row: every replica is paused, so they all wait.
      waiting = Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          db.session(async () => {
            await db.query('INSERT INTO notes (id, body) VALUES ($1, $2)', [1_100_001 + i, `w${i}`])
            return (
              await db.query<{ body: string; p: number }>(
                'SELECT body, inet_server_port() AS p FROM notes WHERE id = $1',
                [1_100_001 + i],
              )
            ).rows
          }),
        ),
      )
      let settled = false
      void waiting.then(
        () => {
          settled = true
        },
        () => {
          settled = true
        },
      )
      await new Promise((r) => setTimeout(r, 300))
      // Eventual reads of the replicas still get their pools (2 connections each), at once.
      const plain = await Promise.all(
        Array.from({ length: 10 }, () =>
          db.query<{ body: string }>('SELECT body FROM notes WHERE id = 1100000', [], {
            consistency: 'eventual',
          }),
        ),
      )
      expect(plain.every((r) => r.rows[0]?.body === 'seen')).toBe(true)
      expect(settled).toBe(false)
      for (const node of db.topology().nodes.filter((n) => n.role === 'replica')) {
        expect(node.pool.total).toBeLessThanOrEqual(2)
        expect(node.pool.waiting).toBe(0)
      }
    } finally {
      await pgc.resumeReplay(1)
      await pgc.resumeReplay(2)
    }
    // Replay resumed: the polls see it and every waiting read runs on a replica, with its row.
    const rows = await waiting
    expect(rows.map((r) => r[0]?.body)).toEqual(Array.from({ length: 20 }, (_, i) => `w${i}`))
    expect(rows.every((r) => r[0]!.p !== primaryPort)).toBe(true)
    await db.end()
  }, 60_000)

  it('the same loop in eventual mode with a paused replica sees stale reads (the control: what causal mode prevents)', async () => {
    const db = createCluster({
      primary: pgc.primaryUrl,
      replicas: pgc.replicaUrls,
      consistency: 'eventual',
      // A huge bound: the paused replica keeps taking reads, as in naive replica helpers.
      maxLag: { bytes: 1e12, ms: 24 * 3_600_000 },
      healthCheck: { intervalMs: 250 },
    })
    await db.ready()
    await pgc.pauseReplay(1)
    try {
      const { stale } = await readAfterWriteLoop(db, { iterations: 200, firstId: 100_000 })
      console.log(`eventual loop: stale=${stale}/200`)
      expect(stale).toBeGreaterThan(0)
    } finally {
      await pgc.resumeReplay(1)
      await db.end()
    }
  })

  it('sessions scope tokens; a token moves to another Cluster object (read-your-writes across instances)', async () => {
    const a = createCluster({ primary: pgc.primaryUrl, replicas: pgc.replicaUrls })
    const b = createCluster({ primary: pgc.primaryUrl, replicas: pgc.replicaUrls })
    await Promise.all([a.ready(), b.ready()])
    await pgc.pauseReplay(1)
    await pgc.pauseReplay(2)
    try {
      const token = await a.session(async () => {
        await a.query("INSERT INTO notes (id, body) VALUES (200001, 'x')")
        const seen = await a.query('SELECT inet_server_port() AS p FROM notes WHERE id = 200001')
        expect(seen.rows).toEqual([{ p: primaryPort }])
        return a.lastWriteToken()
      })
      expect(token).toMatch(/^\d+:[0-9A-F]+\/[0-9A-F]+$/)
      // Another instance, eventual by default: with the token it reads the write...
      const withToken = await b.query('SELECT body FROM notes WHERE id = 200001', [], { after: token })
      expect(withToken.rows).toEqual([{ body: 'x' }])
      const inSession = await b.session(() => b.query('SELECT body FROM notes WHERE id = 200001'), { token })
      expect(inSession.rows).toEqual([{ body: 'x' }])
      // ...and without it, a paused replica answers: the row is not there yet.
      const without = await b.query('SELECT body FROM notes WHERE id = 200001')
      expect(without.rows).toEqual([])
    } finally {
      await pgc.resumeReplay(1)
      await pgc.resumeReplay(2)
    }
    // Once replicas have replayed it, token reads go back to replicas.
    const token = await a.session(async () => {
      await a.query("INSERT INTO notes (id, body) VALUES (200002, 'y')")
      return a.lastWriteToken()
    })
    await eventually(async () => {
      const { rows } = await b.query<{ p: number }>(
        'SELECT inet_server_port() AS p FROM notes WHERE id = 200002',
        [],
        {
          after: token,
        },
      )
      return rows.length === 1 && rows[0]!.p !== primaryPort
    })
    await a.end()
    await b.end()
  })

  it('transactions produce a token at commit; a rolled-back one does not', async () => {
    const db = createCluster({ primary: pgc.primaryUrl, replicas: pgc.replicaUrls, consistency: 'causal' })
    await db.ready()
    await db.session(async () => {
      expect(await db.lastWriteToken()).toBeUndefined()
      await db
        .transaction(async (tx) => {
          await tx.query("INSERT INTO notes (id, body) VALUES (300001, 'rb')")
          throw new Error('rollback')
        })
        .catch(() => undefined)
      expect(await db.lastWriteToken()).toBeUndefined()
      await db.transaction(async (tx) => {
        await tx.query("INSERT INTO notes (id, body) VALUES (300002, 'c')")
      })
      const token = await db.lastWriteToken()
      expect(token).toBeDefined()
      const t = parseToken(token!)
      const { rows } = await db.primary.query<{ ok: boolean }>(
        'SELECT pg_current_wal_lsn() >= $1::pg_lsn AS ok',
        [token!.slice(token!.indexOf(':') + 1)],
      )
      expect(rows[0]!.ok).toBe(true)
      expect(t.timeline).toBe(1)
    })
    await db.end()
  })

  it('sticky mode keeps reads on the primary for the window after a write, then releases them', async () => {
    const db = createCluster({
      primary: pgc.primaryUrl,
      replicas: pgc.replicaUrls,
      consistency: { mode: 'sticky', windowMs: 400 },
    })
    await db.ready()
    await db.session(async () => {
      expect((await db.query<{ p: number }>('SELECT inet_server_port() AS p')).rows[0]!.p).not.toBe(
        primaryPort,
      )
      await db.query("INSERT INTO notes (id, body) VALUES (400001, 's')")
      expect((await db.query<{ p: number }>('SELECT inet_server_port() AS p')).rows[0]!.p).toBe(primaryPort)
      await new Promise((r) => setTimeout(r, 500))
      expect((await db.query<{ p: number }>('SELECT inet_server_port() AS p')).rows[0]!.p).not.toBe(
        primaryPort,
      )
    })
    await db.end()
  })
})

describe('tokens after a failover', () => {
  it('a token from a timeline the cluster has left routes to the primary', async () => {
    const db = createCluster({
      primary: pgc.primaryUrl,
      replicas: pgc.replicaUrls,
      healthCheck: { intervalMs: 200 },
    })
    await db.ready()
    const old = await db.session(async () => {
      await db.query("INSERT INTO notes (id, body) VALUES (500001, 'before')")
      return db.lastWriteToken()
    })
    expect(parseToken(old!).timeline).toBe(1)
    await pgc.kill(0)
    await pgc.promote(1)
    await pgc.repoint(2, 1)
    const newPrimary = pgc.nodes[1]!.port
    await eventually(async () => db.topology().primary !== null && db.topology().timeline === 2, {
      what: 'failover seen',
    })
    await db.query("INSERT INTO notes (id, body) VALUES (500002, 'after')")
    const { rows } = await db.query<{ p: number }>('SELECT inet_server_port() AS p', [], { after: old })
    expect(rows[0]!.p).toBe(newPrimary)
    await db.end()
  })
})
