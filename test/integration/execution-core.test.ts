import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  type Cluster,
  type ClusterConfig,
  ClusterEndedError,
  createCluster,
  NoPrimaryError,
  PoolExhaustedError,
  PrimaryReadOnlyError,
  TransactionStatementError,
  WriteOutcomeUnknownError,
} from '../../src/index.js'
import { startCluster, type TestCluster } from '../../src/testing/index.js'
import { nodeName, type Recorded, recordEvents, until } from '../support/cluster.js'
import { adminQuery, sleep, timed } from '../support/reliability.js'

// Issue 13, "What to build", behaviours 1-10 and 12, each on a real cluster (a primary, two
// replicas). The tests run in order on one cluster; the failover block is last because it kills
// the primary. Every Cluster a test opens is ended in afterAll.

let pgc: TestCluster
const opened: Cluster[] = []
const url = (i: number) => pgc.nodes[i]!.url
const port = (i: number) => pgc.nodes[i]!.port

function open(extra: Partial<ClusterConfig> = {}): Cluster {
  const db = createCluster({
    primary: url(0),
    replicas: [url(1), url(2)],
    healthCheck: { intervalMs: 200, timeoutMs: 1_000, maxBackoffMs: 1_000 },
    failover: { timeoutMs: 20_000 },
    ...extra,
    pool: { connectionTimeoutMillis: 3_000, ...extra.pool },
  })
  db.on('error', () => {})
  opened.push(db)
  return db
}

/** Waits until both replicas have replayed the primary's current position. */
async function replicated(): Promise<void> {
  const [row] = await adminQuery<{ lsn: string }>(pgc.primaryUrl, 'SELECT pg_current_wal_lsn()::text AS lsn')
  for (const u of pgc.replicaUrls) {
    await until(
      'a replica to replay the primary position',
      async () =>
        (
          await adminQuery<{ ok: boolean }>(u, 'SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS ok', [
            row!.lsn,
          ])
        )[0]?.ok,
      20_000,
    )
  }
}

async function committed(who: string): Promise<string[]> {
  const rows = await adminQuery<{ v: string }>(
    pgc.primaryUrl,
    'SELECT v FROM core_t WHERE who = $1 ORDER BY id',
    [who],
  )
  return rows.map((r) => r.v)
}

function nodeSnap(db: Cluster, i: number) {
  return db.topology().nodes.find((n) => n.name === nodeName(port(i)))!
}

/** Settles a Submittable (callback form) as a promise. */
function viaCallback<R extends pg.QueryResultRow>(
  db: Cluster,
  text: string,
  values: unknown[] = [],
): Promise<pg.QueryResult<R>> {
  return new Promise((resolve, reject) => {
    db.query(
      new pg.Query(text, values, (err: Error | undefined, r: pg.QueryResult<R>) =>
        err ? reject(err) : resolve(r),
      ),
    )
  })
}

/** A Submittable without a callback: its 'end' / 'error' events, bounded. */
function viaEvents(
  db: Cluster,
  text: string,
  values: unknown[] = [],
): Promise<unknown[] | Error | 'unsettled'> {
  const query = new pg.Query(text, values)
  const rows: unknown[] = []
  const settled = new Promise<unknown[] | Error>((resolve) => {
    query.on('row', (row: unknown) => rows.push(row))
    query.on('end', () => resolve(rows))
    query.on('error', (err: Error) => resolve(err))
  })
  db.query(query)
  return Promise.race([settled, sleep(5_000).then(() => 'unsettled' as const)])
}

/** Sets default_transaction_read_only on the primary and reloads (on a session of its own, writable). */
async function primaryReadOnly(on: boolean): Promise<void> {
  const client = new pg.Client({ connectionString: pgc.primaryUrl })
  await client.connect()
  try {
    await client.query('SET default_transaction_read_only = off')
    await client.query(
      on
        ? 'ALTER SYSTEM SET default_transaction_read_only = on'
        : 'ALTER SYSTEM RESET default_transaction_read_only',
    )
    await client.query('SELECT pg_reload_conf()')
  } finally {
    await client.end()
  }
  // A fresh session shows the new default once the postmaster has reloaded.
  await until(
    'the primary to reload default_transaction_read_only',
    async () =>
      (
        await adminQuery<{ v: string }>(
          pgc.primaryUrl,
          "SELECT current_setting('default_transaction_read_only') AS v",
        )
      )[0]?.v === (on ? 'on' : 'off'),
    5_000,
  )
}

beforeAll(async () => {
  pgc = await startCluster({ replicas: 2, backend: 'local' })
  await adminQuery(
    url(0),
    'CREATE TABLE core_t (id bigserial PRIMARY KEY, who text NOT NULL, v text NOT NULL)',
  )
  // A function that writes, unknown to the classifier: a replica answers 25006 for it.
  await adminQuery(
    url(0),
    `CREATE FUNCTION core_bump(w text) RETURNS int LANGUAGE sql AS $$ INSERT INTO core_t (who, v) VALUES (w, 'bump') RETURNING 1 $$`,
  )
  await adminQuery(url(0), "CREATE ROLE limited LOGIN PASSWORD 'limited' CONNECTION LIMIT 3")
  await adminQuery(url(0), 'GRANT ALL ON core_t, core_t_id_seq TO limited')
  await replicated()
})

afterAll(async () => {
  await Promise.all(opened.map((db) => Promise.race([db.end(), sleep(10_000)])))
  await pgc?.destroy()
})

describe('1. transaction strings through query()', () => {
  it('a balanced string runs on the primary, atomically, as pg.Pool runs it', async () => {
    const db = open()
    await db.ready()
    const res = (await db.query(
      `BEGIN; INSERT INTO core_t (who, v) VALUES ('t1', 'a'); SELECT pg_is_in_recovery() AS rec, inet_server_port() AS p; COMMIT;`,
    )) as unknown as pg.QueryResult[]
    expect(res.map((r) => r.command)).toEqual(['BEGIN', 'INSERT', 'SELECT', 'COMMIT'])
    expect(res[2]!.rows).toEqual([{ rec: false, p: port(0) }])
    expect(await committed('t1')).toEqual(['a'])
  })

  it('a bare BEGIN, or a string that ends inside a transaction, is refused with TransactionStatementError', async () => {
    const db = open()
    await db.ready()
    await expect(db.query('BEGIN')).rejects.toBeInstanceOf(TransactionStatementError)
    await expect(db.query('start transaction isolation level serializable')).rejects.toBeInstanceOf(
      TransactionStatementError,
    )
    await expect(db.query("BEGIN; INSERT INTO core_t (who, v) VALUES ('t2', 'open')")).rejects.toBeInstanceOf(
      TransactionStatementError,
    )
    await expect(
      db.query("BEGIN; INSERT INTO core_t (who, v) VALUES ('t2', 'x'); COMMIT; BEGIN; SELECT 1"),
    ).rejects.toBeInstanceOf(TransactionStatementError)
    expect(await committed('t2')).toEqual([])
  })

  it('after an error inside a transaction string the client is never reused inside the transaction (pool max 1)', async () => {
    const db = open({ pool: { max: 1 } })
    await db.ready()
    await expect(
      db.query(`BEGIN; INSERT INTO core_t (who, v) VALUES ('t3', 'lost'); SELECT 1/0; COMMIT;`),
    ).rejects.toMatchObject({ code: '22012' })
    // A division by zero, then a unique violation: each leaves the session in an aborted transaction.
    await expect(
      db.query(`BEGIN; INSERT INTO core_t (id, who, v) VALUES (1, 't3', 'dup'), (1, 't3', 'dup'); COMMIT`),
    ).rejects.toMatchObject({ code: '23505' })
    // The same (only) primary client: outside any transaction, so this commits by itself.
    const { rows } = await db.query<{ tx: string | null }>(
      "INSERT INTO core_t (who, v) VALUES ('t3', 'after') RETURNING now() = statement_timestamp() AS tx",
    )
    expect(rows).toEqual([{ tx: true }])
    expect(await committed('t3')).toEqual(['after'])
  })
})

describe('2. Submittables take the same paths as db.query', () => {
  it('a read Submittable runs on a replica, a write Submittable on the primary; both are counted', async () => {
    const db = open()
    await db.ready()
    const before = db.topology().nodes.reduce((sum, n) => sum + n.queries, 0)
    const read = await viaCallback<{ rec: boolean }>(db, 'SELECT pg_is_in_recovery() AS rec')
    expect(read.rows).toEqual([{ rec: true }])
    const write = await viaCallback<{ rec: boolean }>(
      db,
      "INSERT INTO core_t (who, v) VALUES ('s1', 'w') RETURNING pg_is_in_recovery() AS rec",
    )
    expect(write.rows).toEqual([{ rec: false }])
    expect(db.topology().nodes.reduce((sum, n) => sum + n.queries, 0)).toBe(before + 2)
  })

  it('a BEGIN Submittable is refused with TransactionStatementError, and nothing is left open', async () => {
    const db = open({ pool: { max: 1 } })
    await db.ready()
    await expect(viaCallback(db, 'BEGIN')).rejects.toBeInstanceOf(TransactionStatementError)
    await db.query("INSERT INTO core_t (who, v) VALUES ('s2', 'x')")
    await db.end()
    // Had BEGIN run on the primary client, end() would have rolled the insert back.
    expect(await committed('s2')).toEqual(['x'])
  })

  it('errors settle and release, with or without a callback (pool max 1); an SQL error keeps the connection', async () => {
    const db = open({ pool: { max: 1, connectionTimeoutMillis: 1_000 } })
    await db.ready()
    const pids = async () => {
      const seen = new Map<number, number>()
      for (let i = 0; i < 4; i++) {
        const { rows } = await db.query<{ p: number; pid: number }>(
          'SELECT inet_server_port() AS p, pg_backend_pid() AS pid',
        )
        seen.set(rows[0]!.p, rows[0]!.pid)
      }
      return seen
    }
    const first = await pids()
    expect([...first.keys()].sort()).toEqual([port(1), port(2)].sort())
    for (let i = 0; i < 2; i++) {
      await expect(viaCallback(db, 'SELECT 1/0')).rejects.toMatchObject({ code: '22012' })
      const viaEvent = await viaEvents(db, 'SELECT 1/0')
      expect(viaEvent, 'a callback-less Submittable settles with its error').toMatchObject({ code: '22012' })
    }
    // Every replica still answers at once (its only client went back), on the same backend.
    expect(await pids()).toEqual(first)
  })

  it('a read Submittable inside a session sees the session write (causal), even with replay paused', async () => {
    const db = open()
    await db.ready()
    await pgc.pauseReplay(1)
    await pgc.pauseReplay(2)
    try {
      const rows = await db.session(async () => {
        await db.query("INSERT INTO core_t (who, v) VALUES ('s4', 'mine')")
        return (await viaCallback<{ v: string }>(db, "SELECT v FROM core_t WHERE who = 's4'")).rows
      })
      expect(rows).toEqual([{ v: 'mine' }])
    } finally {
      await pgc.resumeReplay(1)
      await pgc.resumeReplay(2)
    }
  })

  it('a Submittable "read" a replica refuses with 25006 runs on the primary and is reclassified', async () => {
    const db = open()
    const events = recordEvents(db, ['reclassified'])
    await db.ready()
    const res = await viaCallback<{ n: number }>(db, "SELECT core_bump('s5') AS n")
    expect(res.rows).toEqual([{ n: 1 }])
    expect(events.map((e) => e.name)).toEqual(['reclassified'])
    expect(await committed('s5')).toEqual(['bump'])
  })
})

describe('3. transaction(fn, { readOnly: true }) on a replica', () => {
  it("honours causal tokens: a row written in the session is visible (readOnlyTransactions: 'replica')", async () => {
    const db = open({ readOnlyTransactions: 'replica' })
    await db.ready()
    await pgc.pauseReplay(1)
    await pgc.pauseReplay(2)
    try {
      const rows = await db.session(async () => {
        await db.query("INSERT INTO core_t (who, v) VALUES ('r1', 'seen')")
        return db.transaction(async (tx) => (await tx.query("SELECT v FROM core_t WHERE who = 'r1'")).rows, {
          readOnly: true,
        })
      })
      expect(rows).toEqual([{ v: 'seen' }])
    } finally {
      await pgc.resumeReplay(1)
      await pgc.resumeReplay(2)
    }
  })

  it('without a token it runs on a replica', async () => {
    const db = open({ readOnlyTransactions: 'replica' })
    await db.ready()
    const rec = await db.transaction(
      async (tx) => (await tx.query<{ rec: boolean }>('SELECT pg_is_in_recovery() AS rec')).rows[0]!.rec,
      { readOnly: true },
    )
    expect(rec).toBe(true)
  })
})

describe('4. retryOnFailover', () => {
  it("re-runs nothing when fn throws its own error with code 'ECONNRESET'", async () => {
    const db = open()
    await db.ready()
    let calls = 0
    const own = Object.assign(new Error('x'), { code: 'ECONNRESET' })
    const outcome = await timed(
      db.transaction(
        async (tx) => {
          calls++
          await tx.query("INSERT INTO core_t (who, v) VALUES ('f1', 'once')")
          throw own
        },
        { retryOnFailover: true },
      ),
    )
    expect(calls).toBe(1)
    expect(outcome.error).toBe(own)
    expect(await committed('f1')).toEqual([])
    expect(db.topology().searching).toBe(false)
  })
})

describe('5. a client-side timeout on a read', () => {
  it('is the caller’s answer: no retry, no suspect mark, and the server-side statement is cancelled', async () => {
    const db = open({ pool: { query_timeout: 200 } })
    const events = recordEvents(db, ['readRetried', 'nodeDown'])
    await db.ready()
    const before = [nodeSnap(db, 1), nodeSnap(db, 2)]
    const started = Date.now()
    const outcome = await timed(db.query("SELECT pg_sleep(2), 'core-timeout' AS tag"))
    expect(outcome.ok).toBe(false)
    expect((outcome.error as Error).message).toMatch(/timeout/i)
    // The bound is the node's deadline sweep (src/pools/statement-deadlines.ts): never early.
    expect(Date.now() - started).toBeGreaterThanOrEqual(200)
    // The statement stops on its replica well before its 2 s are up (checked first, before
    // anything else can queue behind it).
    const running = async () => {
      let n = 0
      for (const u of pgc.replicaUrls) {
        const [row] = await adminQuery<{ n: number }>(
          u,
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE '%core-timeout%' AND state = 'active' AND pid <> pg_backend_pid()",
        )
        n += row!.n
      }
      return n
    }
    const stopped = await until(
      'the timed-out statement to stop',
      async () => (await running()) === 0,
      1_500,
    ).then(
      () => Date.now() - started,
      () => null,
    )
    expect
      .soft(stopped, 'ms from the read to the end of its statement on the server (null: not in 1.5 s)')
      .not.toBeNull()
    expect.soft(events.filter((e) => e.name === 'readRetried')).toEqual([])
    // No node took a retry, and both replicas still take reads.
    const after = [nodeSnap(db, 1), nodeSnap(db, 2)]
    expect.soft(after.map((n) => n.retries)).toEqual(before.map((n) => n.retries))
    expect.soft(after.map((n) => n.state)).toEqual(['up', 'up'])
    const ports = new Set<number>()
    for (let i = 0; i < 4; i++) {
      ports.add((await db.query<{ p: number }>('SELECT inet_server_port() AS p')).rows[0]!.p)
    }
    expect.soft([...ports].sort()).toEqual([port(1), port(2)].sort())
  })
})

describe('5b. the pool query_timeout as a deadline sweep', () => {
  it('a per-query query_timeout overrides the pool one, as with pg; text, QueryConfig and callback forms time out alike', async () => {
    const db = open({ pool: { query_timeout: 200 } })
    await db.ready()
    // Longer than the pool's bound, shorter than its own: it completes.
    const own = await db.query({
      text: 'SELECT pg_sleep(0.5) AS s, 1 AS one',
      query_timeout: 5_000,
    } as pg.QueryConfig)
    expect(own.rows[0]?.one).toBe(1)
    const config = await timed(db.query({ text: 'SELECT pg_sleep(2)', values: [] }))
    expect((config.error as Error | undefined)?.message).toBe('Query read timeout')
    const viaCallback = await new Promise<Error | undefined>((resolve) =>
      db.query('SELECT pg_sleep(2)', [], (err) => resolve(err)),
    )
    expect(viaCallback?.message).toBe('Query read timeout')
    // The next statements run on healthy connections (the timed-out ones were destroyed).
    const rows = await Promise.all(Array.from({ length: 12 }, (_, i) => db.query('SELECT $1::int AS i', [i])))
    expect(rows.map((r) => r.rows[0]?.i)).toEqual(Array.from({ length: 12 }, (_, i) => i))
  })
})

describe('a write under failover.writeTimeoutMs', () => {
  it('is bounded by the deadline sweep (no pg timer): WriteOutcomeUnknownError, never early, the backend stopped', async () => {
    // The pool's default 60 s query_timeout sweeps every second: a 10 s write bound is kept by
    // the same sweep (src/pools/statement-deadlines.ts), not by a pg timer per write.
    const db = open({ failover: { writeTimeoutMs: 10_000 } })
    await db.ready()
    const started = Date.now()
    const outcome = await timed(
      db.query("SELECT pg_sleep(30), 'write-bound' AS tag", [], { role: 'primary' }),
    )
    const elapsed = Date.now() - started
    expect(outcome.error).toBeInstanceOf(WriteOutcomeUnknownError)
    expect(elapsed).toBeGreaterThanOrEqual(10_000)
    // Liveness only: a tenth late at most, plus the machine's slack.
    expect(elapsed).toBeLessThan(20_000)
    await until(
      'the timed-out write to stop on the primary',
      async () =>
        (
          await adminQuery<{ n: number }>(
            pgc.primaryUrl,
            "SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE '%write-bound%' AND state = 'active' AND pid <> pg_backend_pid()",
          )
        )[0]!.n === 0,
      5_000,
    )
  }, 40_000)
})

describe("a caller's AbortSignal", () => {
  it('cancels the statement on its server, ends the session with the reason terminate, and keeps an aborted one from being sent', async () => {
    const db = open()
    await db.ready()
    const sent = () => db.topology().nodes.reduce((n, x) => n + x.queries, 0)

    const cancel = new AbortController()
    const started = Date.now()
    const cancelled = timed(
      db.query("SELECT pg_sleep(5), 'abort-cancel' AS tag", [], { signal: cancel.signal }),
    )
    await sleep(300)
    cancel.abort()
    const c = await cancelled
    expect((c.error as { code?: string } | undefined)?.code).toBe('57014') // query_canceled
    // Liveness only: well before the statement's 5 s.
    expect(Date.now() - started).toBeLessThan(4_000)

    const kill = new AbortController()
    const killed = timed(db.query("SELECT pg_sleep(5), 'abort-kill' AS tag", [], { signal: kill.signal }))
    await sleep(300)
    kill.abort('terminate')
    const k = await killed
    expect(k.ok).toBe(false)
    expect((k.error as { code?: string } | undefined)?.code).not.toBe('57014')

    const before = sent()
    const pre = new AbortController()
    pre.abort(new Error('changed my mind'))
    const p = await timed(db.query('SELECT 1', [], { signal: pre.signal }))
    expect((p.error as Error).name).toBe('AbortError')
    expect(((p.error as Error).cause as Error).message).toBe('changed my mind')
    expect(sent()).toBe(before)

    await expect(db.query('SELECT 1', [], { signal: {} as AbortSignal })).rejects.toThrow(
      /options.signal must be an AbortSignal/,
    )
    // Every client came back: the pool still answers at once.
    expect((await db.query('SELECT 1 AS one')).rows[0]?.one).toBe(1)
  })
})

describe('6. pool exhaustion and a read-only primary are their own errors, at once', () => {
  it('pool exhaustion: PoolExhaustedError after connectionTimeoutMillis, not after failover.timeoutMs', async () => {
    const db = open({ pool: { max: 1, connectionTimeoutMillis: 300 }, failover: { timeoutMs: 15_000 } })
    const events = recordEvents(db, ['primaryLost', 'failover'])
    await db.ready()
    const held = await db.connect()
    try {
      const outcome = await timed(db.query("INSERT INTO core_t (who, v) VALUES ('p1', 'x')"))
      expect(outcome.error, `after ${Math.round(outcome.ms)} ms: ${String(outcome.error)}`).toBeInstanceOf(
        PoolExhaustedError,
      )
      expect((outcome.error as PoolExhaustedError).node).toBe(nodeName(port(0)))
      // Kept by the node's queue sweep: never early, at most a tenth late (liveness bound here).
      expect(outcome.ms).toBeGreaterThanOrEqual(295)
      expect(outcome.ms).toBeLessThan(5_000)
      // Many callers queued at once: each gets its own PoolExhaustedError, none early, none sent.
      const many = await Promise.all(
        Array.from({ length: 12 }, (_, i) =>
          timed(db.query(`INSERT INTO core_t (who, v) VALUES ('p1', '${i}')`)),
        ),
      )
      for (const o of many) {
        expect(o.error, String(o.error)).toBeInstanceOf(PoolExhaustedError)
        expect(o.ms).toBeGreaterThanOrEqual(295)
        expect(o.ms).toBeLessThan(5_000)
      }
      expect(events).toEqual([])
    } finally {
      held.release()
    }
    expect(await committed('p1')).toEqual([])
    // The pool is whole again: the held client came back and serves the next caller.
    await db.query("INSERT INTO core_t (who, v) VALUES ('p1b', 'after')")
    expect(await committed('p1b')).toEqual(['after'])
  })

  it('25006 from a primary not in recovery (default_transaction_read_only=on): PrimaryReadOnlyError', async () => {
    const db = open({ failover: { timeoutMs: 15_000 } })
    await db.ready()
    await primaryReadOnly(true)
    try {
      const outcome = await timed(db.query("INSERT INTO core_t (who, v) VALUES ('p2', 'x')"))
      expect(outcome.error, `after ${Math.round(outcome.ms)} ms: ${String(outcome.error)}`).toBeInstanceOf(
        PrimaryReadOnlyError,
      )
      expect(outcome.error).not.toBeInstanceOf(NoPrimaryError)
      expect((outcome.error as PrimaryReadOnlyError).node).toBe(nodeName(port(0)))
      expect(outcome.ms).toBeLessThan(5_000)
    } finally {
      await primaryReadOnly(false)
    }
    expect(await committed('p2')).toEqual([])
  })
})

describe('9. 53300 (too many connections) from a replica', () => {
  it('the read runs elsewhere and the node is marked suspect', async () => {
    // The role's CONNECTION LIMIT (3) answers 53300 like max_connections does, on one server at a time.
    const limited = (u: string) => u.replace('postgres:postgres@', 'limited:limited@')
    const db = createCluster({
      primary: limited(url(0)),
      replicas: [limited(url(1)), limited(url(2))],
      // Slow probes: the read path, not the monitor, must handle it.
      healthCheck: { intervalMs: 5_000, timeoutMs: 1_000 },
      pool: { max: 1, connectionTimeoutMillis: 3_000 },
    })
    db.on('error', () => {})
    opened.push(db)
    const events = recordEvents(db, ['readRetried'])
    await db.ready()
    const holders: pg.Client[] = []
    try {
      // Take every slot left on replica 1 (the monitor may hold one): until the server says 53300.
      let refusal: unknown
      for (let i = 0; i < 5 && refusal === undefined; i++) {
        const c = new pg.Client({ connectionString: limited(url(1)) })
        c.on('error', () => {})
        await c.connect().then(
          () => holders.push(c),
          (err: unknown) => {
            refusal = err
          },
        )
      }
      expect(refusal).toMatchObject({ code: '53300' })
      const results = await Promise.allSettled(
        Array.from({ length: 20 }, () => db.query<{ p: number }>('SELECT inet_server_port() AS p')),
      )
      const failed = results.filter((r) => r.status === 'rejected')
      expect(failed.map((r) => String((r as PromiseRejectedResult).reason))).toEqual([])
      const ports = results.map(
        (r) => (r as PromiseFulfilledResult<pg.QueryResult<{ p: number }>>).value.rows[0]!.p,
      )
      expect(ports).not.toContain(port(1))
      expect(events.filter((e) => e.payload.from === nodeName(port(1))).length).toBeGreaterThan(0)
      expect(nodeSnap(db, 1).retries).toBeGreaterThan(0)
    } finally {
      await Promise.all(holders.map((c) => c.end()))
    }
  })
})

describe('10. end() with queries in flight', () => {
  it('each of 50 queries settles with its result or ClusterEndedError, never pg-pool’s raw message', async () => {
    const db = open({ pool: { max: 4 } })
    await db.ready()
    const queries = Array.from({ length: 50 }, (_, i) =>
      i % 5 === 0
        ? db.query("INSERT INTO core_t (who, v) VALUES ('e1', 'x') RETURNING pg_sleep(0.02)")
        : db.query('SELECT pg_sleep(0.02), $1::int AS i', [i]),
    )
    await sleep(30)
    const ending = db.end()
    const settled = await Promise.race([
      Promise.allSettled(queries),
      sleep(20_000).then(() => 'unsettled' as const),
    ])
    expect(settled).not.toBe('unsettled')
    const bad = (settled as PromiseSettledResult<unknown>[])
      .filter((r) => r.status === 'rejected' && !(r.reason instanceof ClusterEndedError))
      .map((r) => String((r as PromiseRejectedResult).reason))
    expect(bad).toEqual([])
    await ending
    expect(db.ended).toBe(true)
  })
})

describe('12. streams leave no timer behind', () => {
  it('a pg-cursor read through db.query and closed leaves no query_timeout timer (60 s by default)', async () => {
    const { default: Cursor } = await import('pg-cursor')
    const db = open()
    await db.ready()
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length
    // Warm up: each replica's pool has its idle client (and that client's idle timer) already.
    for (let i = 0; i < 4; i++) await db.query('SELECT 1')
    // Measured as a difference, over ten cursors: other timers of this process come and go.
    const before = timers()
    for (let i = 0; i < 10; i++) {
      const cursor = db.query(new Cursor('SELECT generate_series(1, 100) AS n'))
      expect(await cursor.read(3)).toHaveLength(3)
      await cursor.close()
    }
    await sleep(50)
    expect(timers() - before).toBeLessThan(5)
  })
})

describe('13. pooled clients: one class for every node, each with its own pool’s connect timeout', () => {
  it('two clusters with different connectionTimeoutMillis: every client of both is one class, with its cluster’s bound', async () => {
    // One client class per node gave pg's methods clients of several hidden classes in one
    // process (megamorphic); the bound now travels with each pool's options instead.
    const clientsOf = (db: Cluster) => {
      const clients: pg.PoolClient[] = []
      db.on('connect', (client: pg.PoolClient) => clients.push(client))
      return clients
    }
    const fast = open({ pool: { connectionTimeoutMillis: 1_234 } })
    const slow = open({ pool: { connectionTimeoutMillis: 4_321 } })
    const fastClients = clientsOf(fast)
    const slowClients = clientsOf(slow)
    for (const db of [fast, slow]) {
      await db.ready()
      // Connections on the primary and on both replicas (reads round-robin, two at a time).
      await Promise.all([db.primary.query('SELECT 1'), db.query('SELECT 1'), db.query('SELECT 1')])
      await Promise.all([db.query('SELECT 1'), db.query('SELECT 1')])
    }
    const bound = (c: pg.PoolClient) =>
      (c as unknown as { _connectionTimeoutMillis: number })._connectionTimeoutMillis
    const ports = (clients: pg.PoolClient[]) =>
      new Set(clients.map((c) => (c as unknown as { port: number }).port))
    expect(ports(fastClients).size).toBe(3)
    expect(ports(slowClients).size).toBe(3)
    expect(new Set([...fastClients, ...slowClients].map((c) => c.constructor)).size).toBe(1)
    expect(new Set(fastClients.map(bound))).toEqual(new Set([1_234]))
    expect(new Set(slowClients.map(bound))).toEqual(new Set([4_321]))
    // Still a pg.Client to the code that receives it (a subclass of the configured Client).
    expect(fastClients[0]).toBeInstanceOf(pg.Client)
  })
})

describe('7 and 8. a failover: queued callers move at once, reads on the primary wait for the new one', () => {
  it('kill(0) + promote(1): writes queued in the old pool settle at once; reads on the primary never fail', async () => {
    const db = open({ pool: { max: 1, connectionTimeoutMillis: 15_000 }, failover: { timeoutMs: 20_000 } })
    const events: Recorded[] = recordEvents(db, ['failover', 'primaryLost'])
    await db.ready()
    // Reads that go to the primary because no replica may take them (weight 0, onNoReplica:
    // 'primary'): three loops of slow reads, so that some are in flight when the primary dies.
    const other = open({
      replicas: [
        { url: url(1), weight: 0 },
        { url: url(2), weight: 0 },
      ],
      onNoReplica: 'primary',
      failover: { timeoutMs: 20_000 },
    })
    await other.ready()
    const reads: Awaited<ReturnType<typeof timed>>[] = []
    let stop = false
    const loop = async () => {
      for (let i = 0; i < 2_000 && !stop; i++) {
        reads.push(await timed(other.query('SELECT pg_sleep(0.03), inet_server_port() AS p')))
        await sleep(5)
      }
    }
    const reader = Promise.all([loop(), loop(), loop()])

    // The primary's only client is held: these writes queue in its pool's connect().
    const held = await db.connect()
    const settledAt: (number | null)[] = [null, null, null, null, null]
    let promotedAt = 0
    const queued = settledAt.map((_, i) =>
      timed(
        db.query("INSERT INTO core_t (who, v) VALUES ('q1', $1) RETURNING inet_server_port() AS p", [
          `q${i}`,
        ]),
      ).then((r) => {
        // Absolute for now: pgsplit may find the new primary before promote() returns.
        settledAt[i] = Date.now()
        return r
      }),
    )
    await sleep(200)
    expect(db.waitingCount, 'the writes wait in the primary pool').toBe(5)
    await pgc.kill(0)
    promotedAt = Date.now()
    await pgc.promote(1)
    await until('the failover event', () => events.some((e) => e.name === 'failover'), 20_000)
    // Bounded beyond connectionTimeoutMillis, so the diff shows when they did settle.
    const results = await Promise.race([Promise.all(queued), sleep(20_000).then(() => null)])
    held.release(new Error('the old primary is gone'))
    const count = reads.length
    await until('reads after the failover', () => reads.length >= count + 5, 20_000).catch(() => undefined)
    stop = true
    await reader

    // "At once": within a few seconds of the promotion, not at connectionTimeoutMillis (15 s).
    for (let i = 0; i < settledAt.length; i++) {
      const at = settledAt[i]
      if (at !== null && at !== undefined) settledAt[i] = at - promotedAt
    }
    expect
      .soft(
        settledAt.every((ms) => ms !== null && ms < 5_000),
        `settled ${JSON.stringify(settledAt)} ms after the promotion (null: not within 20 s)`,
      )
      .toBe(true)
    for (const r of results ?? []) {
      // Re-routed to the new primary, or a typed pgsplit error; never a pool timeout.
      if (r.ok) expect.soft(r.value).toMatchObject({ rows: [{ p: port(1) }] })
      else expect.soft(r.error).toBeInstanceOf(WriteOutcomeUnknownError)
    }
    expect.soft(reads.filter((r) => !r.ok).map((r) => String(r.error))).toEqual([])
    expect.soft(reads.at(-1)?.value).toMatchObject({ rows: [{ p: port(1) }] })
    expect(reads.length).toBeGreaterThan(20)
  })
})
