import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import {
  type Cluster,
  type ClusterConfig,
  createCluster,
  NoPrimaryError,
  PoolExhaustedError,
  type ReadStrategy,
  WriteOutcomeUnknownError,
} from '../../src/index.js'
import { type FaultProxy, startCluster, startFaultProxy, type TestCluster } from '../../src/testing/index.js'
import {
  adminQuery,
  errorKey,
  eventually,
  expectNoLibraryConnections,
  formatTally,
  sleep,
  tally,
  timed,
  trackProcessErrors,
} from '../support/reliability.js'

// Network faults between pgsplit and its nodes, through the TCP fault proxy: every node is
// reached through a proxy of its own, so a test can blackhole, slow down, reset or cut the
// traffic of one node. What is proved: no call waits past its bounds, reads go elsewhere, writes
// fail with typed errors (never hang), slow replicas lose reads, and everything comes back once
// the fault is gone.

const APP = 'pgsplit-network-faults'
/** Every wait of the library is bounded by one of these. */
const QUERY_TIMEOUT = 2_000
const CONNECT_TIMEOUT = 1_000
const PROBE_TIMEOUT = 500
const FAILOVER_TIMEOUT = 3_000
/** Liveness bound for one call: the sum of the bounds it can meet, plus a lot of slack for a busy machine. */
const CALL_BOUND = QUERY_TIMEOUT + CONNECT_TIMEOUT + FAILOVER_TIMEOUT + 4_000

let pgc: TestCluster
let primaryProxy: FaultProxy
let replicaProxies: FaultProxy[]
const open: Cluster[] = []
const processErrors = trackProcessErrors()
/** Process warnings: pg warns when a statement is queued on a client already running one (a probe stuck on a blackholed node used to). */
const warnings: string[] = []
const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`)

function cluster(readStrategy: ReadStrategy = 'round-robin', extra: Partial<ClusterConfig> = {}): Cluster {
  const db = createCluster({
    primary: primaryProxy.url!,
    replicas: replicaProxies.map((p) => p.url!),
    readStrategy,
    pool: {
      max: 10,
      connectionTimeoutMillis: CONNECT_TIMEOUT,
      query_timeout: QUERY_TIMEOUT,
      application_name: APP,
    },
    healthCheck: { intervalMs: 200, timeoutMs: PROBE_TIMEOUT, maxBackoffMs: 1_000 },
    failover: { timeoutMs: FAILOVER_TIMEOUT, pollIntervalMs: 100 },
    ...extra,
  })
  open.push(db)
  return db
}

/** The real server port (not the proxy's) of the node that served a read. */
async function servedBy(db: Cluster): Promise<number> {
  const { rows } = await db.query<{ port: number }>('SELECT inet_server_port() AS port')
  return rows[0]!.port
}

async function allUp(db: Cluster): Promise<void> {
  await db.ready({ timeoutMs: 20_000 })
  await eventually(() => {
    expect(db.topology().nodes.map((n) => [n.role, n.state])).toEqual([
      ['primary', 'up'],
      ['replica', 'up'],
      ['replica', 'up'],
    ])
  }, 20_000)
}

beforeAll(async () => {
  process.on('warning', onWarning)
  pgc = await startCluster({ backend: 'local', replicas: 2 })
  await adminQuery(pgc.primaryUrl, 'CREATE TABLE nf (id int NOT NULL, v text)')
  primaryProxy = await startFaultProxy({ target: pgc.primaryUrl })
  replicaProxies = await Promise.all(pgc.replicaUrls.map((url) => startFaultProxy({ target: url })))
})

afterEach(async () => {
  for (const proxy of [primaryProxy, ...replicaProxies]) proxy?.setMode('pass')
  await Promise.all(open.splice(0).map((db) => db.end()))
})

afterAll(async () => {
  await Promise.all([primaryProxy, ...(replicaProxies ?? [])].map((p) => p?.close()))
  await pgc?.destroy()
  processErrors.dispose()
  process.off('warning', onWarning)
})

describe('network faults', () => {
  it('a blackholed replica: reads come back within their bounds (run elsewhere), the replica is marked down, then up again', async () => {
    const db = cluster()
    const down: string[] = []
    const up: string[] = []
    const retried: string[] = []
    db.on('nodeDown', (e) => down.push(e.node))
    db.on('nodeUp', (e) => up.push(e.node))
    db.on('readRetried', (e) => retried.push(`${e.from} -> ${e.to}: ${e.reason}`))
    await allUp(db)
    // Idle connections on both replicas, so the blackhole catches some mid-use.
    await Promise.all(Array.from({ length: 20 }, () => servedBy(db)))
    const slow = replicaProxies[0]!
    const blackholed = db.topology().nodes[1]!.name
    slow.setMode('blackhole')

    const results = await Promise.all(
      Array.from({ length: 5 }, async () => {
        const out: Awaited<ReturnType<typeof timed<number>>>[] = []
        for (let i = 0; i < 8; i++) out.push(await timed(() => servedBy(db)))
        return out
      }),
    )
    const flat = results.flat()
    const slowest = Math.max(...flat.map((r) => r.ms))
    console.log(
      `[network-faults] blackholed replica: ${flat.length} reads, slowest ${Math.round(slowest)} ms, ` +
        `${retried.length} retried elsewhere, failed: ${formatTally(new Map(flat.filter((r) => !r.ok).map((r) => [errorKey(r.error), 1])))}`,
    )
    for (const r of flat) expect(r.ms).toBeLessThan(CALL_BOUND)
    // Another replica is there. A read already sent to the blackholed one ends at its client-side
    // query_timeout: that is the caller's answer (the statement may still run, so it is not run
    // again elsewhere). Every other read succeeds, none on the blackholed replica.
    for (const r of flat.filter((x) => !x.ok)) expect(errorKey(r.error)).toMatch(/Query read timeout/)
    expect(flat.filter((r) => r.ok).every((r) => r.value === pgc.nodes[2]!.port)).toBe(true)
    expect(flat.filter((r) => r.ok).length).toBeGreaterThan(0)
    console.log(`[network-faults] ${retried.length} reads retried elsewhere (connects that failed)`)
    await eventually(() => expect(down).toContain(blackholed), 10_000)
    expect(db.topology().nodes[1]!.state).toBe('down')
    // Once it is known down, reads no longer try it: fast, all on the other replica.
    const after = await timed(() => Promise.all(Array.from({ length: 20 }, () => servedBy(db))))
    expect(after.ok).toBe(true)
    expect(new Set(after.value)).toEqual(new Set([pgc.nodes[2]!.port]))

    slow.setMode('pass')
    await eventually(() => expect(up).toContain(blackholed), 15_000)
    await eventually(async () => {
      const ports = await Promise.all(Array.from({ length: 20 }, () => servedBy(db)))
      expect(new Set(ports).has(pgc.nodes[1]!.port)).toBe(true)
    }, 10_000)
  })

  it('causal reads waiting on blackholed replicas come back from the primary within bounds, seeing their write', async () => {
    const db = cluster('round-robin', { consistency: 'causal', causalWaitMs: 300 })
    await allUp(db)
    await Promise.all(Array.from({ length: 20 }, () => servedBy(db)))
    for (const proxy of replicaProxies) proxy.setMode('blackhole')
    // Each session writes, then reads its row at once: the replicas' position polls hang in the
    // blackhole, so every wait ends at causalWaitMs (or the poll's timeout) and the primary answers.
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        timed(() =>
          db.session(async () => {
            await db.query('INSERT INTO nf (id, v) VALUES ($1, $2)', [20_000 + i, `causal${i}`])
            const { rows } = await db.query<{ v: string; port: number }>(
              'SELECT v, inet_server_port() AS port FROM nf WHERE id = $1',
              [20_000 + i],
            )
            return rows
          }),
        ),
      ),
    )
    console.log(
      `[network-faults] causal reads over blackholed replicas: slowest ${Math.round(Math.max(...results.map((r) => r.ms)))} ms`,
    )
    for (const [i, r] of results.entries()) {
      expect(r.ok, errorKey(r.error)).toBe(true)
      expect(r.ms).toBeLessThan(CALL_BOUND)
      expect(r.value).toEqual([{ v: `causal${i}`, port: pgc.nodes[0]!.port }])
    }
  })

  it('reset and closeAfterBytes on a replica: reads are run again elsewhere, the caller never sees it', async () => {
    const db = cluster()
    await allUp(db)
    await Promise.all(Array.from({ length: 20 }, () => servedBy(db)))
    const failures = new Map<string, number>()
    for (const mode of ['reset', { closeAfterBytes: 2_000 }] as const) {
      replicaProxies[0]!.setMode(mode)
      const results = await Promise.all(
        Array.from({ length: 20 }, () =>
          timed(() =>
            db.query<{ n: number }>("SELECT length(repeat('x', 50000)) AS n, repeat('y', 20000) AS pad"),
          ),
        ),
      )
      for (const r of results) {
        expect(r.ms).toBeLessThan(CALL_BOUND)
        if (!r.ok) tally(failures, `${JSON.stringify(mode)}: ${errorKey(r.error)}`)
        else expect(r.value!.rows[0]!.n).toBe(50_000)
      }
      replicaProxies[0]!.setMode('pass')
      await eventually(() => expect(db.topology().nodes[1]!.state).toBe('up'), 15_000)
    }
    expect(formatTally(failures)).toBe('none')
  })

  it('least-busy sends fewer reads to a replica 50 ms away', async () => {
    const db = cluster('least-busy')
    await allUp(db)
    replicaProxies[0]!.setMode({ latencyMs: 50 })
    const counts = new Map<number, number>()
    let next = 0
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next++ < 300) {
          const port = await servedBy(db)
          counts.set(port, (counts.get(port) ?? 0) + 1)
        }
      }),
    )
    const slowReads = counts.get(pgc.nodes[1]!.port) ?? 0
    const fastReads = counts.get(pgc.nodes[2]!.port) ?? 0
    console.log(`[network-faults] least-busy: slow replica ${slowReads} reads, fast replica ${fastReads}`)
    expect(slowReads + fastReads).toBe(300)
    expect(slowReads).toBeLessThan(fastReads / 3)
  })

  it('least-lag sends fewer reads to a replica whose WAL (and clients) are 50 ms away', async () => {
    // The slow replica streams from the primary through a proxy as well: its replay lags.
    const walProxy = await startFaultProxy({ target: pgc.primaryUrl })
    const slowUrl = pgc.nodes[1]!.url
    const [{ conninfo }] = (await adminQuery<{ conninfo: string }>(
      slowUrl,
      "SELECT current_setting('primary_conninfo') AS conninfo",
    )) as [{ conninfo: string }]
    const viaProxy = conninfo
      .replace(/host='?[^' ]+'?/, `host='${walProxy.host}'`)
      .replace(/port='?\d+'?/, `port='${walProxy.port}'`)
    const setConninfo = async (value: string) => {
      await adminQuery(slowUrl, `ALTER SYSTEM SET primary_conninfo = '${value.replaceAll("'", "''")}'`)
      await adminQuery(slowUrl, 'SELECT pg_reload_conf()')
    }
    await setConninfo(viaProxy)
    try {
      await eventually(async () => {
        const [r] = await adminQuery<{ port: number; status: string }>(
          slowUrl,
          'SELECT sender_port AS port, status FROM pg_stat_wal_receiver',
        )
        expect([r?.port, r?.status]).toEqual([walProxy.port, 'streaming'])
      }, 20_000)
      walProxy.setMode({ latencyMs: 50 })
      replicaProxies[0]!.setMode({ latencyMs: 50 })
      const db = cluster('least-lag')
      await allUp(db)
      // Writes all along, so that lag exists to be measured.
      let writing = true
      const writer = (async () => {
        for (let i = 0; writing; i++) {
          await db.query('INSERT INTO nf (id, v) VALUES ($1, $2)', [i, 'x'.repeat(500)])
          await sleep(2)
        }
      })()
      await sleep(1_000)
      const counts = new Map<number, number>()
      for (let i = 0; i < 150; i++) {
        const port = await servedBy(db)
        counts.set(port, (counts.get(port) ?? 0) + 1)
        await sleep(5)
      }
      writing = false
      await writer
      const slowReads = counts.get(pgc.nodes[1]!.port) ?? 0
      const fastReads = counts.get(pgc.nodes[2]!.port) ?? 0
      const t = db.topology().nodes
      console.log(
        `[network-faults] least-lag: slow replica ${slowReads} reads (lag ${t[1]!.lagBytes} B / ${t[1]!.lagMs} ms), ` +
          `fast replica ${fastReads} (lag ${t[2]!.lagBytes} B / ${t[2]!.lagMs} ms)`,
      )
      expect(slowReads).toBeLessThan(fastReads)
    } finally {
      await setConninfo(conninfo)
      await walProxy.close()
    }
  })

  it('a blackholed primary: writes fail with typed errors within their bounds, reads go on, all comes back', async () => {
    const db = cluster()
    const lost: string[] = []
    db.on('primaryLost', (e) => lost.push(e.reason))
    await allUp(db)
    await Promise.all(
      Array.from({ length: 10 }, (_, i) => db.query('INSERT INTO nf (id, v) VALUES ($1, $2)', [i, 'warm'])),
    )
    primaryProxy.setMode('blackhole')
    const BASE = 10_000
    const writes = await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        timed(() => db.query('INSERT INTO nf (id, v) VALUES ($1, $2)', [BASE + i, 'blackholed'])),
      ),
    )
    const reads = await Promise.all(Array.from({ length: 10 }, () => timed(() => servedBy(db))))
    const outcomes = new Map<string, number>()
    for (const w of writes) tally(outcomes, w.ok ? 'ok' : errorKey(w.error))
    console.log(
      `[network-faults] blackholed primary: writes ${formatTally(outcomes)}; slowest write ${Math.round(Math.max(...writes.map((w) => w.ms)))} ms; ` +
        `primaryLost: ${lost.length}`,
    )
    for (const w of writes) {
      expect(w.ok).toBe(false)
      expect(w.ms).toBeLessThan(CALL_BOUND)
      expect(
        // A pool whose every client hangs on the blackholed primary: PoolExhaustedError, typed and bounded.
        w.error instanceof NoPrimaryError ||
          w.error instanceof WriteOutcomeUnknownError ||
          w.error instanceof PoolExhaustedError,
        `unexpected ${errorKey(w.error)}`,
      ).toBe(true)
    }
    // Reads need no primary: replicas keep serving.
    for (const r of reads) {
      expect(r.ok).toBe(true)
      expect(r.ms).toBeLessThan(CALL_BOUND)
    }
    await eventually(() => expect(db.topology().primary).toBeNull(), 10_000)
    expect(lost.length).toBeGreaterThan(0)

    primaryProxy.setMode('pass')
    await db.ready({ timeoutMs: 20_000 })
    await eventually(() => db.query('INSERT INTO nf (id, v) VALUES ($1, $2)', [BASE + 100, 'after']), 15_000)
    // A write that said NoPrimaryError was never sent: it must never show up, even once the
    // held traffic flows again. (WriteOutcomeUnknownError ones may or may not.)
    await sleep(1_000)
    const notSent = writes
      .map((w, i) => (w.error instanceof NoPrimaryError ? BASE + i : null))
      .filter((x) => x !== null)
    const present = await adminQuery<{ id: number }>(
      pgc.primaryUrl,
      'SELECT id FROM nf WHERE id = ANY($1::int[])',
      [notSent],
    )
    expect(present).toEqual([])
  })

  it('leaves no connection behind, no unhandled error and no pg warning', async () => {
    const db = cluster()
    await allUp(db)
    await db.end()
    await expectNoLibraryConnections(
      pgc.nodes.map((n) => n.url),
      APP,
      10_000,
    )
    expect(processErrors.unhandledRejections).toEqual([])
    expect(processErrors.uncaughtExceptions).toEqual([])
    expect(warnings.filter((w) => /client is already executing a query/.test(w))).toEqual([])
  })
})
