import type { Generated, Kysely } from 'kysely'

/** The `clients` table. */
export interface ClientsTable {
  id: Generated<number>
  name: string
  email: string
}

/** The example's database, as Kysely sees it. */
export interface Database {
  clients: ClientsTable
}

/**
 * Creates the table when it is missing. DDL goes to the primary like any write; replicas get it
 * by replication, a moment later.
 */
export async function migrate(db: Kysely<Database>): Promise<void> {
  try {
    await db.schema
      .createTable('clients')
      .ifNotExists()
      .addColumn('id', 'serial', (c) => c.primaryKey())
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('email', 'text', (c) => c.notNull().unique())
      .execute()
  } catch (err) {
    // Two instances starting at once: IF NOT EXISTS still races on the catalog; the other won.
    if ((err as { code?: unknown }).code !== '23505') throw err
  }
}
