import { type Generated, Kysely, type LogEvent, PostgresDialect, sql } from 'kysely'
import { jsonArrayFrom, jsonObjectFrom } from 'kysely/helpers/postgres'
import { type Migration, type MigrationProvider, Migrator } from 'kysely/migration'
import pg from 'pg'
import Cursor from 'pg-cursor'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { type Cluster, ConfigError, createCluster } from '../../src/index.js'
import { primary, SplitDialect } from '../../src/kysely/index.js'
import { startCluster, type TestCluster } from '../../src/testing/index.js'

// One real cluster (a primary, two replicas) for the whole file. `direct` is a plain
// PostgresDialect on the primary: the reference results. `db` is the SplitDialect under test.

interface Person {
  id: Generated<number>
  first_name: string
  last_name: string | null
  age: number
}
interface Pet {
  id: Generated<number>
  owner_id: number
  name: string
  species: string
}
interface Item {
  id: Generated<number>
  name: string
}
interface DB {
  person: Person
  pet: Pet
  item: Item
  tmp_note: { id: number; body: string }
}

let pgc: TestCluster
let cluster: Cluster
let db: Kysely<DB>
let direct: Kysely<DB>
let primaryPort: number
let replicaPorts: number[]
const replicaClients: pg.Client[] = []

/** Waits until every replica has replayed the primary's current WAL position. */
async function caughtUp(timeoutMs = 20_000): Promise<void> {
  const { rows } = await sql<{ lsn: string }>`select pg_current_wal_lsn()::text as lsn`.execute(direct)
  const lsn = rows[0]!.lsn
  const deadline = Date.now() + timeoutMs
  for (const client of replicaClients) {
    for (;;) {
      const res = await client.query<{ ok: boolean }>('select pg_last_wal_replay_lsn() >= $1::pg_lsn as ok', [
        lsn,
      ])
      if (res.rows[0]?.ok === true) break
      if (Date.now() > deadline) throw new Error(`replica did not reach ${lsn}`)
      await new Promise((r) => setTimeout(r, 20))
    }
  }
}

/** db.startTransaction() exists since Kysely 0.28; vitest.kysely-versions.config.ts runs 0.27 too. */
const itSince028 = 'startTransaction' in Kysely.prototype ? it : it.skip

const portExpr = sql<number>`inet_server_port()`.as('p')
const pidExpr = sql<number>`pg_backend_pid()`.as('pid')

async function rawPort(k: Kysely<DB>): Promise<number> {
  const { rows } = await sql<{ p: number }>`select inet_server_port() as p`.execute(k)
  return rows[0]!.p
}

function primaryQueries(): number {
  const topo = cluster.topology()
  return topo.nodes.find((n) => n.name === topo.primary)!.queries
}

beforeAll(async () => {
  pgc = await startCluster({ replicas: 2, backend: 'local' })
  primaryPort = pgc.nodes[0]!.port
  replicaPorts = pgc.nodes.slice(1).map((n) => n.port)
  for (const url of pgc.replicaUrls) {
    const client = new pg.Client(url)
    client.on('error', () => {})
    await client.connect()
    replicaClients.push(client)
  }
  direct = new Kysely<DB>({
    dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: pgc.primaryUrl, max: 4 }) }),
  })
  cluster = createCluster({
    primary: pgc.primaryUrl,
    replicas: pgc.replicaUrls,
    healthCheck: { intervalMs: 200 },
  })
  await cluster.ready()
  db = new Kysely<DB>({ dialect: new SplitDialect({ cluster, cursor: Cursor }) })

  await direct.schema
    .createTable('person')
    .addColumn('id', 'serial', (c) => c.primaryKey())
    .addColumn('first_name', 'text', (c) => c.notNull())
    .addColumn('last_name', 'text')
    .addColumn('age', 'integer', (c) => c.notNull())
    .execute()
  await direct.schema
    .createTable('pet')
    .addColumn('id', 'serial', (c) => c.primaryKey())
    .addColumn('owner_id', 'integer', (c) => c.notNull().references('person.id').onDelete('cascade'))
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('species', 'text', (c) => c.notNull())
    .execute()
  await direct.schema
    .createTable('item')
    .addColumn('id', 'serial', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull())
    .execute()
  await sql`create sequence kseq`.execute(direct)
  // A function the classifier cannot know writes: a replica refuses it (25006).
  await sql`create function bump(n text) returns int language sql as $$ insert into item (name) values (n) returning id $$`.execute(
    direct,
  )
  const people = [
    { first_name: 'Jennifer', last_name: 'Aniston', age: 55 },
    { first_name: 'Arnold', last_name: 'Schwarzenegger', age: 77 },
    { first_name: 'Sylvester', last_name: null, age: 78 },
    { first_name: 'Ada', last_name: 'Lovelace', age: 36 },
  ]
  const ids = await direct.insertInto('person').values(people).returning('id').execute()
  await direct
    .insertInto('pet')
    .values([
      { owner_id: ids[0]!.id, name: 'Catto', species: 'cat' },
      { owner_id: ids[0]!.id, name: 'Doggo', species: 'dog' },
      { owner_id: ids[1]!.id, name: 'Hammo', species: 'hamster' },
      { owner_id: ids[3]!.id, name: 'Babbage', species: 'cat' },
    ])
    .execute()
  await caughtUp()
})

afterAll(async () => {
  await db?.destroy()
  await direct?.destroy()
  await cluster?.end()
  for (const c of replicaClients) await c.end().catch(() => {})
  await pgc?.destroy()
})

describe('routing by node kind', () => {
  it('sends raw reads and builder selects to replicas', async () => {
    const ports: number[] = []
    for (let i = 0; i < 4; i++) ports.push(await rawPort(db))
    for (let i = 0; i < 4; i++) ports.push((await db.selectNoFrom(portExpr).executeTakeFirstOrThrow()).p)
    for (let i = 0; i < 2; i++) {
      ports.push((await db.selectFrom('person').select(portExpr).limit(1).executeTakeFirstOrThrow()).p)
    }
    expect(new Set(ports)).toEqual(new Set(replicaPorts))
  })

  it('sends row-locking selects to the primary', async () => {
    const base = () => db.selectFrom('person').select(portExpr).limit(1)
    expect((await base().forUpdate().executeTakeFirstOrThrow()).p).toBe(primaryPort)
    expect((await base().forShare().executeTakeFirstOrThrow()).p).toBe(primaryPort)
    expect((await base().forNoKeyUpdate().skipLocked().executeTakeFirstOrThrow()).p).toBe(primaryPort)
    expect((await base().forKeyShare().executeTakeFirstOrThrow()).p).toBe(primaryPort)
  })

  it('sends insert, update, delete and data-modifying CTEs to the primary', async () => {
    const ins = await db
      .insertInto('item')
      .values({ name: 'a' })
      .returning(['id', portExpr])
      .executeTakeFirstOrThrow()
    expect(ins.p).toBe(primaryPort)
    const upd = await db
      .updateTable('item')
      .set({ name: 'b' })
      .where('id', '=', ins.id)
      .returning(portExpr)
      .executeTakeFirstOrThrow()
    expect(upd.p).toBe(primaryPort)
    const del = await db
      .deleteFrom('item')
      .where('id', '=', ins.id)
      .returning(portExpr)
      .executeTakeFirstOrThrow()
    expect(del.p).toBe(primaryPort)
    const cte = await db
      .with('ins', (qb) => qb.insertInto('item').values({ name: 'cte' }).returning('id'))
      .selectFrom('ins')
      .select(['ins.id', portExpr])
      .executeTakeFirstOrThrow()
    expect(cte.p).toBe(primaryPort)
    const merged = await db
      .mergeInto('item as t')
      .using('person as s', 's.id', 't.id')
      .whenMatched()
      .thenDoNothing()
      .executeTakeFirstOrThrow()
    expect(merged.numChangedRows ?? 0n).toBe(0n)
    const { rows } = await sql<{
      p: number
    }>`insert into item (name) values ('raw') returning inet_server_port() as p`.execute(db)
    expect(rows[0]!.p).toBe(primaryPort)
  })

  it('classifies selects that call writing functions (nextval) and self-corrects 25006', async () => {
    const next = await db
      .selectNoFrom((eb) => [eb.fn<string>('nextval', [sql.lit('kseq')]).as('n'), portExpr])
      .executeTakeFirstOrThrow()
    expect(next.p).toBe(primaryPort)
    const reclassified = vi.fn()
    cluster.on('reclassified', reclassified)
    try {
      const bumped = await sql<{
        id: number
        p: number
      }>`select bump('via-replica') as id, inet_server_port() as p`.execute(db)
      expect(bumped.rows[0]!.p).toBe(primaryPort)
      expect(reclassified).toHaveBeenCalledTimes(1)
    } finally {
      cluster.off('reclassified', reclassified)
    }
  })

  it('forces the primary with primary(db) and cluster.onPrimary()', async () => {
    expect((await primary(db).selectNoFrom(portExpr).executeTakeFirstOrThrow()).p).toBe(primaryPort)
    expect(await rawPort(primary(db))).toBe(primaryPort)
    const inScope = await cluster.onPrimary(async () => ({
      builder: (await db.selectFrom('person').select(portExpr).limit(1).executeTakeFirstOrThrow()).p,
      raw: await rawPort(db),
    }))
    expect(inScope).toEqual({ builder: primaryPort, raw: primaryPort })
    // The marker belongs to the chain, not to db.
    expect(replicaPorts).toContain(await rawPort(db))
  })

  it('keeps errors as pg errors', async () => {
    const missing = await sql`select * from no_such_table`.execute(db).catch((e: unknown) => e)
    expect(missing).toBeInstanceOf(pg.DatabaseError)
    expect((missing as pg.DatabaseError).code).toBe('42P01')
    const id = (await db.insertInto('item').values({ name: 'dup' }).returning('id').executeTakeFirstOrThrow())
      .id
    const dup = await db
      .insertInto('item')
      .values({ id, name: 'dup' })
      .execute()
      .catch((e: unknown) => e)
    expect(dup).toBeInstanceOf(pg.DatabaseError)
    expect((dup as pg.DatabaseError).code).toBe('23505')
  })
})

describe('transactions and connections stay on one primary session', () => {
  it('db.transaction(): every statement on the same primary backend; the SQL Kysely logs is unchanged', async () => {
    const logged: string[] = []
    const logDb = new Kysely<DB>({
      dialect: new SplitDialect({ cluster }),
      log: (e: LogEvent) => {
        logged.push(e.query.sql)
      },
    })
    const seen = await logDb.transaction().execute(async (trx) => {
      const a = await trx.selectNoFrom([portExpr, pidExpr]).executeTakeFirstOrThrow()
      await trx.insertInto('item').values({ name: 'tx' }).execute()
      const b = await trx.selectNoFrom([portExpr, pidExpr]).executeTakeFirstOrThrow()
      return [a, b]
    })
    expect(seen[0]!.p).toBe(primaryPort)
    expect(seen[1]).toEqual(seen[0])
    expect(logged).toEqual([
      'begin',
      'select inet_server_port() as "p", pg_backend_pid() as "pid"',
      'insert into "item" ("name") values ($1)',
      'select inet_server_port() as "p", pg_backend_pid() as "pid"',
      'commit',
    ])
    await logDb.destroy()
    expect(cluster.ended).toBe(false)
  })

  it('db.transaction(): rolls back when the callback throws; isolation levels apply', async () => {
    await expect(
      db.transaction().execute(async (trx) => {
        await trx.insertInto('item').values({ name: 'rolled-back' }).execute()
        throw new Error('boom')
      }),
    ).rejects.toThrow('boom')
    const left = await direct.selectFrom('item').select('id').where('name', '=', 'rolled-back').execute()
    expect(left).toEqual([])
    const iso = await db
      .transaction()
      .setIsolationLevel('serializable')
      .execute(async (trx) => {
        const { rows } = await sql<{
          level: string
          p: number
        }>`select current_setting('transaction_isolation') as level, inet_server_port() as p`.execute(trx)
        return rows[0]!
      })
    expect(iso).toEqual({ level: 'serializable', p: primaryPort })
  })

  itSince028('controlled transactions with savepoints', async () => {
    const trx = await db.startTransaction().execute()
    const pid0 = (await trx.selectNoFrom(pidExpr).executeTakeFirstOrThrow()).pid
    await trx.insertInto('item').values({ name: 'sp-a' }).execute()
    const sp = await trx.savepoint('a').execute()
    await sp.insertInto('item').values({ name: 'sp-b' }).execute()
    const back = await sp.rollbackToSavepoint('a').execute()
    await back.insertInto('item').values({ name: 'sp-c' }).execute()
    const sp2 = await back.savepoint('b').execute()
    await sp2.insertInto('item').values({ name: 'sp-d' }).execute()
    const released = await sp2.releaseSavepoint('b').execute()
    expect((await released.selectNoFrom(pidExpr).executeTakeFirstOrThrow()).pid).toBe(pid0)
    await released.commit().execute()
    const names = await direct
      .selectFrom('item')
      .select('name')
      .where('name', 'like', 'sp-%')
      .orderBy('name')
      .execute()
    expect(names.map((r) => r.name)).toEqual(['sp-a', 'sp-c', 'sp-d'])

    const gone = await db.startTransaction().execute()
    await gone.insertInto('item').values({ name: 'ctl-rolled-back' }).execute()
    await gone.rollback().execute()
    expect(
      await direct.selectFrom('item').select('id').where('name', '=', 'ctl-rolled-back').execute(),
    ).toEqual([])
  })

  it('db.connection(): temp tables and session settings live on one pinned session', async () => {
    const result = await db.connection().execute(async (conn) => {
      await conn.schema
        .createTable('tmp_note')
        .temporary()
        .addColumn('id', 'integer')
        .addColumn('body', 'text')
        .execute()
      await conn
        .insertInto('tmp_note')
        .values([
          { id: 1, body: 'one' },
          { id: 2, body: 'two' },
        ])
        .execute()
      await sql`set application_name = 'kysely-conn-test'`.execute(conn)
      await sql`create temp table raw_tmp as select 42 as answer`.execute(conn)
      const notes = await conn.selectFrom('tmp_note').select(['id', 'body']).orderBy('id').execute()
      const setting = await sql<{ application_name: string }>`show application_name`.execute(conn)
      const answer = await sql<{ answer: number }>`select answer from raw_tmp`.execute(conn)
      const where = await conn.selectNoFrom([portExpr, pidExpr]).executeTakeFirstOrThrow()
      return { notes, app: setting.rows[0]!.application_name, answer: answer.rows[0]!.answer, where }
    })
    expect(result.notes).toEqual([
      { id: 1, body: 'one' },
      { id: 2, body: 'two' },
    ])
    expect(result.app).toBe('kysely-conn-test')
    expect(result.answer).toBe(42)
    expect(result.where.p).toBe(primaryPort)
  })

  it('db.connection(): session advisory locks and currval stay in the session', async () => {
    const out = await db.connection().execute(async (conn) => {
      await sql`select pg_advisory_lock(4242)`.execute(conn)
      const held = await sql<{
        n: number
      }>`select count(*)::int as n from pg_locks where locktype = 'advisory' and objid = 4242 and pid = pg_backend_pid()`.execute(
        conn,
      )
      await sql`select pg_advisory_unlock(4242)`.execute(conn)
      const id = (
        await conn.insertInto('item').values({ name: 'cv' }).returning('id').executeTakeFirstOrThrow()
      ).id
      const cur = await sql<{ v: string }>`select currval('item_id_seq')::text as v`.execute(conn)
      return { held: held.rows[0]!.n, id, cur: Number(cur.rows[0]!.v) }
    })
    expect(out.held).toBe(1)
    expect(out.cur).toBe(out.id)
  })

  it('db.connection() with only reads binds to no node: each read is routed', async () => {
    // Schema changes of earlier tests hold reads to replicas that have replayed them (the barrier
    // drops once the monitor has seen every replica past them): let it drop first.
    await caughtUp()
    await new Promise((r) => setTimeout(r, 1_500))
    const before = primaryQueries()
    const ports = await db.connection().execute(async (conn) => {
      const out: number[] = []
      for (let i = 0; i < 4; i++) out.push((await conn.selectNoFrom(portExpr).executeTakeFirstOrThrow()).p)
      return out
    })
    expect(new Set(ports)).toEqual(new Set(replicaPorts))
    expect(primaryQueries()).toBe(before)
  })

  it('a transaction inside db.connection() reuses the pinned session', async () => {
    const pids = await db.connection().execute(async (conn) => {
      await sql`set application_name = 'conn-then-trx'`.execute(conn)
      const outer = (await conn.selectNoFrom(pidExpr).executeTakeFirstOrThrow()).pid
      const inner = await conn.transaction().execute(async (trx) => {
        const { rows } = await sql<{
          pid: number
          app: string
        }>`select pg_backend_pid() as pid, current_setting('application_name') as app`.execute(trx)
        return rows[0]!
      })
      return { outer, inner }
    })
    expect(pids.inner).toEqual({ pid: pids.outer, app: 'conn-then-trx' })
  })
})

describe('streaming with a cursor', () => {
  it('streams reads from a replica and, in a transaction, from the primary', async () => {
    const expected = await direct.selectFrom('person').select(['id', 'first_name']).orderBy('id').execute()
    const rows: { id: number; first_name: string; p: number }[] = []
    for await (const row of db
      .selectFrom('person')
      .select(['id', 'first_name', portExpr])
      .orderBy('id')
      .stream(2)) {
      rows.push(row)
    }
    expect(rows.map(({ p: _p, ...r }) => r)).toEqual(expected)
    expect(replicaPorts).toContain(rows[0]!.p)
    expect(new Set(rows.map((r) => r.p)).size).toBe(1)

    const inTrx = await db.transaction().execute(async (trx) => {
      const out: number[] = []
      for await (const row of trx.selectFrom('person').select(portExpr).stream(1)) out.push(row.p)
      return out
    })
    expect(inTrx).toEqual(expected.map(() => primaryPort))

    const forced: number[] = []
    for await (const row of primary(db).selectFrom('person').select(portExpr).stream(3)) forced.push(row.p)
    expect(new Set(forced)).toEqual(new Set([primaryPort]))

    // Stopping early closes the cursor and gives the client back.
    for await (const _row of db.selectFrom('person').selectAll().stream(1)) break
    for await (const _row of primary(db).selectFrom('person').selectAll().stream(1)) break
    const deadline = Date.now() + 5_000
    while (cluster.totalCount !== cluster.idleCount && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10))
    }
    expect(cluster.totalCount - cluster.idleCount).toBe(0)
  })

  it('needs the cursor option, as PostgresDialect does', async () => {
    const noCursor = new Kysely<DB>({ dialect: new SplitDialect({ cluster }) })
    const stream = noCursor.selectFrom('person').selectAll().stream()
    await expect(stream.next()).rejects.toThrow(/cursor/)
    await noCursor.destroy()
  })
})

describe('same results as PostgresDialect on the primary', () => {
  const queries: Record<string, (k: Kysely<DB>) => Promise<unknown>> = {
    join: (k) =>
      k
        .selectFrom('person')
        .innerJoin('pet', 'pet.owner_id', 'person.id')
        .select(['person.first_name', 'pet.name as pet', 'pet.species'])
        .orderBy('pet.name')
        .execute(),
    leftJoin: (k) =>
      k
        .selectFrom('person')
        .leftJoin('pet', 'pet.owner_id', 'person.id')
        .select(['person.id', 'pet.name'])
        .orderBy('person.id')
        .orderBy('pet.name')
        .execute(),
    cte: (k) =>
      k
        .with('cat_owner', (qb) => qb.selectFrom('pet').where('species', '=', 'cat').select('owner_id'))
        .selectFrom('person')
        .where('id', 'in', (eb) => eb.selectFrom('cat_owner').select('owner_id'))
        .select(['first_name'])
        .orderBy('first_name')
        .execute(),
    aggregates: (k) =>
      k
        .selectFrom('pet')
        .select((eb) => ['species', eb.fn.countAll<string>().as('n'), eb.fn.max('name').as('last')])
        .groupBy('species')
        .having((eb) => eb.fn.countAll(), '>=', 1)
        .orderBy('species')
        .execute(),
    avg: (k) =>
      k
        .selectFrom('person')
        .select((eb) => [eb.fn.avg<string>('age').as('avg'), eb.fn.sum<string>('age').as('sum')])
        .executeTakeFirst(),
    jsonHelpers: (k) =>
      k
        .selectFrom('person')
        .select((eb) => [
          'id',
          'first_name',
          jsonArrayFrom(
            eb
              .selectFrom('pet')
              .select(['pet.name', 'pet.species'])
              .whereRef('pet.owner_id', '=', 'person.id')
              .orderBy('pet.name'),
          ).as('pets'),
        ])
        .orderBy('id')
        .execute(),
    jsonObject: (k) =>
      k
        .selectFrom('pet')
        .select((eb) => [
          'pet.name',
          jsonObjectFrom(
            eb.selectFrom('person').select(['first_name', 'age']).whereRef('person.id', '=', 'pet.owner_id'),
          ).as('owner'),
        ])
        .orderBy('pet.name')
        .execute(),
    subqueryAndCase: (k) =>
      k
        .selectFrom('person')
        .select((eb) => [
          'first_name',
          eb.case().when('age', '>', 60).then('senior').else('adult').end().as('bracket'),
          eb
            .selectFrom('pet')
            .select(eb.fn.countAll<string>().as('c'))
            .whereRef('pet.owner_id', '=', 'person.id')
            .as('pets'),
        ])
        .where((eb) => eb.or([eb('last_name', 'is', null), eb('age', '<', 60)]))
        .orderBy('first_name')
        .execute(),
    union: (k) =>
      k
        .selectFrom('person')
        .select('first_name as name')
        .union(k.selectFrom('pet').select('name'))
        .orderBy('name')
        .execute(),
    distinctOn: (k) =>
      k
        .selectFrom('pet')
        .distinctOn('species')
        .select(['species', 'name'])
        .orderBy('species')
        .orderBy('name')
        .execute(),
    exists: (k) =>
      k
        .selectFrom('person')
        .select('first_name')
        .where(({ exists, selectFrom }) =>
          exists(selectFrom('pet').select('pet.id').whereRef('pet.owner_id', '=', 'person.id')),
        )
        .orderBy('first_name')
        .limit(2)
        .offset(1)
        .execute(),
    takeFirst: (k) =>
      k.selectFrom('person').selectAll().where('first_name', '=', 'Ada').executeTakeFirstOrThrow(),
  }

  it('returns the same rows for a broad sample of the builder', async () => {
    for (const [name, q] of Object.entries(queries)) {
      const expected = await q(direct)
      expect({ name, rows: await q(db) }).toEqual({ name, rows: expected })
    }
  })

  it('introspects the same tables', async () => {
    const tables = await db.introspection.getTables()
    expect(tables).toEqual(await direct.introspection.getTables())
    expect(tables.map((t) => t.name)).toEqual(expect.arrayContaining(['person', 'pet', 'item']))
  })

  it('runs migrations with Migrator', async () => {
    const migrations: Record<string, Migration> = {
      '001_tag': {
        up: async (m) => {
          await m.schema
            .createTable('tag')
            .addColumn('id', 'serial', (c) => c.primaryKey())
            .addColumn('label', 'text', (c) => c.notNull().unique())
            .execute()
        },
        down: async (m) => {
          await m.schema.dropTable('tag').execute()
        },
      },
      '002_tag_seed': {
        up: async (m) => {
          await sql`insert into tag (label) values ('a'), ('b')`.execute(m)
          await m.schema.alterTable('person').addColumn('nickname', 'text').execute()
        },
        down: async (m) => {
          await m.schema.alterTable('person').dropColumn('nickname').execute()
          await sql`delete from tag`.execute(m)
        },
      },
    }
    const provider: MigrationProvider = { getMigrations: async () => migrations }
    const migrator = new Migrator({ db, provider })
    const first = await migrator.migrateToLatest()
    expect(first.error).toBeUndefined()
    expect(first.results?.map((r) => [r.migrationName, r.status])).toEqual([
      ['001_tag', 'Success'],
      ['002_tag_seed', 'Success'],
    ])
    const again = await migrator.migrateToLatest()
    expect(again.error).toBeUndefined()
    expect(again.results).toEqual([])
    await caughtUp()
    expect(await db.introspection.getTables({ withInternalKyselyTables: true })).toEqual(
      await direct.introspection.getTables({ withInternalKyselyTables: true }),
    )
    const down = await migrator.migrateDown()
    expect(down.results?.map((r) => [r.migrationName, r.direction, r.status])).toEqual([
      ['002_tag_seed', 'Down', 'Success'],
    ])
    const cols = await direct.introspection.getTables()
    expect(cols.find((t) => t.name === 'person')!.columns.map((c) => c.name)).not.toContain('nickname')
  })
})

describe('causal consistency through Kysely', () => {
  it('reads its own writes while one replica pauses and resumes replay', async () => {
    const causal = createCluster({
      primary: pgc.primaryUrl,
      replicas: pgc.replicaUrls,
      consistency: 'causal',
      healthCheck: { intervalMs: 100 },
    })
    const cdb = new Kysely<DB>({ dialect: new SplitDialect({ cluster: causal, ownsCluster: true }) })
    let paused = false
    const onReplica = { count: 0 }
    try {
      await causal.ready()
      for (let i = 0; i < 300; i++) {
        if (i % 25 === 0) {
          if (paused) await pgc.resumeReplay(1)
          else await pgc.pauseReplay(1)
          paused = !paused
        }
        const { id } = await cdb
          .insertInto('item')
          .values({ name: `causal-${i}` })
          .returning('id')
          .executeTakeFirstOrThrow()
        const row = await cdb
          .selectFrom('item')
          .select(['name', portExpr])
          .where('id', '=', id)
          .executeTakeFirst()
        expect(row?.name).toBe(`causal-${i}`)
        if (row !== undefined && row.p !== primaryPort) onReplica.count++
      }
    } finally {
      if (paused) await pgc.resumeReplay(1)
      await cdb.destroy()
    }
    expect(causal.ended).toBe(true)
    // Liveness only: causal reads are not all sent to the primary.
    expect(onReplica.count).toBeGreaterThan(0)
  })
})

describe('a read-only request never touches the primary', () => {
  it('runs selects, raw reads, JSON helpers, introspection and a stream on replicas only', async () => {
    const fresh = new Kysely<DB>({ dialect: new SplitDialect({ cluster, cursor: Cursor }) })
    const connect = vi.spyOn(cluster, 'connect')
    const before = primaryQueries()
    try {
      const ports: number[] = []
      ports.push((await fresh.selectFrom('person').select(portExpr).limit(1).executeTakeFirstOrThrow()).p)
      ports.push(await rawPort(fresh))
      const nested = await fresh
        .selectFrom('person')
        .select((eb) => [portExpr, jsonArrayFrom(eb.selectFrom('pet').select('name')).as('pets')])
        .limit(1)
        .executeTakeFirstOrThrow()
      ports.push(nested.p)
      await fresh.introspection.getTables()
      for await (const row of fresh.selectFrom('pet').select(portExpr).stream(2)) ports.push(row.p)
      await fresh.connection().execute(async (conn) => {
        ports.push((await conn.selectNoFrom(portExpr).executeTakeFirstOrThrow()).p)
      })
      for (const p of ports) expect(replicaPorts).toContain(p)
      expect(connect).not.toHaveBeenCalled()
      expect(primaryQueries()).toBe(before)
    } finally {
      connect.mockRestore()
      await fresh.destroy()
    }
  })
})

describe('dialect lifecycle', () => {
  it('one dialect with { cluster } backs many Kysely instances and never ends the shared cluster', async () => {
    const created = vi.fn(async () => {})
    const reserved = vi.fn(async () => {})
    const dialect = new SplitDialect({ cluster, onCreateConnection: created, onReserveConnection: reserved })
    const a = new Kysely<DB>({ dialect })
    const b = new Kysely<DB>({ dialect })
    expect(replicaPorts).toContain(await rawPort(a))
    expect(replicaPorts).toContain(await rawPort(b))
    await a.insertInto('item').values({ name: 'life' }).execute()
    // onCreateConnection runs once per new physical client of the cluster (kysely-abort.test.ts
    // counts them); how many the shared cluster opens here depends on the tests before.
    expect(reserved).toHaveBeenCalledTimes(3)
    await a.destroy()
    await b.destroy()
    expect(cluster.ended).toBe(false)
    expect(replicaPorts).toContain(await rawPort(db))
    await expect(rawPort(a)).rejects.toThrow(/destroyed/)
  })

  it('with a config, each Kysely instance creates its own cluster and destroy() ends it', async () => {
    const appName = 'pgsplit-kysely-own'
    const dialect = new SplitDialect({
      primary: pgc.primaryUrl,
      replicas: pgc.replicaUrls,
      pool: { application_name: appName },
    })
    const a = new Kysely<DB>({ dialect })
    const b = new Kysely<DB>({ dialect })
    expect(replicaPorts).toContain(await rawPort(a))
    expect(await rawPort(primary(b))).toBe(primaryPort)
    await b.insertInto('item').values({ name: 'own' }).execute()
    const count = async () => {
      const { rows } = await sql<{
        n: number
      }>`select count(*)::int as n from pg_stat_activity where application_name = ${appName}`.execute(direct)
      return rows[0]!.n
    }
    expect(await count()).toBeGreaterThan(0)
    await a.destroy()
    await b.destroy()
    const deadline = Date.now() + 10_000
    while ((await count()) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
    expect(await count()).toBe(0)
  })

  it('reports a bad config on the first query', async () => {
    const bad = new Kysely<DB>({ dialect: new SplitDialect({ replicas: [pgc.replicaUrls[0]!] }) })
    await expect(rawPort(bad)).rejects.toBeInstanceOf(ConfigError)
    await bad.destroy()
  })
})
