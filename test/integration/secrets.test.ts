import util from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Cluster, type ClusterEvents, createCluster, redact } from '../../src/index.js'
import { startCluster, type TestCluster } from '../../src/testing/index.js'
import {
  adminQuery,
  errorText,
  eventually,
  sleep,
  timed,
  trackProcessErrors,
} from '../support/reliability.js'

// The password of the cluster's role never shows up: not in error messages, stacks or causes,
// not in event payloads, not in anything logged, not in topology() snapshots, not in
// util.inspect of the cluster; through a run with failures (wrong SQL, a killed replica, a wrong
// password, an unreachable node) and a failover (kill -9 of the primary, promotion).

const SECRET = 'Zx9-distinctive-S3cret!'
const WRONG = 'Wr0ng-distinctive-Pw?'
/** Any of these in any output is a leak (raw, URL-encoded, and a fragment of each). */
const NEEDLES = [
  SECRET,
  encodeURIComponent(SECRET),
  'distinctive-S3cret',
  WRONG,
  encodeURIComponent(WRONG),
  'Wr0ng-distinctive',
]
const ROLE = 'pgsplit_app'
const EVENTS: (keyof ClusterEvents)[] = [
  'error',
  'nodeDown',
  'nodeUp',
  'replicaLagging',
  'replicaCaughtUp',
  'primaryLost',
  'failover',
  'splitBrain',
  'reclassified',
  'readRetried',
]

let pgc: TestCluster
const outputs: { where: string; text: string }[] = []
const record = (where: string, text: string) => outputs.push({ where, text })
const processErrors = trackProcessErrors()
const clusters: Cluster[] = []

function appUrl(port: number, password = SECRET): string {
  return `postgres://${ROLE}:${encodeURIComponent(password)}@127.0.0.1:${port}/app`
}

function inspectAll(value: unknown): string {
  return `${util.inspect(value, { depth: 6 })}\n${util.inspect(value, { depth: 6, showHidden: true })}`
}

/** A cluster whose every event, error and snapshot goes to `outputs`. */
function watched(config: Parameters<typeof createCluster>[0], label: string): Cluster {
  const db = createCluster(config)
  clusters.push(db)
  for (const event of EVENTS) {
    db.on(event, (...args: unknown[]) => {
      record(`${label} event ${event}`, `${JSON.stringify(args)}\n${inspectAll(args)}`)
      for (const arg of args)
        if (arg instanceof Error) record(`${label} event ${event} error`, errorText(arg))
    })
  }
  return db
}

async function attempt(label: string, fn: () => Promise<unknown>): Promise<void> {
  const result = await timed(fn)
  if (!result.ok) record(`${label} error`, `${errorText(result.error)}\n${inspectAll(result.error)}`)
}

function snapshot(db: Cluster, label: string): void {
  const topology = db.topology()
  record(`${label} topology`, `${JSON.stringify(topology)}\n${inspectAll(topology)}`)
}

// console.* of the whole file, the library's included.
const consoleMethods = ['log', 'info', 'warn', 'error', 'debug', 'trace'] as const
const originals = new Map<string, (...args: unknown[]) => void>()

beforeAll(async () => {
  for (const method of consoleMethods) {
    const original = console[method].bind(console)
    originals.set(method, original)
    console[method] = (...args: unknown[]) => {
      record(`console.${method}`, util.format(...args))
      original(...args)
    }
  }
  process.on('warning', onWarning)
  pgc = await startCluster({ backend: 'local', replicas: 2 })
  // A login role of its own: scram over TCP (the test cluster's pg_hba.conf), pg_monitor so its
  // probes see the WAL receiver's timeline, and rights on one table.
  await adminQuery(pgc.primaryUrl, `CREATE ROLE ${ROLE} LOGIN PASSWORD '${SECRET}' IN ROLE pg_monitor`)
  await adminQuery(pgc.primaryUrl, 'CREATE TABLE secrets_t (id int PRIMARY KEY, v text)')
  await adminQuery(pgc.primaryUrl, `GRANT ALL ON secrets_t TO ${ROLE}`)
})

function onWarning(warning: Error): void {
  record('process warning', errorText(warning))
}

afterAll(async () => {
  await Promise.all(clusters.map((db) => db.end()))
  await pgc?.destroy()
  for (const method of consoleMethods) console[method] = originals.get(method)! as never
  process.off('warning', onWarning)
  processErrors.dispose()
})

describe('secrets', () => {
  it('the password appears in no error, event, log line, snapshot or inspection, through failures and a failover', async () => {
    const ports = pgc.nodes.map((n) => n.port)
    const db = watched(
      {
        primary: appUrl(ports[0]!),
        replicas: [appUrl(ports[1]!), appUrl(ports[2]!)],
        healthCheck: { intervalMs: 200, timeoutMs: 1_000, maxBackoffMs: 1_000 },
        failover: { timeoutMs: 10_000 },
        pool: { connectionTimeoutMillis: 2_000, query_timeout: 5_000 },
      },
      'main',
    )
    const snapshots = setInterval(() => snapshot(db, 'main'), 100)
    try {
      await db.ready({ timeoutMs: 20_000 })
      const { rows } = await db.query<{ user: string }>('SELECT current_user AS user')
      expect(rows[0]!.user).toBe(ROLE)
      record('inspect cluster', inspectAll(db))
      const client = await db.connect()
      record(
        'inspect pinned client',
        `${util.inspect(client, { depth: 3 })}\n${JSON.stringify(Object.keys(client))}`,
      )
      client.release()

      // Wrong SQL of every kind, reads and writes.
      await db.query("INSERT INTO secrets_t VALUES (1, 'one')")
      for (const sql of [
        'SELEC 1',
        'SELECT 1/0',
        'SELECT * FROM no_such_table',
        "INSERT INTO secrets_t VALUES (1, 'dup')",
        'CREATE TABLE not_allowed (id int)',
        'BEGIN',
      ]) {
        await attempt(`sql ${sql}`, () => db.query(sql))
      }
      await attempt('bad token', () => db.query('SELECT 1', { after: 'garbage' }))
      await attempt('transaction', () =>
        db.transaction(async (tx) => {
          await tx.query("INSERT INTO secrets_t VALUES (2, 'two')")
          await tx.query('SELECT 1/0')
        }),
      )
      await attempt('addNode unreachable', () => db.addNode(appUrl(1)))
      snapshot(db, 'after addNode')
      await attempt('removeNode', () => db.removeNode('127.0.0.1:1'))
      await attempt('addNode duplicate', () => db.addNode(appUrl(ports[1]!)))

      // A killed replica: reads go on elsewhere, events and errors tell about it.
      await pgc.kill(2)
      for (let i = 0; i < 30; i++)
        await attempt('read with a dead replica', () => db.query('SELECT v FROM secrets_t'))
      await eventually(() => expect(db.topology().nodes[2]!.state).toBe('down'), 10_000)

      // Failover: kill -9 of the primary under writes, promotion of node1.
      let writing = true
      let id = 100
      const writer = (async () => {
        while (writing) {
          await attempt('write during failover', () =>
            db.query('INSERT INTO secrets_t VALUES ($1, $2)', [id++, 'x']),
          )
          await sleep(5)
        }
      })()
      await sleep(200)
      await pgc.kill(0)
      await sleep(300)
      await pgc.promote(1)
      await eventually(() => expect(db.topology().primary).toBe(`127.0.0.1:${ports[1]}`), 15_000)
      await sleep(300)
      writing = false
      await writer
      await db.query("INSERT INTO secrets_t VALUES (3, 'after failover')")
      snapshot(db, 'after failover')
      record('inspect cluster after failover', inspectAll(db))
    } finally {
      clearInterval(snapshots)
    }

    // A wrong password: authentication fails, and says so without echoing either password.
    const wrong = watched(
      {
        primary: appUrl(ports[1]!, WRONG),
        healthCheck: { intervalMs: 200, timeoutMs: 1_000 },
        failover: { timeoutMs: 1_000 },
      },
      'wrong',
    )
    await attempt('wrong password ready', () => wrong.ready({ timeoutMs: 1_500 }))
    await attempt('wrong password query', () => wrong.query('SELECT 1'))
    snapshot(wrong, 'wrong')
    expect(wrong.topology().nodes[0]!.lastError).toMatch(/password authentication failed/)
    // A bad config that holds the password.
    await attempt('config error', async () =>
      createCluster({ primary: appUrl(ports[1]!), replicas: appUrl(2) as never }),
    )
    await attempt('config error (bad URL)', async () =>
      createCluster({ primary: `postgres://${ROLE}:${SECRET}@[::1/app` }),
    )

    await Promise.all([db.end(), wrong.end()])
    record('inspect ended cluster', inspectAll(db))

    // The run did produce what there is to scan.
    const kinds = new Set(outputs.map((o) => o.where.replace(/^(main|wrong) /, '').split(' ')[0]))
    console.log(`[secrets] scanned ${outputs.length} outputs: ${[...kinds].sort().join(', ')}`)
    const where = new Set(outputs.map((o) => o.where))
    for (const expected of [
      'main event nodeDown',
      'main event primaryLost',
      'main event failover',
      'main event error',
      'sql SELEC 1 error',
      'wrong password query error',
      'config error error',
    ]) {
      expect(where.has(expected), `no output of kind "${expected}" was produced`).toBe(true)
    }
    const leaks = outputs.filter((o) => NEEDLES.some((needle) => o.text.includes(needle)))
    const context = (text: string) => {
      const at = Math.max(...NEEDLES.map((n) => text.indexOf(n)))
      return text.slice(Math.max(0, at - 300), at + 40)
    }
    expect(leaks.map((l) => `${l.where}: ...${context(l.text)}`)).toEqual([])
    expect(processErrors.unhandledRejections).toEqual([])
    expect(processErrors.uncaughtExceptions).toEqual([])
  })

  it('connection strings printed anywhere are redacted', () => {
    const url = appUrl(5432)
    expect(redact(url)).toBe(`postgres://${ROLE}:***@127.0.0.1:5432/app`)
    expect(redact(`connect to ${url} failed; retry ${appUrl(5433, WRONG)}`)).toBe(
      `connect to postgres://${ROLE}:***@127.0.0.1:5432/app failed; retry postgres://${ROLE}:***@127.0.0.1:5433/app`,
    )
    expect(redact(`host=127.0.0.1 user=${ROLE} password=${SECRET} dbname=app`)).toBe(
      `host=127.0.0.1 user=${ROLE} password=*** dbname=app`,
    )
    expect(redact(`password='${SECRET} with spaces' host=h`)).toBe('password=*** host=h')
    for (const text of [url, `x ${url} y`, `password=${SECRET}`]) {
      for (const needle of NEEDLES) expect(redact(text)).not.toContain(needle)
    }
  })
})
