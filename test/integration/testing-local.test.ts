import { existsSync } from 'node:fs'
import { dirname } from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startCluster, type TestCluster } from '../../src/testing/index.js'

// Real servers of the system's PostgreSQL, started by the local backend. The tests of the first
// block share one cluster and run in order: each starts from the state the previous one left.

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
async function eventually<T>(check: () => Promise<T>, timeoutMs = 10_000): Promise<T> {
  const started = Date.now()
  for (;;) {
    try {
      return await check()
    } catch (err) {
      if (Date.now() - started > timeoutMs) throw err
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
}

async function postmasterPid(url: string): Promise<number> {
  const [row] = await query<{ pid: string }>(
    url,
    `SELECT split_part(pg_read_file('postmaster.pid'), E'\\n', 1) AS pid`,
  )
  return Number(row!.pid)
}

async function rowsOf(url: string): Promise<string[]> {
  return (await query<{ v: string }>(url, 'SELECT v FROM t ORDER BY id')).map((r) => r.v)
}

const processGone = (pid: number): boolean => !existsSync(`/proc/${pid}`)

describe('startCluster({ backend: "local" })', () => {
  let cluster: TestCluster
  const url = (i: number): string => cluster.nodes[i]!.url

  beforeAll(async () => {
    cluster = await startCluster({ backend: 'local', replicas: 2 })
  })
  afterAll(async () => {
    await cluster?.destroy()
  })

  it('starts a primary and two streaming replicas', async () => {
    expect(cluster.backend).toBe('local')
    expect(cluster.nodes.map((n) => [n.name, n.role])).toEqual([
      ['node0', 'primary'],
      ['node1', 'replica'],
      ['node2', 'replica'],
    ])
    expect(cluster.primaryUrl).toBe(url(0))
    expect(cluster.replicaUrls).toEqual([url(1), url(2)])
    for (const node of cluster.nodes) {
      expect(node.host).toBe('127.0.0.1')
      expect(node.url).toBe(`postgres://postgres:postgres@127.0.0.1:${node.port}/app`)
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
    for (const replica of cluster.replicaUrls) {
      const [row] = await query<{ rec: boolean; status: string }>(
        replica,
        'SELECT pg_is_in_recovery() AS rec, (SELECT status FROM pg_stat_wal_receiver) AS status',
      )
      expect(row).toEqual({ rec: true, status: 'streaming' })
    }
  })

  it('replicates a row written on the primary to both replicas', async () => {
    await query(cluster.primaryUrl, 'CREATE TABLE t (id serial PRIMARY KEY, v text NOT NULL)')
    await query(cluster.primaryUrl, `INSERT INTO t (v) VALUES ('first')`)
    for (const replica of cluster.replicaUrls) {
      await eventually(async () => expect(await rowsOf(replica)).toEqual(['first']))
    }
  })

  it('rejects a write on a replica with SQLSTATE 25006', async () => {
    await expect(query(url(1), `INSERT INTO t (v) VALUES ('nope')`)).rejects.toMatchObject({ code: '25006' })
  })

  it('pauses replay on a replica (its lag grows) and resumes it (it catches up)', async () => {
    await cluster.pauseReplay(2)
    await query(cluster.primaryUrl, `INSERT INTO t (v) VALUES ('while paused')`)
    const [{ lsn } = { lsn: '' }] = await query<{ lsn: string }>(
      cluster.primaryUrl,
      'SELECT pg_current_wal_lsn() AS lsn',
    )
    // Replica 1 gets the row, replica 2 must not, even given time.
    await eventually(async () => expect(await rowsOf(url(1))).toEqual(['first', 'while paused']))
    await new Promise((resolve) => setTimeout(resolve, 300))
    const [paused] = await query<{ behind: string; paused: boolean }>(
      url(2),
      'SELECT pg_wal_lsn_diff($1, pg_last_wal_replay_lsn())::text AS behind, pg_is_wal_replay_paused() AS paused',
      [lsn],
    )
    expect(paused!.paused).toBe(true)
    expect(Number(paused!.behind)).toBeGreaterThan(0)
    expect(await rowsOf(url(2))).toEqual(['first'])

    await cluster.resumeReplay(2)
    await eventually(async () => {
      const [row] = await query<{ behind: string }>(
        url(2),
        'SELECT pg_wal_lsn_diff($1, pg_last_wal_replay_lsn())::text AS behind',
        [lsn],
      )
      expect(Number(row!.behind)).toBeLessThanOrEqual(0)
    })
    expect(await rowsOf(url(2))).toEqual(['first', 'while paused'])
  })

  it('fails over: kill the primary, promote replica 1, repoint replica 2 to it', async () => {
    const oldPid = await postmasterPid(url(0))
    await cluster.kill(0)
    expect(processGone(oldPid)).toBe(true)
    expect(cluster.nodes[0]!.role).toBe('stopped')
    await expect(query(url(0), 'SELECT 1')).rejects.toThrow()

    await cluster.promote(1)
    expect(cluster.nodes.map((n) => n.role)).toEqual(['stopped', 'primary', 'replica'])
    expect(cluster.primaryUrl).toBe(url(1))
    expect(cluster.replicaUrls).toEqual([url(2)])

    await cluster.repoint(2, 1)
    const [receiver] = await query<{ status: string; sender_port: number }>(
      url(2),
      'SELECT status, sender_port FROM pg_stat_wal_receiver',
    )
    expect(receiver).toEqual({ status: 'streaming', sender_port: cluster.nodes[1]!.port })

    await query(cluster.primaryUrl, `INSERT INTO t (v) VALUES ('after failover')`)
    await eventually(async () =>
      expect(await rowsOf(url(2))).toEqual(['first', 'while paused', 'after failover']),
    )
  })

  it('rejoins the old primary as a streaming standby of the new one', async () => {
    await cluster.rejoin(0, 1)
    expect(cluster.nodes.map((n) => n.role)).toEqual(['replica', 'primary', 'replica'])
    expect(cluster.replicaUrls).toEqual([url(0), url(2)])
    const [row] = await query<{ rec: boolean; status: string; sender_port: number; tli: number }>(
      url(0),
      `SELECT pg_is_in_recovery() AS rec, status, sender_port, received_tli AS tli FROM pg_stat_wal_receiver`,
    )
    expect(row).toEqual({ rec: true, status: 'streaming', sender_port: cluster.nodes[1]!.port, tli: 2 })
    await eventually(async () =>
      expect(await rowsOf(url(0))).toEqual(['first', 'while paused', 'after failover']),
    )
  })

  it('stops and starts a replica', async () => {
    await cluster.stop(2)
    expect(cluster.nodes[2]!.role).toBe('stopped')
    expect(cluster.replicaUrls).toEqual([url(0)])
    await cluster.start(2)
    expect(cluster.nodes[2]!.role).toBe('replica')
    await query(cluster.primaryUrl, `INSERT INTO t (v) VALUES ('after restart')`)
    await eventually(async () => expect((await rowsOf(url(2))).at(-1)).toBe('after restart'))
  })

  it('adds a replica that has all the data and streams', async () => {
    const node = await cluster.addReplica()
    expect(node).toMatchObject({ name: 'node3', role: 'replica', host: '127.0.0.1' })
    expect(cluster.nodes).toHaveLength(4)
    expect(cluster.replicaUrls).toContain(node.url)
    expect(await rowsOf(node.url)).toEqual(await rowsOf(cluster.primaryUrl))
    const [row] = await query<{ status: string; sender_port: number }>(
      node.url,
      'SELECT status, sender_port FROM pg_stat_wal_receiver',
    )
    expect(row).toEqual({ status: 'streaming', sender_port: cluster.nodes[1]!.port })
  })

  it('destroy() leaves no server process and no directory, and is safe to call twice', async () => {
    const pids: number[] = []
    const dirs = new Set<string>()
    for (const node of cluster.nodes) {
      pids.push(await postmasterPid(node.url))
      const [row] = await query<{ dir: string }>(node.url, `SELECT current_setting('data_directory') AS dir`)
      dirs.add(dirname(row!.dir))
    }
    expect(dirs.size).toBe(1)
    const [baseDir] = [...dirs]
    expect(existsSync(baseDir!)).toBe(true)

    await cluster.destroy()
    await cluster.destroy()
    for (const pid of pids) expect(processGone(pid)).toBe(true)
    expect(existsSync(baseDir!)).toBe(false)
    await expect(cluster.start(0)).rejects.toThrow(/destroyed/)
  })
})

describe('startCluster({ backend: "local", synchronous: 1 })', () => {
  let cluster: TestCluster

  beforeAll(async () => {
    cluster = await startCluster({ backend: 'local', replicas: 2, synchronous: 1, database: 'sync_db' })
  })
  afterAll(async () => {
    await cluster?.destroy()
  })

  it('sets synchronous_standby_names and has a quorum standby', async () => {
    const [names] = await query<{ s: string }>(
      cluster.primaryUrl,
      `SELECT current_setting('synchronous_standby_names') AS s`,
    )
    expect(names!.s).toBe('ANY 1 ("node1", "node2")')
    const senders = await query<{ application_name: string; sync_state: string }>(
      cluster.primaryUrl,
      'SELECT application_name, sync_state FROM pg_stat_replication ORDER BY application_name',
    )
    expect(senders).toEqual([
      { application_name: 'node1', sync_state: 'quorum' },
      { application_name: 'node2', sync_state: 'quorum' },
    ])
    expect(cluster.primaryUrl).toMatch(/\/sync_db$/)
    // A commit returns (a standby confirmed it) and the row is there.
    await query(cluster.primaryUrl, 'CREATE TABLE s (id int)')
    await query(cluster.primaryUrl, 'INSERT INTO s VALUES (1)')
    // ANY 1: one standby confirmed; the next test promotes node1, so it must have the row too.
    for (const replica of cluster.replicaUrls) {
      await eventually(async () => expect(await query(replica, 'SELECT id FROM s')).toEqual([{ id: 1 }]))
    }
  })

  it('keeps commits working after a failover', async () => {
    await cluster.kill(0)
    await cluster.promote(1)
    await cluster.repoint(2, 1)
    const [names] = await query<{ s: string }>(
      cluster.primaryUrl,
      `SELECT current_setting('synchronous_standby_names') AS s`,
    )
    expect(names!.s).toBe('ANY 1 ("node0", "node2")')
    await query(cluster.primaryUrl, 'INSERT INTO s VALUES (2)')
    await eventually(async () => {
      const rows = await query<{ id: number }>(cluster.nodes[2]!.url, 'SELECT id FROM s ORDER BY id')
      expect(rows.map((r) => r.id)).toEqual([1, 2])
    })
  })
})

describe('startCluster({ backend: "local" }) with a standby ahead of the promoted one', () => {
  let cluster: TestCluster
  const url = (i: number): string => cluster.nodes[i]!.url

  beforeAll(async () => {
    cluster = await startCluster({ backend: 'local', replicas: 2, timeoutMs: 20_000 })
  })
  afterAll(async () => {
    await cluster?.destroy()
  })

  it('repoint() fails fast and names rejoin(); rejoin() rewinds the standby and makes it follow', async () => {
    // node1 stops receiving, node2 gets one more transaction: node2 is ahead when node1 is promoted.
    await query(url(1), `ALTER SYSTEM SET primary_conninfo = ''`)
    await query(url(1), 'SELECT pg_reload_conf()')
    await eventually(async () =>
      expect(await query(url(1), 'SELECT pid FROM pg_stat_wal_receiver')).toEqual([]),
    )
    await query(cluster.primaryUrl, 'CREATE TABLE lost (id int)')
    await eventually(async () =>
      expect(await query(url(2), `SELECT to_regclass('lost')::text AS t`)).toEqual([{ t: 'lost' }]),
    )
    await cluster.kill(0)
    await cluster.promote(1)

    const started = Date.now()
    await expect(cluster.repoint(2, 1)).rejects.toThrow(/node2: .*cannot follow node1.*rejoin\(2, 1\)/s)
    expect(Date.now() - started).toBeLessThan(10_000)

    await cluster.rejoin(2, 1)
    expect(cluster.nodes.map((n) => n.role)).toEqual(['stopped', 'primary', 'replica'])
    const [row] = await query<{ status: string; tli: number; lost: string | null }>(
      url(2),
      `SELECT status, received_tli AS tli, to_regclass('lost')::text AS lost FROM pg_stat_wal_receiver`,
    )
    expect(row).toEqual({ status: 'streaming', tli: 2, lost: null })
  })
})
