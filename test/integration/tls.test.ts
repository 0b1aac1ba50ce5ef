import { execFileSync } from 'node:child_process'
import { chmodSync, chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { type Cluster, type ClusterConfig, createCluster, NoPrimaryError } from '../../src/index.js'
import { startCluster, type TestCluster } from '../../src/testing/index.js'
import { serverOsUser } from '../../src/testing/process-utils.js'
import { adminQuery, expectNoLibraryConnections, timed, trackProcessErrors } from '../support/reliability.js'

// TLS passes through to pg: a cluster whose servers present a certificate of a test CA (made with
// openssl at test time), reached with `pool.ssl`, per-node `ssl`, or URLs with
// sslmode=verify-full&sslrootcert=...: connections are encrypted and verified; a wrong CA fails
// clearly, within bounds.

const APP = 'pgsplit-tls'
const dir = mkdtempSync(join(tmpdir(), 'pgsplit-tls-'))
const file = (name: string) => join(dir, name)

function openssl(args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' })
}

/** A CA, a server certificate for 127.0.0.1 signed by it, and an unrelated CA. */
function makeCertificates(): void {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  openssl([
    'req',
    '-x509',
    ...ec,
    '-keyout',
    'ca.key',
    '-out',
    'ca.crt',
    '-days',
    '2',
    '-subj',
    '/CN=pgsplit test CA',
  ])
  openssl(['req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1'])
  writeFileSync(file('san.ext'), 'subjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth\n')
  openssl([
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca.crt',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    'server.crt',
    '-days',
    '2',
    '-extfile',
    'san.ext',
  ])
  openssl([
    'req',
    '-x509',
    ...ec,
    '-keyout',
    'other-ca.key',
    '-out',
    'other-ca.crt',
    '-days',
    '2',
    '-subj',
    '/CN=another CA',
  ])
  // The server refuses a key others can read; when we are root it runs as the postgres user.
  chmodSync(dir, 0o755)
  for (const name of ['server.crt', 'ca.crt', 'other-ca.crt']) chmodSync(file(name), 0o644)
  chmodSync(file('server.key'), 0o600)
  const osUser = serverOsUser()
  if (osUser) chownSync(file('server.key'), osUser.uid, osUser.gid)
}

let pgc: TestCluster
const open: Cluster[] = []
const processErrors = trackProcessErrors()

function cluster(config: Partial<ClusterConfig>): Cluster {
  const db = createCluster({
    primary: pgc.primaryUrl,
    replicas: pgc.replicaUrls,
    healthCheck: { intervalMs: 200, timeoutMs: 2_000 },
    failover: { timeoutMs: 3_000 },
    ...config,
    pool: { connectionTimeoutMillis: 3_000, application_name: APP, ...config.pool },
  })
  open.push(db)
  return db
}

/** Whether the connection that served this statement is encrypted, and where it ran. */
async function sslOf(run: (sql: string) => Promise<{ rows: { ssl: boolean; port: number }[] }>) {
  const { rows } = await run(
    'SELECT ssl, inet_server_port() AS port FROM pg_stat_ssl WHERE pid = pg_backend_pid()',
  )
  return rows[0]!
}

beforeAll(async () => {
  makeCertificates()
  pgc = await startCluster({
    backend: 'local',
    replicas: 1,
    settings: { ssl: true, ssl_cert_file: file('server.crt'), ssl_key_file: file('server.key') },
  })
})

afterEach(async () => {
  await Promise.all(open.splice(0).map((db) => db.end()))
})

afterAll(async () => {
  await pgc?.destroy()
  rmSync(dir, { recursive: true, force: true })
  processErrors.dispose()
})

describe('TLS', () => {
  it('pool.ssl with the CA: reads and writes on verified TLS, the monitor too', async () => {
    const ca = readFileSync(file('ca.crt'), 'utf8')
    const db = cluster({ pool: { ssl: { ca, rejectUnauthorized: true } } })
    await db.ready({ timeoutMs: 10_000 })
    const replica = await sslOf((sql) => db.replica.query(sql))
    const primary = await sslOf((sql) => db.primary.query(sql))
    expect(replica).toEqual({ ssl: true, port: pgc.nodes[1]!.port })
    expect(primary).toEqual({ ssl: true, port: pgc.nodes[0]!.port })
    await db.transaction(async (tx) => {
      const { rows } = await tx.query('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()')
      expect(rows[0].ssl).toBe(true)
    })
    // The monitor's own connections take the same settings, on every node.
    for (const node of pgc.nodes) {
      const rows = await adminQuery<{ ssl: boolean }>(
        node.url,
        `SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
          WHERE a.application_name IN ('pgsplit-monitor', $1)`,
        [APP],
      )
      expect(rows.length, node.name).toBeGreaterThan(0)
      expect(rows.every((r) => r.ssl)).toBe(true)
    }
  })

  it('URLs with sslmode=verify-full&sslrootcert=...: every pooled connection is on TLS', async () => {
    const suffix = `?sslmode=verify-full&sslrootcert=${encodeURIComponent(file('ca.crt'))}`
    const db = cluster({ primary: pgc.primaryUrl + suffix, replicas: pgc.replicaUrls.map((u) => u + suffix) })
    await db.ready({ timeoutMs: 10_000 })
    const reads = await Promise.all(Array.from({ length: 5 }, () => sslOf((sql) => db.query(sql))))
    for (const r of reads) expect(r.ssl).toBe(true)
    expect((await sslOf((sql) => db.primary.query(sql))).ssl).toBe(true)
  })

  it('per-node ssl options pass through to that node only', async () => {
    const ca = readFileSync(file('ca.crt'), 'utf8')
    const db = cluster({
      primary: { url: pgc.primaryUrl, ssl: { ca, rejectUnauthorized: true } },
      replicas: [{ url: pgc.replicaUrls[0]!, ssl: false }],
    })
    await db.ready({ timeoutMs: 10_000 })
    expect(await sslOf((sql) => db.primary.query(sql))).toEqual({ ssl: true, port: pgc.nodes[0]!.port })
    expect(await sslOf((sql) => db.replica.query(sql))).toEqual({ ssl: false, port: pgc.nodes[1]!.port })
  })

  it('a wrong CA fails clearly (certificate not trusted) within bounds, for ready() and queries', async () => {
    const wrong = readFileSync(file('other-ca.crt'), 'utf8')
    const notTrusted =
      /self[- ]signed certificate|unable to verify|unable to get (local )?issuer certificate/i
    for (const config of [
      { pool: { ssl: { ca: wrong, rejectUnauthorized: true } } },
      {
        primary: `${pgc.primaryUrl}?sslmode=verify-full&sslrootcert=${encodeURIComponent(file('other-ca.crt'))}`,
        replicas: [],
      },
    ] as Partial<ClusterConfig>[]) {
      const db = cluster({ ...config, failover: { timeoutMs: 1_500 } })
      const ready = await timed(db.ready({ timeoutMs: 3_000 }))
      expect(ready.ok).toBe(false)
      expect(ready.error).toBeInstanceOf(NoPrimaryError)
      expect((ready.error as Error).message).toMatch(notTrusted)
      expect(ready.ms).toBeLessThan(10_000)
      for (const call of [() => db.query('SELECT 1'), () => db.query('CREATE TABLE never_made (id int)')]) {
        const result = await timed(call)
        expect(result.ok).toBe(false)
        expect(result.error).toBeInstanceOf(NoPrimaryError)
        expect((result.error as Error).message).toMatch(notTrusted)
        expect(result.ms).toBeLessThan(10_000)
      }
      for (const node of db.topology().nodes) expect(node.lastError).toMatch(notTrusted)
    }
  })

  it('leaves no connection and no unhandled error', async () => {
    await Promise.all(open.splice(0).map((db) => db.end()))
    await expectNoLibraryConnections(
      pgc.nodes.map((n) => n.url),
      APP,
      10_000,
    )
    expect(processErrors.unhandledRejections).toEqual([])
    expect(processErrors.uncaughtExceptions).toEqual([])
  })
})
