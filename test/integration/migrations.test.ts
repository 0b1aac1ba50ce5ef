import { Kysely, sql } from 'kysely'
import { type Migration, Migrator } from 'kysely/migration'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Cluster, createCluster } from '../../src/index.js'
import { SplitDialect } from '../../src/kysely/index.js'
import { startCluster, type TestCluster } from '../../src/testing/index.js'

// Schema set-up in the DEFAULT consistency mode (eventual): every statement that changes the
// schema raises a barrier that every later read of the process waits for, so a migrator (or a job
// queue creating its tables) never reads a catalog a replica has not replayed yet.

let pgc: TestCluster
let db: Cluster

beforeAll(async () => {
  pgc = await startCluster({ replicas: 2, backend: 'local' })
  db = createCluster({
    primary: pgc.primaryUrl,
    replicas: pgc.replicaUrls,
    healthCheck: { intervalMs: 200 },
  })
  await db.ready()
})

afterAll(async () => {
  await db?.end()
  await pgc?.destroy()
})

describe('schema changes in the default mode', () => {
  it("Kysely's Migrator through SplitDialect passes 50 runs out of 50, replicas lagging at random", async () => {
    const kysely = new Kysely<Record<string, Record<string, unknown>>>({
      dialect: new SplitDialect({ cluster: db }),
    })
    const failures: string[] = []
    for (let run = 0; run < 50; run++) {
      // Replicas that lag behind the DDL: one paused for some runs, both for others.
      const paused = run % 3 === 0 ? [1] : run % 3 === 1 ? [1, 2] : []
      for (const i of paused) await pgc.pauseReplay(i)
      try {
        const table = `mig_${run}`
        const migrations: Record<string, Migration> = {
          '001_create': {
            up: async (m) => {
              await m.schema
                .createTable(table)
                .addColumn('id', 'integer', (c) => c.primaryKey())
                .execute()
            },
          },
          '002_fill': {
            up: async (m) => {
              await sql`insert into ${sql.table(table)} (id) values (1), (2)`.execute(m)
              await m.schema.alterTable(table).addColumn('note', 'text').execute()
            },
          },
        }
        const migrator = new Migrator({
          db: kysely,
          provider: { getMigrations: async () => migrations },
          migrationTableName: `kysely_migration_${run}`,
          migrationLockTableName: `kysely_migration_lock_${run}`,
        })
        const result = await migrator.migrateToLatest()
        if (result.error !== undefined) failures.push(`run ${run}: ${String(result.error)}`)
        // Reads right after, outside any session: the new column and the rows are there.
        const rows = await db.query(`SELECT id, note FROM ${table} ORDER BY id`)
        if (rows.rows.length !== 2) failures.push(`run ${run}: ${rows.rows.length} rows`)
        const again = await migrator.migrateToLatest()
        if (again.error !== undefined || again.results?.length !== 0)
          failures.push(`run ${run}: not idempotent`)
      } finally {
        for (const i of paused) await pgc.resumeReplay(i)
      }
    }
    expect(failures).toEqual([])
    await kysely.destroy()
  }, 240_000)

  it('a table created through db.query is readable at once, from any replica, in eventual mode', async () => {
    await pgc.pauseReplay(1)
    try {
      await db.query('CREATE TABLE schema_barrier_t (id int)')
      await db.query('INSERT INTO schema_barrier_t VALUES (1)')
      // Without the barrier a replica that has not replayed the CREATE answers 42P01.
      for (let i = 0; i < 20; i++) {
        const { rows } = await db.query('SELECT count(*)::int AS n FROM pg_class WHERE relname = $1', [
          'schema_barrier_t',
        ])
        expect(rows).toEqual([{ n: 1 }])
      }
    } finally {
      await pgc.resumeReplay(1)
    }
  })
})
