import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  type Cluster,
  type ClusterConfig,
  createCluster,
  InvalidTokenError,
  NoPrimaryError,
  parseToken,
  TokenAheadError,
} from '../../src/index.js'
import { startCluster, type TestCluster } from '../../src/testing/index.js'
import { eventually } from '../support/cluster.js'
import { startReplayChaos } from '../support/reliability.js'

// One real cluster for the file: a primary and two standbys, one of them synchronous (so
// `remote_write` and `remote_apply` mean something), pg_stat_statements to count token reads.

const SECRET_OLD = 'old-secret-0123456789abcdef'
const SECRET_NEW = 'new-secret-0123456789abcdef'
const SEGMENT = 16n * 1024n * 1024n
const BLOCK = 8192n

let pgc: TestCluster
let admin: pg.Client
let primaryPort: number
let replicaPorts: Set<number>
const clusters: Cluster[] = []

function make(extra: Partial<ClusterConfig> = {}): Cluster {
  const db = createCluster({
    primary: pgc.primaryUrl,
    replicas: pgc.replicaUrls,
    healthCheck: { intervalMs: 250 },
    ...extra,
  })
  db.on('error', () => {})
  clusters.push(db)
  return db
}

async function end(db: Cluster): Promise<void> {
  clusters.splice(clusters.indexOf(db), 1)
  await db.end()
}

async function insertLsn(): Promise<bigint> {
  const { rows } = await admin.query<{ l: string }>('SELECT pg_current_wal_insert_lsn()::text AS l')
  const [hi, lo] = rows[0]!.l.split('/')
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`)
}

/** Token reads (the LsnReader's SQL) the primary has run since the last reset. */
async function tokenReads(): Promise<number> {
  const { rows } = await admin.query<{ n: number }>(
    `SELECT coalesce(sum(calls), 0)::int AS n FROM pg_stat_statements WHERE query LIKE '%pgsplit token%'`,
  )
  return rows[0]!.n
}

async function setSynchronousCommit(mode: string): Promise<void> {
  await admin.query(`ALTER SYSTEM SET synchronous_commit = '${mode}'`)
  await admin.query('SELECT pg_reload_conf()')
  await eventually(
    async () => {
      const c = new pg.Client(pgc.primaryUrl)
      await c.connect()
      try {
        const { rows } = await c.query<{ synchronous_commit: string }>('SHOW synchronous_commit')
        return rows[0]!.synchronous_commit === mode
      } finally {
        await c.end()
      }
    },
    { what: `synchronous_commit = ${mode}`, timeoutMs: 10_000 },
  )
}

beforeAll(async () => {
  pgc = await startCluster({
    replicas: 2,
    synchronous: 1,
    backend: 'local',
    settings: { shared_preload_libraries: 'pg_stat_statements' },
  })
  primaryPort = pgc.nodes[0]!.port
  replicaPorts = new Set(pgc.nodes.slice(1).map((n) => n.port))
  admin = new pg.Client(pgc.primaryUrl)
  await admin.connect()
  await admin.query('CREATE EXTENSION pg_stat_statements')
  await admin.query('CREATE TABLE rows (id bigint PRIMARY KEY, body text NOT NULL)')
  await eventually(async () => {
    for (const url of pgc.replicaUrls) {
      const c = new pg.Client(url)
      await c.connect()
      const { rows } = await c.query('SELECT to_regclass($1) IS NOT NULL AS ok', ['rows'])
      await c.end()
      if (!rows[0].ok) return false
    }
    return true
  })
})

afterAll(async () => {
  for (const db of clusters.splice(0)) await db.end().catch(() => undefined)
  await admin?.end().catch(() => undefined)
  await pgc?.destroy()
})

/**
 * `iterations` times: in a fresh `db.session()`, INSERT a row, then SELECT it by id; `workers`
 * at once, while replay pauses and resumes at random on both standbys. Bounded by `timeoutMs`.
 */
async function causalLoop(
  db: Cluster,
  iterations: number,
  firstId: number,
  workers: number,
  timeoutMs: number,
) {
  let stale = 0
  let onReplica = 0
  let done = 0
  let next = 0
  const deadline = Date.now() + timeoutMs
  const chaos = startReplayChaos(pgc)
  const worker = async () => {
    while (next < iterations) {
      if (Date.now() > deadline) throw new Error(`causal loop: ${done}/${iterations} after ${timeoutMs} ms`)
      const id = firstId + next++
      await db.session(async () => {
        await db.query('INSERT INTO rows (id, body) VALUES ($1, $2)', [id, `r${id}`])
        const { rows } = await db.query<{ body: string; p: number }>(
          'SELECT body, inet_server_port() AS p FROM rows WHERE id = $1',
          [id],
        )
        if (rows.length === 0 || rows[0]!.body !== `r${id}`) stale++
        else if (rows[0]!.p !== primaryPort) onReplica++
      })
      done++
    }
  }
  const started = Date.now()
  try {
    await Promise.all(Array.from({ length: workers }, worker))
  } finally {
    await chaos.stop()
  }
  return { stale, onReplica, done, ms: Date.now() - started }
}

describe('tokens are at or past the commit record in every synchronous_commit mode', () => {
  it('under off, the WAL write pointer read right after an acknowledged commit is often behind it', async () => {
    // The fact the old token (pg_current_wal_lsn()) tripped on; logged, not asserted.
    await setSynchronousCommit('off')
    try {
      const other = new pg.Client(pgc.primaryUrl)
      await other.connect()
      let behind = 0
      for (let i = 0; i < 20; i++) {
        await admin.query('INSERT INTO rows (id, body) VALUES ($1, $2)', [900_000_000 + i, 'x'])
        const { rows } = await other.query<{ behind: boolean }>(
          'SELECT pg_current_wal_lsn() < pg_current_wal_insert_lsn() AS behind',
        )
        if (rows[0]!.behind) behind++
      }
      await other.end()
      console.log(
        `synchronous_commit=off: write LSN behind insert LSN after ${behind}/20 acknowledged commits`,
      )
    } finally {
      await setSynchronousCommit('on')
    }
  })

  for (const [mode, iterations] of [
    ['off', 5000],
    ['remote_write', 5000],
    ['local', 1000],
    ['on', 1000],
    ['remote_apply', 1000],
  ] as const) {
    it(`synchronous_commit=${mode}: ${iterations} read-after-write iterations in db.session() with random replay pauses, 0 stale`, {
      timeout: 150_000,
    }, async () => {
      await setSynchronousCommit(mode)
      const db = make({ pool: { max: 24 } })
      try {
        await db.ready()
        const firstId = { off: 1, remote_write: 100_000, local: 200_000, on: 300_000, remote_apply: 400_000 }[
          mode
        ]
        const r = await causalLoop(db, iterations, firstId, 20, 120_000)
        console.log(
          `synchronous_commit=${mode}: stale=${r.stale} servedByReplicas=${r.onReplica}/${r.done} in ${r.ms} ms`,
        )
        expect(r.done).toBe(iterations)
        expect(r.stale).toBe(0)
      } finally {
        await end(db)
        await setSynchronousCommit('on')
      }
    })
  }
})

describe('the page-header trap of pg_current_wal_insert_lsn()', () => {
  it('after a segment switch the token is the segment start, which a caught-up replica reaches', async () => {
    const db = make({ causalWaitMs: 3_000, writeFunctions: ['pg_switch_wal'] })
    await db.ready()
    try {
      let token: bigint | null = null
      for (let attempt = 0; attempt < 10 && token === null; attempt++) {
        await db.session(async () => {
          await db.query('SELECT pg_switch_wal()')
          const t = parseToken((await db.lastWriteToken())!)
          const insert = await insertLsn()
          // Only an idle moment shows the trap: the insert LSN 40 bytes into the new segment.
          if (insert % SEGMENT === 40n && t.lsn === insert - 40n) {
            token = t.lsn
            const { rows } = await db.query<{ p: number }>('SELECT inet_server_port() AS p')
            expect(replicaPorts.has(rows[0]!.p)).toBe(true)
          }
        })
      }
      expect(token, 'an idle segment switch within 10 attempts').not.toBeNull()
      console.log(`segment switch: token LSN ${token!.toString(16)} (insert LSN 40 bytes further)`)
    } finally {
      await end(db)
    }
  })

  it('a record ending exactly at a page end gives a token at the page boundary, not 24 bytes past it', async () => {
    const db = make({ causalWaitMs: 3_000, writeFunctions: ['pg_logical_emit_message'] })
    await db.ready()
    try {
      let hit: bigint | null = null
      for (let attempt = 0; attempt < 20 && hit === null; attempt++) {
        const before = await insertLsn()
        const room = BLOCK - (before % BLOCK)
        // A logical message record is MAXALIGN(~55 + payload) bytes with prefix 'x' (measured):
        // this payload makes it end exactly at the page end.
        const payload = Number(room) - 56
        if (payload < 0 || before % SEGMENT < BLOCK) {
          // Too little room, or the first page of a segment (its header is the long one): move on.
          await admin.query("SELECT pg_logical_emit_message(false, 'x', repeat('a', $1::int))", [
            Number(room) + 64,
          ])
          continue
        }
        await db.session(async () => {
          await db.query("SELECT pg_logical_emit_message(false, 'x', repeat('a', $1::int))", [payload])
          const t = parseToken((await db.lastWriteToken())!)
          const after = await insertLsn()
          if (after % BLOCK === 24n && t.lsn === after - 24n) {
            hit = t.lsn
            const { rows } = await db.query<{ p: number }>('SELECT inet_server_port() AS p')
            expect(replicaPorts.has(rows[0]!.p)).toBe(true)
          }
        })
      }
      expect(hit, 'a record ending at a page end within 20 attempts').not.toBeNull()
      expect(hit! % BLOCK).toBe(0n)
    } finally {
      await end(db)
    }
  })
})

describe('tokens from outside: strict, signed, never past the primary', () => {
  it('a token past the primary is refused at every entry point, without waiting for a replica', async () => {
    const db = make({ causalWaitMs: 5_000 })
    await db.ready()
    try {
      const timeline = db.topology().timeline!
      const ahead = `${timeline}:FFFFFFFF/FFFFFFFF`
      const future = '999:FFFFFFFF/FFFFFFFF'
      const started = Date.now()
      for (const token of [ahead, future]) {
        await expect(db.verifyToken(token)).rejects.toBeInstanceOf(TokenAheadError)
        await expect(db.query('SELECT 1', [], { after: token })).rejects.toBeInstanceOf(TokenAheadError)
        await expect(db.session(() => db.query('SELECT 1'), { token })).rejects.toBeInstanceOf(
          TokenAheadError,
        )
        // The session stays refused: no later read in it runs as if the token were not there.
        await expect(
          db.session(
            async () => {
              await db.query('SELECT 1').catch(() => undefined)
              return db.query('SELECT 2')
            },
            { token },
          ),
        ).rejects.toBeInstanceOf(TokenAheadError)
      }
      await expect(db.verifyToken(ahead)).rejects.toMatchObject({
        reason: 'ahead',
        code: 'PGSPLIT_TOKEN_AHEAD',
      })
      await expect(db.verifyToken(future)).rejects.toMatchObject({ reason: 'future-timeline' })
      // Refused in round trips, not after causalWaitMs (5 s) per read: a generous liveness bound.
      expect(Date.now() - started).toBeLessThan(4_000)
      // Malformed ones throw at once, synchronously from session().
      for (const bad of ['0x1:0/1', '1e3:0/1', ` ${timeline}:0/1`, `${timeline}:0/1;DROP`]) {
        expect(() => db.session(() => 1, { token: bad }), bad).toThrow(InvalidTokenError)
        await expect(db.query('SELECT 1', [], { after: bad }), bad).rejects.toBeInstanceOf(InvalidTokenError)
        await expect(db.verifyToken(bad), bad).rejects.toMatchObject({ reason: 'malformed' })
      }
    } finally {
      await end(db)
    }
  })

  it("another instance's fresh token is accepted though this one's probe view is older; a burst of forged ones costs ~1 round trip", async () => {
    const writer = make()
    // A monitor that probes once a minute: its view of the primary is the one from ready().
    const reader = make({ healthCheck: { intervalMs: 60_000 }, causalWaitMs: 3_000 })
    await Promise.all([writer.ready(), reader.ready()])
    try {
      const token = await writer.session(async () => {
        await writer.query('INSERT INTO rows (id, body) VALUES ($1, $2)', [800_000_001, 'from-writer'])
        return (await writer.lastWriteToken())!
      })
      await expect(reader.verifyToken(token)).resolves.toBe(token)
      const { rows } = await reader.session(
        () => reader.query<{ body: string }>('SELECT body FROM rows WHERE id = $1', [800_000_001]),
        { token },
      )
      expect(rows[0]?.body).toBe('from-writer')

      const timeline = reader.topology().timeline!
      await admin.query('SELECT pg_stat_statements_reset()')
      const forged = [
        ...Array.from({ length: 100 }, () => '999:FFFFFFFF/FFFFFFFF'),
        ...Array.from({ length: 100 }, (_, i) => `${timeline}:FFFFFFFF/${(i + 1).toString(16)}`),
      ]
      const results = await Promise.allSettled(forged.map((t) => reader.verifyToken(t)))
      expect(results.every((r) => r.status === 'rejected' && r.reason instanceof TokenAheadError)).toBe(true)
      const reads = await tokenReads()
      console.log(`200 concurrent forged tokens: ${reads} token round trip(s) on the primary`)
      expect(reads).toBeGreaterThanOrEqual(1)
      expect(reads).toBeLessThanOrEqual(3)
    } finally {
      await end(writer)
      await end(reader)
    }
  })

  it('with no primary known, a token ahead of what is known cannot be checked: the read fails, never waits', async () => {
    // Only the standbys: no node is writable.
    const db = createCluster({ nodes: pgc.replicaUrls, healthCheck: { intervalMs: 250 } })
    db.on('error', () => {})
    try {
      await expect(db.verifyToken('1:0/1')).rejects.toBeInstanceOf(NoPrimaryError)
      await expect(db.verifyToken('0x1:0/1')).rejects.toBeInstanceOf(InvalidTokenError)
    } finally {
      await db.end()
    }
  })

  it('signed tokens: lastWriteToken() signs, tampered and unsigned ones are refused, rotated secrets verify', async () => {
    const signer = make({ tokens: { secrets: [SECRET_OLD], requireSigned: true } })
    const rotated = make({ tokens: { secrets: [SECRET_NEW, SECRET_OLD], requireSigned: true } })
    const retired = make({ tokens: { secrets: [SECRET_NEW], requireSigned: true } })
    const open = make()
    await Promise.all([signer.ready(), rotated.ready(), retired.ready(), open.ready()])
    try {
      const token = await signer.session(async () => {
        await signer.query('INSERT INTO rows (id, body) VALUES ($1, $2)', [800_000_002, 'signed'])
        return (await signer.lastWriteToken())!
      })
      expect(token).toMatch(/^\d+:[0-9A-F]+\/[0-9A-F]+\.[A-Za-z0-9_-]{43}$/)
      const plain = token.slice(0, token.indexOf('.'))
      // Rotation: the old secret still verifies; the canonical text is re-signed with the new one.
      const resigned = await rotated.verifyToken(token)
      expect(resigned.startsWith(`${plain}.`)).toBe(true)
      expect(resigned).not.toBe(token)
      await expect(retired.verifyToken(resigned)).resolves.toBe(resigned)
      await expect(retired.verifyToken(token)).rejects.toMatchObject({ reason: 'bad-signature' })
      // A signed read sees the row.
      const { rows } = await rotated.session(
        () => rotated.query<{ body: string }>('SELECT body FROM rows WHERE id = $1', [800_000_002]),
        { token },
      )
      expect(rows[0]?.body).toBe('signed')
      // Tampered, unsigned: refused, synchronously, with the reason.
      const last = token.at(-1) === 'A' ? 'B' : 'A'
      for (const [bad, reason] of [
        [`${token.slice(0, -1)}${last}`, 'bad-signature'],
        [token.replace(/^\d+/, (t) => String(Number(t) + 1)), 'bad-signature'],
        [plain, 'unsigned'],
      ] as const) {
        expect(() => signer.session(() => 1, { token: bad })).toThrow(InvalidTokenError)
        await expect(signer.verifyToken(bad)).rejects.toMatchObject({ reason })
      }
      // An instance without secrets takes a signed token (rolling out signing) as a plain one.
      await expect(open.verifyToken(token)).resolves.toBe(plain)
    } finally {
      for (const db of [signer, rotated, retired, open]) await end(db)
    }
  })
})
