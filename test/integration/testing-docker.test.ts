import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { dockerUnavailableReason } from '../../src/testing/docker-backend.js'
import { startCluster, type TestCluster } from '../../src/testing/index.js'

// The docker backend against a real engine: the same scenario as the local backend's test. Where
// no engine answers (or testcontainers cannot load), the block is skipped and says why.

const unavailable = await dockerUnavailableReason()
if (unavailable) console.log(`testing-docker: skipped: ${unavailable}`)

async function query<R extends pg.QueryResultRow>(
  url: string,
  sql: string,
  params: unknown[] = [],
): Promise<R[]> {
  const client = new pg.Client({
    connectionString: url,
    connectionTimeoutMillis: 5_000,
    query_timeout: 10_000,
  })
  client.on('error', () => {})
  await client.connect()
  try {
    return (await client.query<R>(sql, params)).rows
  } finally {
    await client.end()
  }
}

/** Polls `check` until it stops throwing, for at most `timeoutMs`. */
async function eventually<T>(check: () => Promise<T>, timeoutMs = 15_000): Promise<T> {
  const started = Date.now()
  for (;;) {
    try {
      return await check()
    } catch (err) {
      if (Date.now() - started > timeoutMs) throw err
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }
}

async function rowsOf(url: string): Promise<string[]> {
  return (await query<{ v: string }>(url, 'SELECT v FROM t ORDER BY id')).map((r) => r.v)
}

describe.skipIf(unavailable !== undefined)(
  unavailable
    ? `startCluster({ backend: "docker" }) (skipped: ${unavailable})`
    : 'startCluster({ backend: "docker" })',
  () => {
    let cluster: TestCluster
    const url = (i: number): string => cluster.nodes[i]!.url

    beforeAll(async () => {
      // The first run pulls the image: more time than an operation needs.
      cluster = await startCluster({ backend: 'docker', replicas: 2, timeoutMs: 120_000 })
    }, 600_000)
    afterAll(async () => {
      await cluster?.destroy()
    }, 120_000)

    it('starts a primary and two streaming replicas on mapped ports', async () => {
      expect(cluster.backend).toBe('docker')
      expect(cluster.nodes.map((n) => [n.name, n.role])).toEqual([
        ['node0', 'primary'],
        ['node1', 'replica'],
        ['node2', 'replica'],
      ])
      expect(cluster.primaryUrl).toBe(url(0))
      expect(cluster.replicaUrls).toEqual([url(1), url(2)])
      for (const node of cluster.nodes) {
        expect(node.url).toMatch(new RegExp(`^postgres://postgres:postgres@[^/]+:${node.port}/app$`))
      }
      const [primary] = await query<{ rec: boolean; db: string }>(
        cluster.primaryUrl,
        'SELECT pg_is_in_recovery() AS rec, current_database() AS db',
      )
      expect(primary).toEqual({ rec: false, db: 'app' })
      const senders = await query<{ application_name: string; state: string }>(
        cluster.primaryUrl,
        'SELECT application_name, state FROM pg_stat_replication ORDER BY application_name',
      )
      expect(senders).toEqual([
        { application_name: 'node1', state: 'streaming' },
        { application_name: 'node2', state: 'streaming' },
      ])
    })

    it('replicates a row written on the primary to both replicas', async () => {
      await query(cluster.primaryUrl, 'CREATE TABLE t (id serial PRIMARY KEY, v text NOT NULL)')
      await query(cluster.primaryUrl, `INSERT INTO t (v) VALUES ('first')`)
      for (const replica of cluster.replicaUrls) {
        await eventually(async () => expect(await rowsOf(replica)).toEqual(['first']))
      }
    })

    it('rejects a write on a replica with SQLSTATE 25006', async () => {
      await expect(query(url(1), `INSERT INTO t (v) VALUES ('nope')`)).rejects.toMatchObject({
        code: '25006',
      })
    })

    it('pauses and resumes replay on a replica', async () => {
      await cluster.pauseReplay(2)
      await query(cluster.primaryUrl, `INSERT INTO t (v) VALUES ('while paused')`)
      await eventually(async () => expect(await rowsOf(url(1))).toEqual(['first', 'while paused']))
      await new Promise((resolve) => setTimeout(resolve, 300))
      expect(await rowsOf(url(2))).toEqual(['first'])
      await cluster.resumeReplay(2)
      await eventually(async () => expect(await rowsOf(url(2))).toEqual(['first', 'while paused']))
    })

    it('fails over: kill the primary, promote replica 1, repoint replica 2 to it', async () => {
      await cluster.kill(0)
      expect(cluster.nodes[0]!.role).toBe('stopped')
      await expect(query(url(0), 'SELECT 1')).rejects.toThrow()
      await cluster.promote(1)
      expect(cluster.primaryUrl).toBe(url(1))
      await cluster.repoint(2, 1)
      await query(cluster.primaryUrl, `INSERT INTO t (v) VALUES ('after failover')`)
      await eventually(async () =>
        expect(await rowsOf(url(2))).toEqual(['first', 'while paused', 'after failover']),
      )
      expect(cluster.replicaUrls).toEqual([url(2)])
    })

    it('rejoins the old primary as a standby of the new one (pg_rewind)', async () => {
      await cluster.rejoin(0, 1)
      expect(cluster.nodes.map((n) => n.role)).toEqual(['replica', 'primary', 'replica'])
      await eventually(async () =>
        expect(await rowsOf(url(0))).toEqual(['first', 'while paused', 'after failover']),
      )
    })

    it('stops and starts a replica, keeping its port; adds a replica', async () => {
      const port = cluster.nodes[2]!.port
      await cluster.stop(2)
      expect(cluster.nodes[2]!.role).toBe('stopped')
      await cluster.start(2)
      expect(cluster.nodes[2]!.port).toBe(port)
      expect(cluster.nodes[2]!.role).toBe('replica')
      const added = await cluster.addReplica()
      expect(added.name).toBe('node3')
      await eventually(async () =>
        expect(await rowsOf(added.url)).toEqual(['first', 'while paused', 'after failover']),
      )
    })

    it('destroy() removes everything and is safe to call twice', async () => {
      const primaryUrl = cluster.primaryUrl
      await cluster.destroy()
      await cluster.destroy()
      await expect(query(primaryUrl, 'SELECT 1')).rejects.toThrow()
      await expect(cluster.kill(0)).rejects.toThrow(/destroyed/)
    })
  },
)
