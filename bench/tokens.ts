/**
 * What a read-your-writes token costs. (1) The round trip that reads a token after a write, on
 * its own connection: the old SQL (`pg_current_wal_lsn()`, the WAL write pointer, stale under
 * `synchronous_commit = off`) against the current one (`pg_current_wal_insert_lsn()` with the
 * page-header correction), wall time and CPU (client, servers) per read. (2) Text and signature:
 * format, parse, HMAC-SHA256 sign and verify (also with two secrets during a rotation) per token.
 * (3) What tokens from outside cost: one the primary has reached (no I/O), and a burst of 200
 * forged ones (all refused after a shared fresh read of the primary's position).
 */
import pg from 'pg'
import { TOKEN_SQL } from '../src/health/lsn-reader.js'
import { TokenCodec } from '../src/router/token-codec.js'
import type { TestCluster } from '../src/testing/index.js'
import type { BenchContext } from './lib/context.js'
import { createCluster } from './lib/pgsplit.js'
import { round, roundSpread, type Spread, spread } from './lib/stats.js'

/** The token SQL before it was made right for every synchronous_commit mode. */
const WRITE_LSN_SQL = `/* pgsplit token */ SELECT pg_current_wal_lsn()::text AS lsn,
  ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS timeline`

const SECRET_NEW = 'bench-new-secret-0123456789'
const SECRET_OLD = 'bench-old-secret-0123456789'

interface ReadCost {
  /** Wall time per read, µs (median over repetitions). */
  us: Spread
  /** Client CPU per read, µs. */
  clientCpuUs: Spread
  /** Server CPU per read, µs (all server processes; 10 ms resolution, so over many reads). */
  serverCpuUs: Spread
}

export interface TokensResult {
  reads: { writeLsn: ReadCost; insertLsn: ReadCost }
  /** Insert-LSN read / write-LSN read, wall time per read (median). */
  readRatio: number
  /** ns per operation, median over repetitions. */
  codecNs: {
    formatPlain: Spread
    formatSigned: Spread
    parsePlain: Spread
    verifySigned: Spread
    /** A token signed with the second (old) secret: two HMACs. */
    verifyRotated: Spread
    /** A tampered signature: refused after trying every secret. */
    refuseTampered: Spread
  }
  /** `db.verifyToken()` of a token the primary has reached: parse + signature, no I/O (µs). */
  verifyCoveredUs: Spread
  /** 200 concurrent `db.verifyToken()` of forged tokens, all refused: wall time of the burst (ms). */
  forgedBurstMs: Spread
  readsPerRep: number
  codecOpsPerRep: number
  reps: number
}

async function readCost(
  ctx: BenchContext,
  url: string,
  sql: string,
  n: number,
): Promise<{ us: number; clientCpuUs: number; serverCpuUs: number }> {
  const client = new pg.Client({ connectionString: url })
  client.on('error', () => {})
  await client.connect()
  try {
    for (let i = 0; i < 50; i++) await client.query(sql)
    const server0 = (await ctx.serverCpu?.()) ?? Number.NaN
    const cpu0 = process.cpuUsage()
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < n; i++) await client.query(sql)
    const wallUs = Number(process.hrtime.bigint() - t0) / 1000
    const cpu = process.cpuUsage(cpu0)
    const server1 = (await ctx.serverCpu?.()) ?? Number.NaN
    return { us: wallUs / n, clientCpuUs: (cpu.user + cpu.system) / n, serverCpuUs: (server1 - server0) / n }
  } finally {
    await client.end().catch(() => {})
  }
}

function nsPerOp(n: number, fn: (i: number) => unknown): number {
  for (let i = 0; i < Math.min(n, 2_000); i++) fn(i)
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < n; i++) fn(i)
  return Number(process.hrtime.bigint() - t0) / n
}

export async function runTokens(ctx: BenchContext, cluster: TestCluster): Promise<TokensResult> {
  const reads = ctx.quick ? 300 : 2_000
  const ops = ctx.quick ? 20_000 : 50_000
  const raw = {
    writeLsn: { us: [] as number[], clientCpuUs: [] as number[], serverCpuUs: [] as number[] },
    insertLsn: { us: [] as number[], clientCpuUs: [] as number[], serverCpuUs: [] as number[] },
  }
  for (let rep = 0; rep < ctx.reps; rep++) {
    // Alternate the order: neither variant always runs on a warmer machine.
    const order = rep % 2 === 0 ? (['writeLsn', 'insertLsn'] as const) : (['insertLsn', 'writeLsn'] as const)
    for (const variant of order) {
      const r = await readCost(
        ctx,
        cluster.primaryUrl,
        variant === 'writeLsn' ? WRITE_LSN_SQL : TOKEN_SQL,
        reads,
      )
      raw[variant].us.push(r.us)
      raw[variant].clientCpuUs.push(r.clientCpuUs)
      raw[variant].serverCpuUs.push(r.serverCpuUs)
    }
  }
  const cost = (v: keyof typeof raw): ReadCost => ({
    us: roundSpread(spread(raw[v].us)),
    clientCpuUs: roundSpread(spread(raw[v].clientCpuUs)),
    serverCpuUs: roundSpread(spread(raw[v].serverCpuUs)),
  })

  const plain = new TokenCodec()
  const signer = new TokenCodec({ secrets: [SECRET_NEW], requireSigned: true })
  const rotating = new TokenCodec({ secrets: [SECRET_NEW, SECRET_OLD], requireSigned: true })
  const oldSigner = new TokenCodec({ secrets: [SECRET_OLD], requireSigned: true })
  const token = { timeline: 1, lsn: 0x3000148n }
  const plainText = plain.format(token)
  const signedText = signer.format(token)
  const oldText = oldSigner.format(token)
  const tampered = `${signedText.slice(0, -1)}${signedText.endsWith('A') ? 'B' : 'A'}`
  const codec = {
    formatPlain: [] as number[],
    formatSigned: [] as number[],
    parsePlain: [] as number[],
    verifySigned: [] as number[],
    verifyRotated: [] as number[],
    refuseTampered: [] as number[],
  }
  for (let rep = 0; rep < ctx.reps; rep++) {
    codec.formatPlain.push(nsPerOp(ops, (i) => plain.format({ timeline: 1, lsn: BigInt(i) })))
    codec.formatSigned.push(nsPerOp(ops, (i) => signer.format({ timeline: 1, lsn: BigInt(i) })))
    codec.parsePlain.push(nsPerOp(ops, () => plain.parse(plainText)))
    codec.verifySigned.push(nsPerOp(ops, () => signer.parse(signedText)))
    codec.verifyRotated.push(nsPerOp(ops, () => rotating.parse(oldText)))
    codec.refuseTampered.push(
      nsPerOp(ops, () => {
        try {
          rotating.parse(tampered)
        } catch {
          return null
        }
        throw new Error('a tampered token was accepted')
      }),
    )
  }

  const db = createCluster({
    primary: cluster.primaryUrl,
    replicas: cluster.replicaUrls,
    pool: { max: ctx.poolMax },
    tokens: { secrets: [SECRET_NEW], requireSigned: true },
  })
  db.on('error', () => {})
  const coveredUs: number[] = []
  const burstMs: number[] = []
  try {
    await db.ready()
    const timeline = db.topology().timeline ?? 1
    // A position every primary has passed: covered by the cached view, no round trip.
    const reached = signer.format({ timeline, lsn: 1n })
    await db.verifyToken(reached)
    for (let rep = 0; rep < ctx.reps; rep++) {
      const n = ctx.quick ? 2_000 : 20_000
      const t0 = process.hrtime.bigint()
      for (let i = 0; i < n; i++) await db.verifyToken(reached)
      coveredUs.push(Number(process.hrtime.bigint() - t0) / 1000 / n)

      const forged = Array.from({ length: 200 }, (_, i) =>
        i % 2 === 0 ? '999:FFFFFFFF/FFFFFFFF' : `${timeline}:FFFFFFFF/${(i + 1).toString(16)}`,
      )
      const t1 = performance.now()
      const results = await Promise.allSettled(forged.map((t) => db.verifyToken(t)))
      burstMs.push(performance.now() - t1)
      if (results.some((r) => r.status === 'fulfilled')) throw new Error('a forged token was accepted')
    }
  } finally {
    await db.end()
  }

  const writeUs = spread(raw.writeLsn.us).median
  const insertUs = spread(raw.insertLsn.us).median
  ctx.log(
    `tokens: read ${round(writeUs, 1)} us (write LSN) -> ${round(insertUs, 1)} us (insert LSN); verify signed ${round(spread(codec.verifySigned).median, 0)} ns; 200 forged refused in ${round(spread(burstMs).median, 1)} ms`,
  )
  return {
    reads: { writeLsn: cost('writeLsn'), insertLsn: cost('insertLsn') },
    readRatio: round(insertUs / writeUs),
    codecNs: {
      formatPlain: roundSpread(spread(codec.formatPlain)),
      formatSigned: roundSpread(spread(codec.formatSigned)),
      parsePlain: roundSpread(spread(codec.parsePlain)),
      verifySigned: roundSpread(spread(codec.verifySigned)),
      verifyRotated: roundSpread(spread(codec.verifyRotated)),
      refuseTampered: roundSpread(spread(codec.refuseTampered)),
    },
    verifyCoveredUs: roundSpread(spread(coveredUs)),
    forgedBurstMs: roundSpread(spread(burstMs)),
    readsPerRep: reads,
    codecOpsPerRep: ops,
    reps: ctx.reps,
  }
}
