import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Cluster, createCluster, TransactionStatementError } from '../../src/index.js'
import { startCluster, type TestCluster } from '../../src/testing/index.js'
import { eventually, portOf, tally } from '../support/cluster.js'

let pgc: TestCluster
let db: Cluster
let primaryPort: number
let replicaPorts: number[]

beforeAll(async () => {
  pgc = await startCluster({ replicas: 2, backend: 'local' })
  primaryPort = pgc.nodes[0]!.port
  replicaPorts = pgc.nodes.slice(1).map((n) => n.port)
  db = createCluster({ primary: pgc.primaryUrl, replicas: pgc.replicaUrls, healthCheck: { intervalMs: 200 } })
  await db.ready()
  await db.query('CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL)')
  await db.query('CREATE SEQUENCE seq')
  await db.query(
    `CREATE FUNCTION bump(n text) RETURNS int LANGUAGE sql AS $$ INSERT INTO items (name) VALUES (n) RETURNING id $$`,
  )
  // Replicas must have the schema before reads are routed to them (pgsplit's schema barrier holds
  // reads to replicas its monitor has seen past the DDL; the wait below covers a probe round too).
  await eventually(async () => {
    for (const url of pgc.replicaUrls) {
      const c = new pg.Client(url)
      await c.connect()
      const { rows } = await c.query("SELECT to_regproc('bump') IS NOT NULL AS ok")
      await c.end()
      if (!rows[0].ok) return false
    }
    return true
  })
  await new Promise((r) => setTimeout(r, 1_000))
})

afterAll(async () => {
  await db?.end()
  await pgc?.destroy()
})

describe('routing by statement', () => {
  it('sends reads to replicas (both of them) and writes to the primary', async () => {
    const ports: number[] = []
    for (let i = 0; i < 40; i++) ports.push(await portOf(db))
    const counts = tally(ports)
    expect([...counts.keys()].sort()).toEqual([...replicaPorts].sort())
    const { rows } = await db.query<{ p: number }>(
      'INSERT INTO items (name) VALUES ($1) RETURNING inet_server_port() AS p',
      ['w'],
    )
    expect(rows[0]!.p).toBe(primaryPort)
  })

  it('sends FOR UPDATE, writing CTEs, nextval and advisory locks to the primary', async () => {
    expect(await portOf(db, 'SELECT inet_server_port() AS p FROM items LIMIT 1 FOR UPDATE')).toBe(primaryPort)
    expect(
      await portOf(
        db,
        "WITH x AS (INSERT INTO items (name) VALUES ('cte') RETURNING id) SELECT inet_server_port() AS p FROM x",
      ),
    ).toBe(primaryPort)
    expect(await portOf(db, "SELECT inet_server_port() AS p, nextval('seq')")).toBe(primaryPort)
    expect(await portOf(db, 'SELECT inet_server_port() AS p, pg_try_advisory_lock(1)')).toBe(primaryPort)
    expect(await portOf(db, "SELECT 'DELETE FROM items' AS s, inet_server_port() AS p")).not.toBe(primaryPort)
  })

  it('honours onPrimary, db.primary, the per-call option, the comment hint and transactions', async () => {
    expect(await db.onPrimary(() => portOf(db))).toBe(primaryPort)
    // The scope follows nested async calls.
    const nested = async () => {
      await new Promise((r) => setTimeout(r, 5))
      return portOf(db)
    }
    expect(await db.onPrimary(nested)).toBe(primaryPort)
    expect(await portOf(db.primary)).toBe(primaryPort)
    const { rows } = await db.query<{ p: number }>('SELECT inet_server_port() AS p', [], { role: 'primary' })
    expect(rows[0]!.p).toBe(primaryPort)
    expect(await portOf(db, '/* pgsplit:primary */ SELECT inet_server_port() AS p')).toBe(primaryPort)
    const inTx = await db.transaction(async (tx) => {
      const r = await tx.query<{ p: number }>('SELECT inet_server_port() AS p')
      // Statements through db inside the transaction callback also go to the primary.
      const viaDb = await portOf(db)
      return [r.rows[0]!.p, viaDb]
    })
    expect(inTx).toEqual([primaryPort, primaryPort])
    expect(replicaPorts).toContain(await portOf(db.replica))
  })

  it('corrects a classifier miss: a replica rejects with 25006, the primary runs it once', async () => {
    const reclassified: string[] = []
    db.on('reclassified', (e) => reclassified.push(e.sql))
    const before = await db.primary.query<{ n: string }>('SELECT count(*) AS n FROM items')
    const { rows } = await db.query<{ id: number }>("SELECT bump('miss') AS id")
    expect(rows[0]!.id).toBeGreaterThan(0)
    const after = await db.primary.query<{ n: string }>('SELECT count(*) AS n FROM items')
    expect(Number(after.rows[0]!.n)).toBe(Number(before.rows[0]!.n) + 1)
    expect(reclassified).toEqual(["SELECT bump('miss') AS id"])
    // Remembered as a write: the second call goes straight to the primary.
    await db.query("SELECT bump('miss') AS id")
    expect(reclassified).toHaveLength(1)
  })

  it('rejects BEGIN through db.query with a clear error', async () => {
    await expect(db.query('BEGIN')).rejects.toBeInstanceOf(TransactionStatementError)
    await expect(db.query('begin')).rejects.toThrow(/db\.transaction/)
  })

  it('passes SQL errors through unchanged', async () => {
    const err = await db.query('SELECT * FROM no_such_table').catch((e: unknown) => e)
    expect(err).toBeInstanceOf(pg.DatabaseError)
    expect((err as pg.DatabaseError).code).toBe('42P01')
    expect((err as pg.DatabaseError).position).toBe('15')
    const werr = await db.query('INSERT INTO items (name) VALUES (NULL)').catch((e: unknown) => e)
    expect((werr as pg.DatabaseError).code).toBe('23502')
  })

  it('supports the callback forms of query and connect', async () => {
    const rows = await new Promise<unknown[]>((resolve, reject) =>
      db.query('SELECT 1 AS one', (err, res) => (err ? reject(err) : resolve(res!.rows))),
    )
    expect(rows).toEqual([{ one: 1 }])
    const withValues = await new Promise<unknown[]>((resolve, reject) =>
      db.query('SELECT $1::int AS v', [7], (err, res) => (err ? reject(err) : resolve(res!.rows))),
    )
    expect(withValues).toEqual([{ v: 7 }])
    const port = await new Promise<number>((resolve, reject) =>
      db.connect((err, client, done) => {
        if (err || !client || !done) return reject(err)
        client.query('SELECT inet_server_port() AS p', (qerr, res) => {
          done()
          return qerr ? reject(qerr) : resolve(res.rows[0].p)
        })
      }),
    )
    expect(port).toBe(primaryPort)
    const err = await new Promise<Error | undefined>((resolve) => db.query('SELECT 1/0', (e) => resolve(e)))
    expect((err as pg.DatabaseError).code).toBe('22012')
  })

  it('runs a Submittable (pg.Query) and releases its client', async () => {
    const rows: unknown[] = []
    const query = new pg.Query('SELECT generate_series(1, 3) AS n')
    await new Promise<void>((resolve, reject) => {
      query.on('row', (row: unknown) => rows.push(row))
      query.on('end', () => resolve())
      query.on('error', reject)
      db.query(query)
    })
    expect(rows).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }])
    await eventually(() => db.topology().nodes.every((n) => n.pool.total === n.pool.idle), {
      what: 'clients idle',
    })
  })

  it('pins clients from connect() to the primary or a replica', async () => {
    const client = await db.connect()
    try {
      expect((await client.query('SELECT inet_server_port() AS p')).rows[0].p).toBe(primaryPort)
      await client.query('BEGIN')
      await client.query("INSERT INTO items (name) VALUES ('pinned')")
      await client.query('COMMIT')
    } finally {
      client.release()
    }
    const replica = await db.connect({ role: 'replica' })
    try {
      expect(replicaPorts).toContain((await replica.query('SELECT inet_server_port() AS p')).rows[0].p)
    } finally {
      replica.release()
    }
  })

  it('rolls a transaction back when fn throws, and runs read-only ones as asked', async () => {
    await expect(
      db.transaction(async (tx) => {
        await tx.query("INSERT INTO items (name) VALUES ('rolled-back')")
        throw new Error('boom')
      }),
    ).rejects.toThrow('boom')
    const { rows } = await db.primary.query("SELECT count(*)::int AS n FROM items WHERE name = 'rolled-back'")
    expect(rows[0]?.n).toBe(0)
    const level = await db.transaction(async (tx) => (await tx.query('SHOW transaction_isolation')).rows[0], {
      isolationLevel: 'serializable',
      readOnly: true,
    })
    expect(level).toEqual({ transaction_isolation: 'serializable' })
  })

  it("runs readOnly transactions on a replica when readOnlyTransactions is 'replica'", async () => {
    const ro = createCluster({
      primary: pgc.primaryUrl,
      replicas: pgc.replicaUrls,
      readOnlyTransactions: 'replica',
    })
    try {
      await ro.ready()
      const [port, readOnly] = await ro.transaction(
        async (tx) => {
          const r = await tx.query('SELECT inet_server_port() AS p, current_setting($1) AS ro', [
            'transaction_read_only',
          ])
          return [r.rows[0].p, r.rows[0].ro]
        },
        { readOnly: true },
      )
      expect(replicaPorts).toContain(port)
      expect(readOnly).toBe('on')
      // Without readOnly the transaction stays on the primary.
      expect(
        await ro.transaction(async (tx) => (await tx.query('SELECT inet_server_port() AS p')).rows[0].p),
      ).toBe(primaryPort)
    } finally {
      await ro.end()
    }
  })

  it('keeps pg.Pool counters and forwards idle-client errors without crashing', async () => {
    expect(db.totalCount).toBeGreaterThan(0)
    expect(db.idleCount).toBeLessThanOrEqual(db.totalCount)
    expect(db.waitingCount).toBe(0)
    const nodes = db.topology().nodes
    expect(nodes.every((n) => typeof n.queries === 'number' && typeof n.errors === 'number')).toBe(true)
    expect(nodes.find((n) => n.port === primaryPort)!.queries).toBeGreaterThan(5)
  })
})

describe('code written for pg.Pool', () => {
  // A small repository module, as apps write it against pg.Pool: query + connect/BEGIN/COMMIT/release.
  interface PoolLike {
    query: pg.Pool['query']
    connect: () => Promise<pg.PoolClient>
  }
  async function transfer(pool: PoolLike, name: string): Promise<number> {
    const client = await pool.connect()
    try {
      await client.query('BEGIN')
      const { rows } = await client.query<{ id: number }>(
        'INSERT INTO items (name) VALUES ($1) RETURNING id',
        [name],
      )
      await client.query('UPDATE items SET name = name || $2 WHERE id = $1', [rows[0]!.id, '!'])
      await client.query('COMMIT')
      return rows[0]!.id
    } catch (err) {
      await client.query('ROLLBACK')
      throw err
    } finally {
      client.release()
    }
  }
  async function findName(pool: PoolLike, id: number): Promise<string | undefined> {
    const { rows } = await pool.query<{ name: string }>('SELECT name FROM items WHERE id = $1', [id])
    return rows[0]?.name
  }

  it('runs unchanged with a Cluster and with a plain pg.Pool', async () => {
    const plain = new pg.Pool({ connectionString: pgc.primaryUrl })
    try {
      for (const pool of [plain as PoolLike, db as unknown as PoolLike]) {
        const id = await transfer(pool, 'repo')
        await eventually(async () => (await findName(pool, id)) === 'repo!', { what: 'replica to catch up' })
      }
    } finally {
      await plain.end()
    }
  })
})

describe('replica failures', () => {
  it('a replica killed mid-load costs no failed read', async () => {
    const local = createCluster({
      primary: pgc.primaryUrl,
      replicas: pgc.replicaUrls,
      healthCheck: { intervalMs: 200, timeoutMs: 500 },
    })
    const idleErrors: Error[] = []
    local.on('error', (err) => idleErrors.push(err))
    await local.ready()
    let failures = 0
    let reads = 0
    let stop = false
    const readers = Array.from({ length: 8 }, async () => {
      for (let i = 0; i < 5000 && !stop; i++) {
        try {
          await local.query('SELECT inet_server_port() AS p')
          reads++
        } catch {
          failures++
        }
      }
    })
    await new Promise((r) => setTimeout(r, 300))
    await pgc.kill(2)
    await new Promise((r) => setTimeout(r, 1000))
    stop = true
    await Promise.all(readers)
    expect(failures).toBe(0)
    expect(reads).toBeGreaterThan(100)
    const killed = local.topology().nodes.find((n) => n.port === pgc.nodes[2]!.port)!
    expect(killed.state).toBe('down')
    await local.end()
    await pgc.start(2)
  })
})
