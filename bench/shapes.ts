/**
 * More shapes of traffic, each pgsplit against its natural baseline, interleaved as everywhere:
 * (a) 4 replicas: pgsplit against the hand split round-robin over 4 pools, PK reads;
 * (b) named prepared statements (`{ name, text, values }`) against a raw `pg.Pool` on one replica;
 * (c) 1 KB and 100 KB result rows against a raw `pg.Pool` on one replica;
 * (d) TLS on every node (verified against a test CA) against a raw `pg.Pool` with the same `ssl`.
 * One cluster of a primary and 4 replicas with `ssl = on` serves them all (a client that does not
 * ask for TLS gets a plain connection). Fewer repetitions than the other benchmarks, to keep the
 * whole run short: see `reps` in the result.
 */
import { execFileSync } from 'node:child_process'
import { chmodSync, chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { startCluster, type TestCluster } from '../src/testing/index.js'
import { serverOsUser } from '../src/testing/process-utils.js'
import {
  ACCOUNT_READ_SQL,
  balanceOf,
  HandSplit,
  randomAccountId,
  replicaQueries,
  seedAccounts,
} from './hand-split.js'
import type { BenchContext } from './lib/context.js'
import { waitForReplicas, withPg } from './lib/context.js'
import { postmasterPids, serverCpuSampler } from './lib/cpu.js'
import { type Comparison, compare, interleave } from './lib/interleave.js'
import { type LoadResult, runLoad } from './lib/load.js'
import { type Cluster, createCluster } from './lib/pgsplit.js'

/** Rows of the payload tables: enough that reads spread over several pages, small enough to seed fast. */
const ROWS_1K = 1_000
const ROWS_100K = 100

export interface ShapeComparison extends Comparison {
  /** What the baseline is, in words. */
  baselineIs: string
  /** Share of pgsplit's queries in the measured runs that ran on replicas (1 for read-only shapes). */
  pgsplitReplicaShare: number
  /** pgsplit's queries per replica port in the measured runs. */
  pgsplitByReplica: Record<number, number>
}

export interface ShapesResult {
  fourReplicas: ShapeComparison & {
    /** Busiest / least busy of the 4 replicas in pgsplit's runs. */
    replicaBalance: number | null
  }
  prepared: ShapeComparison
  rows1k: ShapeComparison
  rows100k: ShapeComparison
  /** `skipped` with the reason when no certificate could be made (no openssl). */
  tls: (ShapeComparison & { verified: { baseline: boolean; pgsplit: boolean } }) | { skipped: string }
  replicas: number
  concurrency: number
  poolMax: number
  durationMs: number
  /** Repetitions per shape (fewer than the other benchmarks' to bound the run time). */
  reps: number
  clusterStartS: number
}

interface Certificates {
  dir: string
  ca: string
  settings: Record<string, string | boolean>
}

/** A test CA and a server certificate for 127.0.0.1 (as test/integration/tls.test.ts makes them). */
function makeCertificates(): Certificates {
  const dir = mkdtempSync(join(tmpdir(), 'pgsplit-bench-tls-'))
  const openssl = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' })
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
    '/CN=bench CA',
  ])
  openssl(['req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1'])
  writeFileSync(join(dir, 'san.ext'), 'subjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth\n')
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
  // The server refuses a key others can read; as root it runs as the postgres user.
  chmodSync(dir, 0o755)
  chmodSync(join(dir, 'server.crt'), 0o644)
  chmodSync(join(dir, 'server.key'), 0o600)
  const osUser = serverOsUser()
  if (osUser) chownSync(join(dir, 'server.key'), osUser.uid, osUser.gid)
  return {
    dir,
    ca: readFileSync(join(dir, 'ca.crt'), 'utf8'),
    settings: { ssl: true, ssl_cert_file: join(dir, 'server.crt'), ssl_key_file: join(dir, 'server.key') },
  }
}

/** Two payload tables: 1 KB and 100 KB of incompressible text per row (md5 hex), by id. */
async function seedPayloads(cluster: TestCluster): Promise<void> {
  await withPg(cluster.primaryUrl, async (c) => {
    for (const [table, rows, md5s] of [
      ['bench_rows_1k', ROWS_1K, 32],
      ['bench_rows_100k', ROWS_100K, 3_200],
    ] as const) {
      await c.query(`DROP TABLE IF EXISTS ${table}`)
      await c.query(`CREATE TABLE ${table} (id int PRIMARY KEY, body text NOT NULL)`)
      await c.query(
        `INSERT INTO ${table} SELECT i, (SELECT string_agg(md5(i || ':' || g), '') FROM generate_series(1, ${md5s}) g)
           FROM generate_series(1, ${rows}) i`,
      )
      await c.query(`VACUUM ANALYZE ${table}`)
    }
  })
  await waitForReplicas(cluster)
}

const replicaShare = (db: Cluster, before: { primary: number; replica: number }): number => {
  const now = byRole(db)
  const r = now.replica - before.replica
  return r / Math.max(1, r + now.primary - before.primary)
}

function byRole(db: Cluster): { primary: number; replica: number } {
  let primary = 0
  let replica = 0
  for (const n of db.topology().nodes) {
    if (n.role === 'primary') primary += n.queries
    else replica += n.queries
  }
  return { primary, replica }
}

export async function runShapes(ctx: BenchContext): Promise<ShapesResult> {
  const reps = Math.min(ctx.reps, 4)
  let certs: Certificates | null = null
  let tlsSkipped: string | null = null
  try {
    certs = makeCertificates()
  } catch (err) {
    tlsSkipped = `could not make a test certificate with openssl: ${(err as Error).message.split('\n')[0]}`
  }
  const t0 = Date.now()
  let cluster: TestCluster | null = null
  const open: { end(): Promise<unknown> }[] = []
  // Ends what a shape opened as soon as it is done (its pools and probes would weigh on the next).
  const close = async (...items: { end(): Promise<unknown> }[]) => {
    for (const item of items) {
      const i = open.indexOf(item)
      if (i >= 0) open.splice(i, 1)
    }
    await Promise.all(items.map((item) => item.end().catch(() => {})))
  }
  try {
    cluster = await startCluster({
      replicas: 4,
      backend: 'local',
      settings: { max_connections: 200, ...(certs?.settings ?? {}) },
    })
    const c = cluster
    await seedAccounts(c)
    await seedPayloads(c)
    const clusterStartS = Math.round((Date.now() - t0) / 100) / 10
    ctx.log(
      `  shapes: 1 primary + 4 replicas${certs ? ' (ssl on)' : ''}, seeded, in ${clusterStartS} s; ${reps} reps per shape`,
    )
    const serverCpu = serverCpuSampler(() => postmasterPids(c))
    const load = (op: () => Promise<unknown>, durationMs = ctx.durationMs) =>
      runLoad(op, { concurrency: ctx.concurrency, durationMs, serverCpu })
    const side = async (
      name: string,
      baselineIs: string,
      db: Cluster,
      base: () => Promise<unknown>,
      cand: () => Promise<unknown>,
    ): Promise<ShapeComparison> => {
      await load(base, ctx.warmupMs)
      await load(cand, ctx.warmupMs)
      const before = byRole(db)
      const beforeByReplica = replicaQueries(db)
      const runs = await interleave(
        reps,
        () => load(base),
        (): Promise<LoadResult> => load(cand),
        (rep, a, b) =>
          ctx.log(
            `  shapes ${name} rep ${rep + 1}/${reps}: baseline ${a.opsPerSec.toFixed(0)}/s, pgsplit ${b.opsPerSec.toFixed(0)}/s (${(b.opsPerSec / a.opsPerSec).toFixed(3)})`,
          ),
      )
      return {
        ...compare(runs.baseline, runs.candidate),
        baselineIs,
        pgsplitReplicaShare: replicaShare(db, before),
        pgsplitByReplica: replicaQueries(db, beforeByReplica),
      }
    }
    const split = (replicas: string[], pool: Record<string, unknown> = {}): Cluster => {
      const db = createCluster({ primary: c.primaryUrl, replicas, pool: { max: ctx.poolMax, ...pool } })
      db.on('error', () => {})
      open.push(db)
      return db
    }
    const rawPool = (url: string, extra: pg.PoolConfig = {}): pg.Pool => {
      const p = new pg.Pool({ connectionString: url, max: ctx.poolMax, ...extra })
      p.on('error', () => {})
      open.push(p)
      return p
    }

    // (a) 4 replicas, PK reads: the hand split's round robin against pgsplit's choice.
    const hand = new HandSplit(c.primaryUrl, c.replicaUrls, ctx.poolMax)
    open.push(hand)
    const db4 = split(c.replicaUrls)
    await db4.ready()
    const four = await side(
      'fourReplicas',
      'hand split: a pg.Pool per node, reads round-robin over the 4 replicas',
      db4,
      () => hand.read(ACCOUNT_READ_SQL, [randomAccountId()]),
      () => db4.query(ACCOUNT_READ_SQL, [randomAccountId()]),
    )
    await close(hand, db4)

    // (b), (c): one replica, pgsplit given it as its only replica (as the overhead benchmark does).
    const replicaUrl = c.replicaUrls[0]!
    const raw = rawPool(replicaUrl)
    const db1 = split([replicaUrl])
    await db1.ready()
    const named = { name: 'bench_account_by_id', text: ACCOUNT_READ_SQL }
    const prepared = await side(
      'prepared',
      'raw pg.Pool on the same replica, the same named statement',
      db1,
      () => raw.query({ ...named, values: [randomAccountId()] }),
      () => db1.query({ ...named, values: [randomAccountId()] }),
    )
    const rowOf = (table: string, rows: number) => ({
      text: `SELECT id, body FROM ${table} WHERE id = $1`,
      id: () => 1 + Math.floor(Math.random() * rows),
    })
    const r1 = rowOf('bench_rows_1k', ROWS_1K)
    const rows1k = await side(
      'rows1k',
      'raw pg.Pool on the same replica, one 1 KB row per query',
      db1,
      () => raw.query(r1.text, [r1.id()]),
      () => db1.query(r1.text, [r1.id()]),
    )
    const r100 = rowOf('bench_rows_100k', ROWS_100K)
    const rows100k = await side(
      'rows100k',
      'raw pg.Pool on the same replica, one 100 KB row per query',
      db1,
      () => raw.query(r100.text, [r100.id()]),
      () => db1.query(r100.text, [r100.id()]),
    )
    await close(raw, db1)

    // (d) TLS on every node: pgsplit's pools and monitor all take `pool.ssl`.
    let tls: ShapesResult['tls'] = { skipped: tlsSkipped ?? 'no certificate' }
    if (certs !== null) {
      const ssl = { ca: certs.ca, rejectUnauthorized: true }
      const rawTls = rawPool(replicaUrl, { ssl })
      const dbTls = split([replicaUrl], { ssl })
      await dbTls.ready()
      const SSL_SQL = 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()'
      const isSsl = (r: pg.QueryResult) => r.rows[0]?.ssl === true
      const verified = {
        baseline: isSsl(await rawTls.query(SSL_SQL)),
        pgsplit: isSsl(await dbTls.query(SSL_SQL)) && isSsl(await dbTls.primary.query(SSL_SQL)),
      }
      const cmp = await side(
        'tls',
        'raw pg.Pool on the same replica with the same ssl options (verified CA)',
        dbTls,
        () => rawTls.query(ACCOUNT_READ_SQL, [randomAccountId()]),
        () => dbTls.query(ACCOUNT_READ_SQL, [randomAccountId()]),
      )
      tls = { ...cmp, verified }
      await close(rawTls, dbTls)
    }
    return {
      fourReplicas: { ...four, replicaBalance: balanceOf(four.pgsplitByReplica) },
      prepared,
      rows1k,
      rows100k,
      tls,
      replicas: 4,
      concurrency: ctx.concurrency,
      poolMax: ctx.poolMax,
      durationMs: ctx.durationMs,
      reps,
      clusterStartS,
    }
  } finally {
    await Promise.all(open.map((o) => o.end().catch(() => {})))
    await cluster?.destroy()
    if (certs !== null) rmSync(certs.dir, { recursive: true, force: true })
  }
}
