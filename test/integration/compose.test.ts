import { randomBytes } from 'node:crypto'
import net from 'node:net'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Cluster, createCluster } from '../../src/index.js'
import { dockerUnavailableReason } from '../../src/testing/docker-backend.js'
import { run, runOk, skipUnlessCi, testImage } from '../support/docker.js'
import { eventually, adminQuery as query } from '../support/reliability.js'

// docker/compose.yml as its README section tells users to run it: `up -d --scale replica=3`,
// then pgsplit through the published ports. The tutorials' 5-step check, then synchronous
// replication and scaling down and up, each on a Compose project of its own (unique name,
// free ports) that `down -v` must leave no trace of.

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const composeFile = join(root, 'docker', 'compose.yml')
const image = testImage()

/** `docker compose` (v2) when the plugin is there, else `docker-compose` (1.29 in Debian 12). */
async function findCompose(): Promise<Compose | string> {
  const v2 = await run('docker', ['compose', 'version', '--short'], { timeoutMs: 15_000 })
  if (v2.code === 0) return { cmd: 'docker', pre: ['compose'], version: v2.stdout.trim() }
  const v1 = await run('docker-compose', ['version', '--short'], { timeoutMs: 15_000 })
  if (v1.code === 0) return { cmd: 'docker-compose', pre: [], version: v1.stdout.trim() }
  return 'neither `docker compose` nor `docker-compose` runs here'
}

async function unavailable(): Promise<string | undefined> {
  const engine = await dockerUnavailableReason(undefined, image)
  if (engine) return engine
  const compose = await findCompose()
  if (typeof compose === 'string') return compose
  if ((await run('docker', ['image', 'inspect', image], { timeoutMs: 15_000 })).code !== 0) {
    const pulled = await run('docker', ['pull', '-q', image], { timeoutMs: 300_000 })
    if (pulled.code !== 0)
      return `image ${image} is not on the engine and cannot be pulled (set PGSPLIT_TEST_DOCKER_IMAGE or PGSPLIT_DOCKER_IMAGE)`
  }
  return undefined
}

const skip = skipUnlessCi('compose.test.ts', await unavailable())
type Compose = { cmd: string; pre: string[]; version: string }
const found = skip ? undefined : await findCompose()
const compose = typeof found === 'object' ? found : undefined

/**
 * `n` consecutive ports free on 127.0.0.1 (checked by binding each), from a random base below
 * the kernel's ephemeral range (32768-60999), where the other tests' port-0 servers land.
 */
async function freePorts(n: number): Promise<number[]> {
  const free = (port: number) =>
    new Promise<boolean>((resolve) => {
      const srv = net.createServer()
      srv.once('error', () => resolve(false))
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)))
    })
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 12_000)
    const ports = Array.from({ length: n }, (_, i) => base + i)
    let ok = true
    for (const p of ports) {
      ok = await free(p)
      if (!ok) break
    }
    if (ok) return ports
  }
  throw new Error(`no ${n} consecutive free ports found on 127.0.0.1`)
}

interface Project {
  readonly name: string
  readonly primaryPort: number
  readonly replicaPorts: number[]
  env: NodeJS.ProcessEnv
}

async function newProject(replicaPorts: number, env: NodeJS.ProcessEnv = {}): Promise<Project> {
  const [primaryPort, ...ports] = await freePorts(1 + replicaPorts)
  const name = `pgsplit-test-${randomBytes(4).toString('hex')}`
  return {
    name,
    primaryPort: primaryPort!,
    replicaPorts: ports,
    env: {
      ...process.env,
      POSTGRES_IMAGE: image,
      PRIMARY_PORT: String(primaryPort),
      REPLICA_PORTS: `${ports[0]}-${ports.at(-1)}`,
      ...env,
    },
  }
}

const dc = (p: Project, args: string[], timeoutMs = 300_000): Promise<string> =>
  runOk(compose!.cmd, [...compose!.pre, '-p', p.name, '-f', composeFile, ...args], { env: p.env, timeoutMs })

const url = (port: number): string => `postgres://app:secret@127.0.0.1:${port}/app`

/** Container ids of the project's `service` (all services when omitted), running or not. */
async function containers(p: Project, service?: string): Promise<string[]> {
  const filters = ['--filter', `label=com.docker.compose.project=${p.name}`]
  if (service) filters.push('--filter', `label=com.docker.compose.service=${service}`)
  return (await runOk('docker', ['ps', '-aq', ...filters])).split('\n').filter(Boolean)
}

async function health(id: string): Promise<string> {
  return (
    await runOk('docker', [
      'inspect',
      '-f',
      '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}',
      id,
    ])
  ).trim()
}

/** Waits until the project has `replicas` replica containers and every container is healthy (or running, without a healthcheck). */
async function waitHealthy(p: Project, replicas: number, timeoutMs = 240_000): Promise<void> {
  await eventually(
    async () => {
      const ids = await containers(p, 'replica')
      expect(ids).toHaveLength(replicas)
      const states = await Promise.all((await containers(p)).map(async (id) => health(id)))
      expect(
        states.every((s) => s === 'healthy' || s === 'running'),
        `states: ${states.join(', ')}`,
      ).toBe(true)
    },
    timeoutMs,
    1_000,
  )
}

/** Ports of the replicas that stream from the primary, from their slots (`replica_<port>`): the way the README gives. */
async function streamingReplicaPorts(primaryUrl: string): Promise<number[]> {
  const rows = await query<{ slot_name: string }>(
    primaryUrl,
    `SELECT slot_name FROM pg_replication_slots WHERE active AND slot_name LIKE 'replica\\_%' ORDER BY slot_name`,
  )
  return rows.map((r) => Number(r.slot_name.slice('replica_'.length)))
}

async function rows(port: number): Promise<string[]> {
  return (await query<{ v: string }>(url(port), 'SELECT v FROM t ORDER BY id')).map((r) => r.v)
}

async function volumeNames(): Promise<Set<string>> {
  return new Set((await runOk('docker', ['volume', 'ls', '-q'])).split('\n').filter(Boolean))
}

/**
 * No ERROR in the primary's log: the replicas' start-up (port claims, slots, clones) attempts
 * nothing that fails, e.g. no "replication slot ... does not exist".
 */
async function primaryLogHasNoError(p: Project): Promise<void> {
  const log = await dc(p, ['logs', '--no-color', 'primary'], 60_000)
  expect(log).toMatch(/database system is ready to accept connections/)
  expect(log.split('\n').filter((l) => /\b(ERROR|PANIC):/.test(l))).toEqual([])
}

/** `down -v`, then: no container, volume or network of the project, and no volume that was not there before. */
async function downLeavesNothing(p: Project, volumesBefore: Set<string>): Promise<void> {
  await primaryLogHasNoError(p)
  await dc(p, ['down', '-v', '--timeout', '10'], 180_000)
  const label = `label=com.docker.compose.project=${p.name}`
  expect(await runOk('docker', ['ps', '-aq', '--filter', label])).toBe('')
  expect(await runOk('docker', ['volume', 'ls', '-q', '--filter', label])).toBe('')
  expect(await runOk('docker', ['network', 'ls', '-q', '--filter', label])).toBe('')
  const added = [...(await volumeNames())].filter((v) => !volumesBefore.has(v))
  expect(added, 'volumes made during the test and still there (anonymous volumes?)').toEqual([])
}

/** Mounts of type `volume` of container `id` (the primary's named volume; nothing on a replica). */
async function volumeMounts(id: string): Promise<string[]> {
  const out = await runOk('docker', [
    'inspect',
    '-f',
    '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}',
    id,
  ])
  return out.trim().split(' ').filter(Boolean)
}

describe.skipIf(skip !== undefined)(
  skip
    ? `docker/compose.yml (skipped: ${skip})`
    : `docker/compose.yml with ${compose?.cmd} ${compose?.pre.join(' ')} ${compose?.version} (${image})`,
  () => {
    it('is the file the README says works with Compose v2 and docker-compose 1.29', async () => {
      // 1.29 rejects a top-level `name:` and has no `up --wait`.
      const { readFile } = await import('node:fs/promises')
      expect(await readFile(composeFile, 'utf8')).not.toMatch(/^name:/m)
      if (compose!.cmd === 'docker-compose') expect(compose!.version).toMatch(/^1\.(29|[3-9]\d)\.|^[2-9]\./)
    })

    describe('the 5-step check through one pgsplit object and the published ports', () => {
      let p: Project
      let db: Cluster
      let volumesBefore: Set<string>
      let ports: number[] = []
      let promoted = 0

      beforeAll(async () => {
        volumesBefore = await volumeNames()
        p = await newProject(5)
        await dc(p, ['up', '-d', '--scale', 'replica=3'])
        await waitHealthy(p, 3)
      }, 600_000)

      afterAll(async () => {
        await db?.end()
        if (p)
          await run(
            compose!.cmd,
            [...compose!.pre, '-p', p.name, '-f', composeFile, 'down', '-v', '--timeout', '5'],
            { env: p.env, timeoutMs: 180_000 },
          )
      }, 200_000)

      it('starts a primary and 3 streaming replicas on the first ports of REPLICA_PORTS, without anonymous volumes', async () => {
        ports = await eventually(
          async () => {
            const found = await streamingReplicaPorts(url(p.primaryPort))
            expect(found).toHaveLength(3)
            return found
          },
          30_000,
          250,
        )
        expect(ports).toEqual(p.replicaPorts.slice(0, 3))
        for (const port of ports) {
          const [r] = await query<{ rec: boolean; port: string }>(
            url(port),
            `SELECT pg_is_in_recovery() AS rec, current_setting('port') AS port`,
          )
          expect(r).toEqual({ rec: true, port: String(port) })
        }
        const [primary] = await containers(p, 'primary')
        const primaryVolumes = await volumeMounts(primary!)
        expect(primaryVolumes).toHaveLength(1)
        expect(primaryVolumes[0]).toMatch(/primary-data$/)
        for (const id of [...(await containers(p, 'replica')), ...(await containers(p, 'replica-ports'))]) {
          expect(await volumeMounts(id)).toEqual([])
        }

        db = createCluster({
          primary: { url: url(p.primaryPort), name: 'primary' },
          replicas: ports.map((port) => ({ url: url(port), name: `replica_${port}` })),
          healthCheck: { intervalMs: 200, timeoutMs: 2_000 },
        })
        await eventually(
          () => {
            const t = db.topology()
            expect(t.primary).toBe('primary')
            expect(
              t.nodes
                .filter((n) => n.role === 'replica' && n.state === 'up')
                .map((n) => n.name)
                .sort(),
            ).toEqual(ports.map((port) => `replica_${port}`))
          },
          30_000,
          200,
        )
      })

      const writeAndDelete = async (tag: string, replicaPorts: () => number[]) => {
        await db.query('INSERT INTO t (v) VALUES ($1), ($2)', [`${tag}-keep`, `${tag}-gone`])
        await db.query('DELETE FROM t WHERE v = $1', [`${tag}-gone`])
        const [{ expected }] = (
          await db.primary.query<{ expected: string[] }>(
            'SELECT coalesce(array_agg(v ORDER BY id), ARRAY[]::text[]) AS expected FROM t',
          )
        ).rows as [{ expected: string[] }]
        expect(expected).toContain(`${tag}-keep`)
        expect(expected).not.toContain(`${tag}-gone`)
        for (const port of replicaPorts()) {
          await eventually(async () => expect(await rows(port)).toEqual(expected), 30_000, 100)
        }
        // And reads through pgsplit, from whichever replica it picks.
        await eventually(
          async () => {
            const { rows: seen } = await db.replica.query<{ v: string }>('SELECT v FROM t ORDER BY id')
            expect(seen.map((r) => r.v)).toEqual(expected)
          },
          30_000,
          100,
        )
      }

      const replicasRefuseWrites = async (replicaPorts: number[]) => {
        for (const port of replicaPorts) {
          await expect(query(url(port), `INSERT INTO t (v) VALUES ('no')`)).rejects.toMatchObject({
            code: '25006',
          })
        }
      }

      it('step 1: a write and a delete on the primary are seen on every replica', async () => {
        await db.query('CREATE TABLE t (id serial PRIMARY KEY, v text NOT NULL)')
        await writeAndDelete('one', () => ports)
      })

      it('step 2: replicas refuse writes', async () => {
        await replicasRefuseWrites(ports)
      })

      it('step 3: a replica added while it runs (--scale replica=4) has all the data, on the next port', async () => {
        await dc(p, ['up', '-d', '--no-recreate', '--scale', 'replica=4'])
        await waitHealthy(p, 4)
        const all = await eventually(
          async () => {
            const found = await streamingReplicaPorts(url(p.primaryPort))
            expect(found).toHaveLength(4)
            return found
          },
          30_000,
          250,
        )
        const added = all.find((port) => !ports.includes(port))!
        expect(added).toBe(p.replicaPorts[3])
        expect(await rows(added)).toEqual(await rows(p.primaryPort))
        await db.addNode({ url: url(added), name: `replica_${added}` })
        ports = all
      })

      it('keeps every replica on its port across a restart of its container', async () => {
        const ids = await containers(p, 'replica')
        await runOk('docker', ['restart', '-t', '10', ...ids], { timeoutMs: 180_000 })
        await waitHealthy(p, 4)
        expect(
          await eventually(
            async () => {
              const found = await streamingReplicaPorts(url(p.primaryPort))
              expect(found).toHaveLength(4)
              return found
            },
            30_000,
            250,
          ),
        ).toEqual(ports)
        const expected = await rows(p.primaryPort)
        for (const port of ports)
          await eventually(async () => expect(await rows(port)).toEqual(expected), 30_000, 100)
      })

      it('step 4: the primary stops, a replica is promoted, the others follow it and pgsplit writes to it', async () => {
        // Every replica has the last write: any of them may be promoted and the others follow.
        const [{ lsn }] = (await query<{ lsn: string }>(
          url(p.primaryPort),
          'SELECT pg_current_wal_lsn()::text AS lsn',
        )) as [{ lsn: string }]
        for (const port of ports) {
          await eventually(
            async () => {
              const [r] = await query<{ ok: boolean }>(
                url(port),
                'SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS ok',
                [lsn],
              )
              expect(r!.ok).toBe(true)
            },
            30_000,
            100,
          )
        }
        await dc(p, ['stop', '-t', '20', 'primary'], 120_000)
        promoted = ports[0]!
        const followers = ports.slice(1)
        await query(url(promoted), 'SELECT pg_promote(true, 60)')
        for (const port of followers) {
          await query(url(promoted), `SELECT pg_create_physical_replication_slot('replica_${port}', true)`)
          // The replicas share a network namespace: the promoted one is 127.0.0.1:<its port> to them.
          await query(
            url(port),
            `ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=${promoted} user=replicator password=replicator-secret application_name=replica_${port}'`,
          )
          await query(url(port), 'SELECT pg_reload_conf()')
        }
        for (const port of followers) {
          await eventually(
            async () => {
              const [r] = await query<{ status: string; sender_port: number }>(
                url(port),
                'SELECT status, sender_port FROM pg_stat_wal_receiver',
              )
              expect(r).toEqual({ status: 'streaming', sender_port: promoted })
            },
            60_000,
            200,
          )
        }
        await db.query(`INSERT INTO t (v) VALUES ('after-failover')`)
        expect(db.topology().primary).toBe(`replica_${promoted}`)
        expect(await rows(promoted)).toContain('after-failover')
        // The healthcheck is right for either role: the promoted replica stays healthy.
        const byPort = new Map<number, string>()
        for (const id of await containers(p, 'replica')) {
          const port = Number(
            (await runOk('docker', ['exec', id, 'cat', '/var/lib/pgsplit-replica/port'])).trim(),
          )
          byPort.set(port, id)
        }
        await eventually(
          async () => expect(await health(byPort.get(promoted)!)).toBe('healthy'),
          60_000,
          1_000,
        )
      })

      it('step 5: steps 1 and 2 again, on the new primary', async () => {
        const followers = ports.filter((port) => port !== promoted)
        await writeAndDelete('two', () => followers)
        await replicasRefuseWrites(followers)
      })

      it('down -v leaves no container, volume or network', async () => {
        await db.end()
        await downLeavesNothing(p, volumesBefore)
      }, 200_000)
    })

    describe('SYNCHRONOUS_REPLICAS=1, scaling down and up', () => {
      let p: Project
      let volumesBefore: Set<string>

      beforeAll(async () => {
        volumesBefore = await volumeNames()
        // Three ports for up to three replicas: scaling up again must take over the removed ones' slots.
        p = await newProject(3, { SYNCHRONOUS_REPLICAS: '1' })
        await dc(p, ['up', '-d', '--scale', 'replica=1'])
        await waitHealthy(p, 1)
      }, 600_000)

      afterAll(async () => {
        if (p)
          await run(
            compose!.cmd,
            [...compose!.pre, '-p', p.name, '-f', composeFile, 'down', '-v', '--timeout', '5'],
            { env: p.env, timeoutMs: 180_000 },
          )
      }, 200_000)

      it('a commit waits while no replica is up and completes when one is back', async () => {
        const primary = url(p.primaryPort)
        const [s] = await query<{ names: string }>(
          primary,
          `SELECT current_setting('synchronous_standby_names') AS names`,
        )
        expect(s!.names).toBe('ANY 1 (*)')
        await query(primary, 'CREATE TABLE s (id int PRIMARY KEY)')
        await dc(p, ['up', '-d', '--no-recreate', '--scale', 'replica=0'])
        expect(await containers(p, 'replica')).toEqual([])
        const commit = query(primary, 'INSERT INTO s VALUES (1)', [], 240_000)
        // Waiting for a synchronous standby is what the primary says the session does.
        await eventually(
          async () => {
            const waiting = await query(
              primary,
              `SELECT 1 FROM pg_stat_activity WHERE wait_event = 'SyncRep' AND query LIKE 'INSERT INTO s%'`,
            )
            expect(waiting).toHaveLength(1)
          },
          30_000,
          200,
        )
        await dc(p, ['up', '-d', '--no-recreate', '--scale', 'replica=1'])
        await commit
        expect(await query(primary, 'SELECT id FROM s')).toEqual([{ id: 1 }])
      }, 400_000)

      it('scales up to 3, down to 1 and up to 3 again; the new replicas take over the ports of the removed ones', async () => {
        const primary = url(p.primaryPort)
        await dc(p, ['up', '-d', '--no-recreate', '--scale', 'replica=3'])
        await waitHealthy(p, 3)
        await eventually(
          async () => expect(await streamingReplicaPorts(primary)).toEqual(p.replicaPorts),
          30_000,
          250,
        )
        await query(primary, 'INSERT INTO s VALUES (2)')
        await dc(p, ['up', '-d', '--no-recreate', '--scale', 'replica=1'])
        await waitHealthy(p, 1)
        await eventually(
          async () => expect(await streamingReplicaPorts(primary)).toHaveLength(1),
          30_000,
          250,
        )
        await query(primary, 'INSERT INTO s VALUES (3)')
        await dc(p, ['up', '-d', '--no-recreate', '--scale', 'replica=3'])
        await waitHealthy(p, 3)
        await eventually(
          async () => expect(await streamingReplicaPorts(primary)).toEqual(p.replicaPorts),
          60_000,
          250,
        )
        for (const port of p.replicaPorts) {
          await eventually(
            async () =>
              expect(await query(url(port), 'SELECT id FROM s ORDER BY id')).toEqual([
                { id: 1 },
                { id: 2 },
                { id: 3 },
              ]),
            30_000,
            100,
          )
        }
      }, 600_000)

      it('down -v leaves no container, volume or network', async () => {
        await downLeavesNothing(p, volumesBefore)
      }, 200_000)
    })
  },
)
