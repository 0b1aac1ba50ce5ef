import pg from 'pg'
import { startCluster, type TestCluster } from '../../src/testing/index.js'

/** What every benchmark gets from the runner: sizes, durations and a logger. */
export interface BenchContext {
  quick: boolean
  /** Interleaved repetitions per comparison (each repetition runs both variants once). */
  reps: number
  /** Length of one measured run of one variant. */
  durationMs: number
  /** Unmeasured run of each variant before the repetitions (connections, JIT). */
  warmupMs: number
  /** Concurrent callers. */
  concurrency: number
  /** `max` of every pg.Pool (raw and pgsplit's per node). */
  poolMax: number
  log: (line: string) => void
  /** CPU used so far by the shared cluster's server processes (µs); see lib/cpu.ts. */
  serverCpu?: () => Promise<number>
}

export const ITEM_ROWS = 100_000

/** A local primary + `replicas` standbys for the benchmarks (plain processes on 127.0.0.1). */
export async function startBenchCluster(ctx: BenchContext, replicas = 2, log = false): Promise<TestCluster> {
  return startCluster({
    replicas,
    backend: 'local',
    // pgpool's children each hold a connection to every node, beside pgsplit's pools.
    settings: { max_connections: 200 },
    log: log ? ctx.log : undefined,
  })
}

/** Runs `fn` with a short-lived client on `url`. */
export async function withPg<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url })
  client.on('error', () => {})
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end().catch(() => {})
  }
}

/**
 * `items`: 100k rows with a primary key, created on the primary; returns once every replica
 * has replayed it (so a read on any node finds every row).
 */
export async function seedItems(cluster: TestCluster): Promise<void> {
  await withPg(cluster.primaryUrl, async (c) => {
    await c.query('DROP TABLE IF EXISTS items')
    await c.query('CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, value int NOT NULL)')
    await c.query(
      `INSERT INTO items SELECT g, 'item-' || g, g % 1000 FROM generate_series(1, ${ITEM_ROWS}) g`,
    )
    await c.query('VACUUM ANALYZE items')
  })
  await waitForReplicas(cluster)
}

/** Waits until every running replica has replayed the primary's current WAL position. */
export async function waitForReplicas(cluster: TestCluster, timeoutMs = 30_000): Promise<void> {
  const target = await withPg(cluster.primaryUrl, async (c) => {
    const { rows } = await c.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')
    return rows[0]!.lsn
  })
  const deadline = Date.now() + timeoutMs
  for (const url of cluster.replicaUrls) {
    await withPg(url, async (c) => {
      for (;;) {
        const { rows } = await c.query<{ ok: boolean }>(
          'SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS ok',
          [target],
        )
        if (rows[0]?.ok === true) return
        if (Date.now() > deadline) throw new Error(`replica ${url} did not catch up within ${timeoutMs} ms`)
        await new Promise((r) => setTimeout(r, 20))
      }
    })
  }
}

/** A random id of `items`. */
export function randomItemId(): number {
  return 1 + Math.floor(Math.random() * ITEM_ROWS)
}
