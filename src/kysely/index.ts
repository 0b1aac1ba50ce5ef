/**
 * `pgsplit/kysely`: a Kysely dialect over a pgsplit Cluster. Swap `PostgresDialect` for
 * {@link SplitDialect}; nothing else in Kysely code changes.
 *
 * ```ts
 * import { Kysely } from 'kysely'
 * import { createCluster } from 'pgsplit'
 * import { primary, SplitDialect } from 'pgsplit/kysely'
 *
 * const cluster = createCluster({ primary: PRIMARY_URL, replicas: [REPLICA_URL] })
 * const db = new Kysely<DB>({ dialect: new SplitDialect({ cluster }) })
 * await primary(db).selectFrom('person').selectAll().execute() // forced to the primary
 * ```
 *
 * @module
 */
export { PrimaryPlugin, primary } from './primary.js'
export type { SplitConnection } from './split-connection.js'
export {
  type SplitCluster,
  SplitDialect,
  type SplitDialectClusterConfig,
  type SplitDialectConfig,
  type SplitDialectOptions,
  type SplitDialectOwnConfig,
} from './split-dialect.js'
export { SplitDriver } from './split-driver.js'
