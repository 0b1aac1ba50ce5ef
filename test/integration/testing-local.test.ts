import { existsSync } from 'node:fs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startCluster, type TestCluster } from '../../src/testing/index.js'
import { describeClusterScenario } from '../support/cluster-scenario.js'
import { eventually, adminQuery as query } from '../support/reliability.js'

// Real servers of the system's PostgreSQL, started by the local backend: the scenario every
// backend passes, then what only this backend's tests look at.

describeClusterScenario({
  backend: 'local',
  replicationTimeoutMs: 10_000,
  pollMs: 50,
  host: '127.0.0.1',
  senderOf: (up) => ({ sender_port: up.port }),
  localProcesses: { processGone: (pid) => !existsSync(`/proc/${pid}`), pathExists: existsSync },
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
