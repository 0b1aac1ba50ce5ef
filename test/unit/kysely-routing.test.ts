import {
  type CompiledQuery,
  DummyDriver,
  type Generated,
  Kysely,
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
  sql,
} from 'kysely'
import { jsonArrayFrom } from 'kysely/helpers/postgres'
import { describe, expect, it } from 'vitest'
import { isForcedToPrimary, PrimaryPlugin, primary } from '../../src/kysely/primary.js'
import { routeQuery, SqlClassifierCache } from '../../src/kysely/query-routing.js'
import { classify } from '../../src/router/classify.js'

interface DB {
  person: { id: Generated<number>; name: string; owner: number | null }
  pet: { id: Generated<number>; owner_id: number; name: string }
}

const db = new Kysely<DB>({
  dialect: {
    createAdapter: () => new PostgresAdapter(),
    createDriver: () => new DummyDriver(),
    createIntrospector: (k) => new PostgresIntrospector(k),
    createQueryCompiler: () => new PostgresQueryCompiler(),
  },
})

const classifier = new SqlClassifierCache((sql) => classify(sql, { writeFunctions: ['audit.touch'] }))
/** Where a query lands: 'primary' when the connection pins for it or the cluster's classifier calls it a write. */
const route = (q: { compile(): CompiledQuery }) => {
  const compiled = q.compile()
  const r = routeQuery(compiled, classifier)
  return r.pin || classifier.classify(compiled.sql).kind === 'write' ? 'primary' : 'routed'
}
/** Whether the connection pins a primary client for it (session state), or the cluster routes it. */
const pins = (q: { compile(): CompiledQuery }) => routeQuery(q.compile(), classifier).pin

describe('routeQuery: by root operation node', () => {
  it('routes plain selects, joins, CTEs, subqueries, set operations and JSON helpers as reads', () => {
    expect(route(db.selectFrom('person').selectAll())).toBe('routed')
    expect(
      route(
        db
          .selectFrom('person')
          .innerJoin('pet', 'pet.owner_id', 'person.id')
          .select(['person.name', 'pet.name as pet'])
          .where('person.id', 'in', db.selectFrom('pet').select('owner_id')),
      ),
    ).toBe('routed')
    expect(
      route(
        db
          .with('p', (qb) => qb.selectFrom('person').select('id'))
          .selectFrom('p')
          .selectAll()
          .union(db.selectFrom('pet').select('id')),
      ),
    ).toBe('routed')
    expect(
      route(
        db
          .selectFrom('person')
          .select((eb) => [
            'id',
            jsonArrayFrom(eb.selectFrom('pet').select('name').whereRef('pet.owner_id', '=', 'person.id')).as(
              'pets',
            ),
          ]),
      ),
    ).toBe('routed')
    expect(route(db.selectFrom('person').select((eb) => eb.fn.count('id').as('n')))).toBe('routed')
    // User values are not mistaken for nodes.
    expect(route(db.selectFrom('person').selectAll().where('name', '=', 'InsertQueryNode'))).toBe('routed')
  })

  it('sends row locks and data-modifying CTEs (at any depth) to the primary', () => {
    expect(route(db.selectFrom('person').selectAll().forUpdate())).toBe('primary')
    expect(route(db.selectFrom('person').selectAll().forShare())).toBe('primary')
    expect(route(db.selectFrom('person').selectAll().forNoKeyUpdate().skipLocked())).toBe('primary')
    expect(route(db.selectFrom('person').selectAll().forKeyShare())).toBe('primary')
    expect(route(db.selectFrom('person').selectAll().modifyEnd(sql`for update`))).toBe('primary')
    expect(
      route(
        db
          .with('ins', (qb) => qb.insertInto('person').values({ name: 'x' }).returning('id'))
          .selectFrom('ins')
          .selectAll(),
      ),
    ).toBe('primary')
    expect(
      route(
        db
          .selectFrom('person')
          .selectAll()
          .where('id', 'in', db.selectFrom('pet').select('owner_id').forUpdate()),
      ),
    ).toBe('primary')
    expect(
      route(
        db
          .with('d', (qb) => qb.deleteFrom('pet').where('id', '=', 1).returning('owner_id'))
          .selectFrom('person')
          .where('id', 'in', (eb) => eb.selectFrom('d').select('owner_id'))
          .selectAll(),
      ),
    ).toBe('primary')
  })

  it('classifies the SQL of selects that call functions or embed raw SQL', () => {
    expect(route(db.selectNoFrom(sql<number>`inet_server_port()`.as('p')))).toBe('routed')
    expect(route(db.selectNoFrom((eb) => eb.fn<number>('nextval', [sql.lit('s')]).as('n')))).toBe('primary')
    expect(route(db.selectNoFrom(sql<number>`pg_advisory_lock(1)`.as('l')))).toBe('primary')
    expect(route(db.selectNoFrom((eb) => eb.fn('audit.touch', [sql.lit(1)]).as('t')))).toBe('primary')
    expect(route(db.selectNoFrom((eb) => eb.fn('upper', [sql.lit('a')]).as('u')))).toBe('routed')
  })

  it('sends writes through the cluster (its write path), pinning only for session state', () => {
    expect(pins(db.insertInto('person').values({ name: 'a' }))).toBe(false)
    expect(pins(db.updateTable('person').set({ name: 'b' }))).toBe(false)
    expect(pins(db.deleteFrom('person'))).toBe(false)
    expect(pins(db.schema.createTable('t').addColumn('a', 'integer'))).toBe(false)
    expect(pins(db.schema.createTable('t').temporary().addColumn('a', 'integer'))).toBe(true)
    expect(pins(db.selectFrom('person').selectAll().forUpdate())).toBe(false)
  })

  it('sends writes and schema statements to the primary', () => {
    expect(route(db.insertInto('person').values({ name: 'a' }))).toBe('primary')
    expect(route(db.updateTable('person').set({ name: 'b' }))).toBe('primary')
    expect(route(db.deleteFrom('person'))).toBe('primary')
    expect(
      route(
        db
          .mergeInto('person as t')
          .using('pet as s', 's.owner_id', 't.id')
          .whenMatched()
          .thenDelete()
          .whenNotMatched()
          .thenInsertValues({ name: 'n' }),
      ),
    ).toBe('primary')
    expect(route(db.schema.createTable('t').addColumn('id', 'integer'))).toBe('primary')
    expect(route(db.schema.createTable('t').temporary().addColumn('id', 'integer'))).toBe('primary')
    expect(route(db.schema.alterTable('t').addColumn('x', 'text'))).toBe('primary')
    expect(route(db.schema.createIndex('i').on('t').column('x'))).toBe('primary')
    expect(route(db.schema.dropTable('t').ifExists())).toBe('primary')
    expect(route(db.schema.createView('v').as(db.selectFrom('person').selectAll()))).toBe('primary')
    expect(route(db.schema.createSchema('s'))).toBe('primary')
  })

  it('routes raw SQL with the classifier, and marks transaction control', () => {
    const raw = (text: string) => routeQuery(sql.raw(text).compile(db), classifier)
    expect(raw('select 1')).toEqual({ pin: false })
    expect(raw('insert into person (name) values (1)')).toEqual({ pin: true })
    expect(raw('set search_path = app')).toEqual({ pin: true })
    expect(raw('create temp table t (id int)')).toEqual({ pin: true })
    expect(raw('begin')).toEqual({ pin: true, transactionControl: 'begin' })
    expect(raw('start transaction isolation level serializable')).toEqual({
      pin: true,
      transactionControl: 'begin',
    })
    expect(raw('commit')).toEqual({ pin: true, transactionControl: 'commit' })
    expect(raw('rollback')).toEqual({ pin: true, transactionControl: 'rollback' })
    expect(raw('savepoint "a"')).toEqual({ pin: true, transactionControl: 'other' })
    expect(raw('/* pgsplit:primary */ select 1')).toEqual({ pin: true })
  })
})

describe('primary(db)', () => {
  it('marks the query id without changing node or SQL', () => {
    const plain = db.selectFrom('person').selectAll().compile()
    const forced = primary(db).selectFrom('person').selectAll().compile()
    expect(forced.sql).toBe(plain.sql)
    expect(forced.query).toEqual(plain.query)
    expect(isForcedToPrimary(forced.queryId)).toBe(true)
    expect(isForcedToPrimary(plain.queryId)).toBe(false)
    const viaPlugin = db.withPlugin(new PrimaryPlugin()).insertInto('person').values({ name: 'a' }).compile()
    expect(isForcedToPrimary(viaPlugin.queryId)).toBe(true)
    // Raw builders too.
    const raw = sql`select 1`.compile(primary(db))
    expect(isForcedToPrimary(raw.queryId)).toBe(true)
  })
})
