/**
 * `kysely/migration` for Kysely 0.27 and 0.28, which export the migration API from `'kysely'`
 * itself (0.29 moved it to `'kysely/migration'`). vitest.kysely-versions.config.ts aliases
 * `'kysely/migration'` here and `'kysely'` to the version under test. A namespace import: the
 * types of the installed 0.29 do not have it at the root.
 */
import * as kysely from 'kysely'

export const Migrator = (kysely as unknown as { Migrator: unknown }).Migrator
