/**
 * The scenario every backend of `pgsplit/testing` must pass, on one cluster whose tests run in
 * order (each starts from the state the previous one left): start, replicate, pause replay,
 * fail over, rejoin, stop and start, add a replica, destroy. A backend's test file calls
 * `describeClusterScenario` with what differs: its name, bounds, and what it can see of its
 * servers from here.
 */
import { dirname } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  type StartClusterOptions,
  startCluster,
  type TestCluster,
  type TestNode,
} from '../../src/testing/index.js'
import { eventually, adminQuery as query } from './reliability.js'

export interface ClusterScenario {
  readonly backend: 'local' | 'docker'
  /** More options of `startCluster` (the scenario sets the backend and 2 replicas); `image` for the docker backend. */
  readonly options?: Pick<StartClusterOptions, 'timeoutMs' | 'lowLevelBackup' | 'image'>
  /** Why the block is skipped here; its title then says so. */
  readonly skip?: string | undefined
  /** Bounds of the start (beforeAll) and of the destroy (afterAll); vitest's otherwise. */
  readonly startTimeoutMs?: number
  readonly destroyTimeoutMs?: number
  /** How long a replica may take to show a row, and how often to look. */
  readonly replicationTimeoutMs: number
  readonly pollMs: number
  /** The host every node's URL names, when the backend fixes it. */
  readonly host?: string
  /** The pg_stat_wal_receiver columns (with their values) of a standby streaming from `up`. */
  readonly senderOf: (up: TestNode) => Record<string, unknown>
  /**
   * Where the servers are processes of this machine: whether process `pid` is gone, and whether
   * a path exists (kill and destroy are then checked on the processes and directories too).
   */
  readonly localProcesses?: {
    readonly processGone: (pid: number) => boolean
    readonly pathExists: (path: string) => boolean
  }
}

async function rowsOf(url: string): Promise<string[]> {
  return (await query<{ v: string }>(url, 'SELECT v FROM t ORDER BY id')).map((r) => r.v)
}

async function postmasterPid(url: string): Promise<number> {
  const [row] = await query<{ pid: string }>(
    url,
    `SELECT split_part(pg_read_file('postmaster.pid'), E'\\n', 1) AS pid`,
  )
  return Number(row!.pid)
}

/** Defines the scenario's describe block for `spec.backend`. */
export function describeClusterScenario(spec: ClusterScenario): void {
  const title = `startCluster({ backend: "${spec.backend}" })`
  const replicated = (check: () => Promise<void>): Promise<void> =>
    eventually(check, spec.replicationTimeoutMs, spec.pollMs)
  const local = spec.localProcesses

  describe.skipIf(spec.skip !== undefined)(spec.skip ? `${title} (skipped: ${spec.skip})` : title, () => {
    let cluster: TestCluster
    const url = (i: number): string => cluster.nodes[i]!.url
    /** What the WAL receiver of the node at `nodeUrl` says, next to what streaming from `up` means. */
    const receiver = async (nodeUrl: string, up: TestNode) => {
      const [row] = await query<Record<string, unknown>>(
        nodeUrl,
        `SELECT pg_is_in_recovery() AS rec, status, received_tli AS tli, sender_host, sender_port
          FROM pg_stat_wal_receiver`,
      )
      return { row, streaming: { rec: true, status: 'streaming', ...spec.senderOf(up) } }
    }

    beforeAll(async () => {
      cluster = await startCluster({ ...spec.options, backend: spec.backend, replicas: 2 })
    }, spec.startTimeoutMs)
    afterAll(async () => {
      await cluster?.destroy()
    }, spec.destroyTimeoutMs)

    it('starts a primary and two streaming replicas', async () => {
      expect(cluster.backend).toBe(spec.backend)
      expect(cluster.nodes.map((n) => [n.name, n.role])).toEqual([
        ['node0', 'primary'],
        ['node1', 'replica'],
        ['node2', 'replica'],
      ])
      expect(cluster.primaryUrl).toBe(url(0))
      expect(cluster.replicaUrls).toEqual([url(1), url(2)])
      for (const node of cluster.nodes) {
        if (spec.host) expect(node.host).toBe(spec.host)
        const host = node.host.includes(':') ? `[${node.host}]` : node.host
        expect(node.url).toBe(`postgres://postgres:postgres@${host}:${node.port}/app`)
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
        const { row, streaming } = await receiver(replica, cluster.nodes[0]!)
        expect(row).toMatchObject(streaming)
      }
    })

    it('replicates a row written on the primary to both replicas', async () => {
      await query(cluster.primaryUrl, 'CREATE TABLE t (id serial PRIMARY KEY, v text NOT NULL)')
      await query(cluster.primaryUrl, `INSERT INTO t (v) VALUES ('first')`)
      for (const replica of cluster.replicaUrls) {
        await replicated(async () => expect(await rowsOf(replica)).toEqual(['first']))
      }
    })

    it('rejects a write on a replica with SQLSTATE 25006', async () => {
      await expect(query(url(1), `INSERT INTO t (v) VALUES ('nope')`)).rejects.toMatchObject({
        code: '25006',
      })
    })

    it('pauses replay on a replica (its lag grows) and resumes it (it catches up)', async () => {
      await cluster.pauseReplay(2)
      await query(cluster.primaryUrl, `INSERT INTO t (v) VALUES ('while paused')`)
      const [{ lsn } = { lsn: '' }] = await query<{ lsn: string }>(
        cluster.primaryUrl,
        'SELECT pg_current_wal_lsn() AS lsn',
      )
      // Replica 1 gets the row, replica 2 must not, even given time.
      await replicated(async () => expect(await rowsOf(url(1))).toEqual(['first', 'while paused']))
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
      await replicated(async () => {
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
      const oldPid = local ? await postmasterPid(url(0)) : undefined
      await cluster.kill(0)
      if (local && oldPid !== undefined) expect(local.processGone(oldPid)).toBe(true)
      expect(cluster.nodes[0]!.role).toBe('stopped')
      await expect(query(url(0), 'SELECT 1')).rejects.toThrow()

      await cluster.promote(1)
      expect(cluster.nodes.map((n) => n.role)).toEqual(['stopped', 'primary', 'replica'])
      expect(cluster.primaryUrl).toBe(url(1))
      expect(cluster.replicaUrls).toEqual([url(2)])

      await cluster.repoint(2, 1)
      const { row, streaming } = await receiver(url(2), cluster.nodes[1]!)
      expect(row).toMatchObject(streaming)

      await query(cluster.primaryUrl, `INSERT INTO t (v) VALUES ('after failover')`)
      await replicated(async () =>
        expect(await rowsOf(url(2))).toEqual(['first', 'while paused', 'after failover']),
      )
    })

    it('rejoins the old primary as a streaming standby of the new one (pg_rewind)', async () => {
      await cluster.rejoin(0, 1)
      expect(cluster.nodes.map((n) => n.role)).toEqual(['replica', 'primary', 'replica'])
      expect(cluster.replicaUrls).toEqual([url(0), url(2)])
      const { row, streaming } = await receiver(url(0), cluster.nodes[1]!)
      expect(row).toMatchObject({ ...streaming, tli: 2 })
      await replicated(async () =>
        expect(await rowsOf(url(0))).toEqual(['first', 'while paused', 'after failover']),
      )
    })

    it('stops and starts a replica, keeping its port', async () => {
      const port = cluster.nodes[2]!.port
      await cluster.stop(2)
      expect(cluster.nodes[2]!.role).toBe('stopped')
      expect(cluster.replicaUrls).toEqual([url(0)])
      await cluster.start(2)
      expect(cluster.nodes[2]!.role).toBe('replica')
      expect(cluster.nodes[2]!.port).toBe(port)
      await query(cluster.primaryUrl, `INSERT INTO t (v) VALUES ('after restart')`)
      await replicated(async () => expect((await rowsOf(url(2))).at(-1)).toBe('after restart'))
    })

    it('adds a replica that has all the data and streams', async () => {
      const node = await cluster.addReplica()
      expect(node).toMatchObject({ name: 'node3', role: 'replica' })
      if (spec.host) expect(node.host).toBe(spec.host)
      expect(cluster.nodes).toHaveLength(4)
      expect(cluster.replicaUrls).toContain(node.url)
      expect(await rowsOf(node.url)).toEqual(await rowsOf(cluster.primaryUrl))
      const { row, streaming } = await receiver(node.url, cluster.nodes[1]!)
      expect(row).toMatchObject(streaming)
    })

    it('destroy() leaves no server and is safe to call twice', async () => {
      const primaryUrl = cluster.primaryUrl
      const pids: number[] = []
      const dirs = new Set<string>()
      if (local) {
        for (const node of cluster.nodes) {
          pids.push(await postmasterPid(node.url))
          const [row] = await query<{ dir: string }>(
            node.url,
            `SELECT current_setting('data_directory') AS dir`,
          )
          dirs.add(dirname(row!.dir))
        }
        // Every node's directory is in the cluster's one base directory.
        expect(dirs.size).toBe(1)
        expect(local.pathExists([...dirs][0]!)).toBe(true)
      }

      await cluster.destroy()
      await cluster.destroy()
      await expect(query(primaryUrl, 'SELECT 1')).rejects.toThrow()
      await expect(cluster.start(0)).rejects.toThrow(/destroyed/)
      await expect(cluster.kill(0)).rejects.toThrow(/destroyed/)
      if (local) {
        for (const pid of pids) expect(local.processGone(pid)).toBe(true)
        expect(local.pathExists([...dirs][0]!)).toBe(false)
      }
    })
  })
}
