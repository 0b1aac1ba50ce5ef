// The client process that bench/instructions.ts runs under callgrind: one side (the hand split or
// pgsplit), one workload, `warm` unmeasured operations then `n` more, from `concurrency` callers.
// Plain JavaScript (no tsx under valgrind); pgsplit from the built package given as `entry`.
//
// Under valgrind the client runs ~50x slower while the servers do not, so everything that runs by
// the clock is kept out of the counted window: every pool is filled to its max first (a pool that
// grows later pays a SCRAM handshake, millions of instructions, inside it), idle clients are never
// reaped, and pgsplit's probes run every hour, not every second (natively they cost ~0.01 µs per
// query at these rates; under valgrind they would cost 50x that per operation).
import { readFileSync } from 'node:fs'
import { pathToFileURL } from 'node:url'
import pg from 'pg'

const [side, workload, warmArg, nArg, configPath] = process.argv.slice(2)
const config = JSON.parse(readFileSync(configPath, 'utf8'))
const { primary, replicas, poolMax, concurrency, rows, readSql, writeSql } = config
const warm = Number(warmArg)
const n = Number(nArg)

// A fixed sequence of ids: both sides read and update the same rows in the same order.
let seed = 12_345
const nextId = () => {
  seed = (seed * 1_103_515_245 + 12_345) & 0x7fffffff
  return 1 + (seed % rows)
}

async function fill(queries) {
  await Promise.all(queries.map((q) => q()))
}

let read
let write
let end
if (side === 'hand') {
  const pool = (url) => {
    const p = new pg.Pool({ connectionString: url, max: poolMax, idleTimeoutMillis: 0 })
    p.on('error', () => {})
    return p
  }
  const primaryPool = pool(primary)
  const replicaPools = replicas.map(pool)
  let next = 0
  read = (values) => {
    const p = replicaPools[next]
    next = (next + 1) % replicaPools.length
    return p.query(readSql, values)
  }
  write = (values) => primaryPool.query(writeSql, values)
  end = () => Promise.all([primaryPool, ...replicaPools].map((p) => p.end()))
  const all = [primaryPool, ...replicaPools]
  await fill(all.flatMap((p) => Array.from({ length: poolMax }, () => () => p.query('SELECT pg_sleep(0.3)'))))
  if (!all.every((p) => p.totalCount === poolMax)) throw new Error('hand split: pools did not fill')
} else {
  const { createCluster } = await import(pathToFileURL(config.pgsplitEntry).href)
  const db = createCluster({
    primary,
    replicas,
    pool: { max: poolMax, idleTimeoutMillis: 0, connectionTimeoutMillis: 600_000 },
    healthCheck: { intervalMs: 3_600_000, timeoutMs: 600_000 },
  })
  db.on('error', () => {})
  await db.ready()
  read = (values) => db.query(readSql, values)
  write = (values) => db.query(writeSql, values)
  end = () => db.end()
  // Reads go round-robin: twice the pool size of sleeps fills both replicas' pools.
  for (let round = 0; ; round++) {
    await fill([
      ...Array.from({ length: poolMax }, () => () => db.primary.query('SELECT pg_sleep(0.3)')),
      ...Array.from({ length: poolMax * replicas.length }, () => () => db.query('SELECT pg_sleep(0.3)')),
    ])
    if (db.topology().nodes.every((node) => node.pool.total === poolMax)) break
    if (round === 9) throw new Error('pgsplit: pools did not fill')
  }
}

const op =
  workload === 'mixed' ? (i) => (i % 10 === 9 ? write([nextId()]) : read([nextId()])) : () => read([nextId()])

async function run(count, step = op) {
  let started = 0
  let done = 0
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (started < count) {
        started++
        await step(done)
        done++
      }
    }),
  )
  return done
}

// The writes of the mix are a tenth of it: without writes of their own in the warm-up, their path
// is still being compiled while measured (seen: ~2,700 instructions per operation in V8's
// compilers on pgsplit's side; ~600 after this).
if (workload === 'mixed') await run(warm / 2, () => write([nextId()]))
await run(warm)
const ops = await run(n)
await end()
console.log(JSON.stringify({ side, workload, warm, ops }))
