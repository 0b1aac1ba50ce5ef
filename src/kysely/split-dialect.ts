import {
  type DatabaseConnection,
  type DatabaseIntrospector,
  type Dialect,
  type DialectAdapter,
  type Driver,
  type Kysely,
  PostgresAdapter,
  type PostgresCursorConstructor,
  PostgresIntrospector,
  PostgresQueryCompiler,
  type QueryCompiler,
} from 'kysely'
import { type Cluster, type ClusterConfig, ConfigError } from '../index.js'
import { type ClusterSource, type DriverOptions, SplitDriver } from './split-driver.js'

/**
 * The part of a {@link Cluster} the dialect uses. Structural, so that a Cluster from `'pgsplit'`
 * fits whichever copy of the types `'pgsplit/kysely'` was built with.
 */
export type SplitCluster = Pick<Cluster, 'query' | 'connect' | 'end' | 'classify' | 'addConnectHook'>

/** Options shared by both forms of {@link SplitDialectConfig}, as in Kysely's `PostgresDialectConfig`. */
export interface SplitDialectOptions {
  /**
   * The `pg-cursor` class, for `.stream()`. Reads stream from a replica, everything else from
   * the connection's primary client.
   *
   * ```ts
   * import Cursor from 'pg-cursor'
   * new SplitDialect({ cluster, cursor: Cursor })
   * ```
   */
  cursor?: PostgresCursorConstructor
  /**
   * Called once for each connection object the driver creates (they are reused, like pg clients),
   * before its first use. Statements it runs are routed like any other: session settings for every
   * physical connection of every node belong in the cluster's `pool` options instead
   * (`pool: { options: '-c search_path=app' }`, `statement_timeout`, `application_name`).
   */
  onCreateConnection?: (connection: DatabaseConnection) => Promise<void>
  /** Called each time a connection is handed to Kysely (each query outside transactions). */
  onReserveConnection?: (connection: DatabaseConnection) => Promise<void>
}

/** `new SplitDialect({ cluster })`: a Cluster you created; shared, and not ended by `db.destroy()`. */
export interface SplitDialectClusterConfig extends SplitDialectOptions {
  cluster: SplitCluster
  /** End the cluster when a Kysely instance of this dialect is destroyed. Default `false`. */
  ownsCluster?: boolean
  /**
   * Not allowed with a given cluster (a ConfigError): the cluster's one classifier decides, so
   * set `writeFunctions` on the cluster. (Kept so old configs fail loudly, not silently.)
   * User functions that write, as the cluster's `writeFunctions`: raw SQL calling them pins the
   * connection to the primary (the cluster routes them to the primary either way).
   */
  writeFunctions?: readonly string[]
}

/**
 * `new SplitDialect({ primary, replicas, ... })`: the config of `createCluster`. Each Kysely
 * instance made with the dialect creates its own Cluster on its first query and ends it on
 * `db.destroy()`.
 */
export interface SplitDialectOwnConfig extends ClusterConfig, SplitDialectOptions {
  cluster?: undefined
  ownsCluster?: undefined
}

export type SplitDialectConfig = SplitDialectClusterConfig | SplitDialectOwnConfig

/**
 * Kysely dialect for a PostgreSQL streaming-replication cluster: a drop-in for `PostgresDialect`.
 * Reads go to healthy replicas within the lag bound, writes, DDL, transactions and
 * `db.connection()` sessions to the primary, with the cluster's failover, consistency and
 * `onPrimary` rules. The SQL Kysely builds, logs and sends is unchanged (Postgres adapter,
 * compiler and introspector).
 *
 * ```ts
 * import { Kysely } from 'kysely'
 * import { createCluster } from 'pgsplit'
 * import { SplitDialect } from 'pgsplit/kysely'
 *
 * const cluster = createCluster({ primary: process.env.PRIMARY_URL, replicas: [process.env.REPLICA_URL] })
 * const db = new Kysely<DB>({ dialect: new SplitDialect({ cluster }) })
 *
 * await db.insertInto('person').values({ name: 'Ada' }).execute()  // primary
 * await db.selectFrom('person').selectAll().execute()              // a replica
 * ```
 *
 * With a config instead of a cluster, each Kysely instance owns its own Cluster:
 *
 * ```ts
 * const db = new Kysely<DB>({ dialect: new SplitDialect({ primary: url0, replicas: [url1, url2] }) })
 * await db.destroy() // ends that cluster
 * ```
 */
export class SplitDialect implements Dialect {
  readonly #config: SplitDialectConfig

  constructor(config: SplitDialectConfig) {
    if (typeof config !== 'object' || config === null) {
      throw new TypeError('SplitDialect: expected { cluster } or a ClusterConfig')
    }
    this.#config = config
  }

  createDriver(): Driver {
    const { cursor, onCreateConnection, onReserveConnection } = this.#config
    const options: DriverOptions = { cursor, onCreateConnection, onReserveConnection }
    let source: ClusterSource
    if (this.#config.cluster !== undefined) {
      const { cluster, ownsCluster, writeFunctions } = this.#config
      if (writeFunctions !== undefined) {
        // One classifier per cluster: a second list here would route the same text two ways.
        throw new ConfigError(
          'SplitDialect.writeFunctions',
          'is set on the cluster with a given cluster: createCluster({ writeFunctions: [...] })',
        )
      }
      source = { cluster, owns: ownsCluster === true }
      return new SplitDriver(source, options)
    }
    const {
      cluster: _cluster,
      ownsCluster: _owns,
      cursor: _cursor,
      onCreateConnection: _create,
      onReserveConnection: _reserve,
      ...clusterConfig
    } = this.#config
    source = { config: clusterConfig }
    return new SplitDriver(source, options)
  }

  createQueryCompiler(): QueryCompiler {
    return new PostgresQueryCompiler()
  }

  createAdapter(): DialectAdapter {
    return new PostgresAdapter()
  }

  createIntrospector(db: Kysely<unknown>): DatabaseIntrospector {
    return new PostgresIntrospector(db)
  }
}
