import {
  CompiledQuery,
  createQueryId,
  type DatabaseConnection,
  type Driver,
  IdentifierNode,
  type PostgresCursorConstructor,
  type QueryCompiler,
  RawNode,
  type TransactionSettings,
} from 'kysely'
import type pg from 'pg'
import { type Classification, type ClusterConfig, createCluster } from '../index.js'
import { SqlClassifierCache } from './query-routing.js'
import { type ConnectionCluster, PhysicalConnection, SplitConnection } from './split-connection.js'

/** The part of a Cluster the driver uses. */
export interface DriverCluster extends ConnectionCluster {
  end(): Promise<void>
  classify(sql: string): Classification
  addConnectHook(hook: (client: pg.PoolClient, node: string) => Promise<void> | void): () => void
}

/** Where the driver's Cluster comes from. */
export type ClusterSource =
  | { readonly cluster: DriverCluster; readonly owns: boolean }
  | { readonly config: ClusterConfig }

/** The dialect options the driver needs. */
export interface DriverOptions {
  readonly cursor?: PostgresCursorConstructor
  readonly onCreateConnection?: (connection: DatabaseConnection) => Promise<void>
  readonly onReserveConnection?: (connection: DatabaseConnection) => Promise<void>
}

function savepointCommand(command: string, name: string): RawNode {
  // As Kysely's PostgresDriver: the identifier node quotes (sanitizes) the name.
  return RawNode.createWithChildren([RawNode.createWithSql(`${command} `), IdentifierNode.create(name)])
}

/**
 * Kysely driver over a pgsplit Cluster. Connections it hands out are {@link SplitConnection}s: lazy,
 * routed per statement until something pins them to a primary client. `onCreateConnection` runs
 * once per physical client of every node (the cluster's connect hook), as PostgresDriver runs it
 * once per pg client; statements are classified by the cluster's one classifier cache.
 */
export class SplitDriver implements Driver {
  readonly #source: ClusterSource
  readonly #options: DriverOptions
  readonly #idle: SplitConnection[] = []
  #classifier: SqlClassifierCache | null = null
  #cluster: DriverCluster | null = null
  #unhook: (() => void) | null = null
  #owns = false
  #destroyed = false

  constructor(source: ClusterSource, options: DriverOptions) {
    this.#source = source
    this.#options = options
  }

  /** Takes the given cluster, or creates this driver's own from the config (no I/O wait: it connects in the background). */
  async init(): Promise<void> {
    if (this.#cluster !== null) return
    if ('config' in this.#source) {
      this.#cluster = createCluster(this.#source.config)
      this.#owns = true
    } else {
      this.#cluster = this.#source.cluster
      this.#owns = this.#source.owns
    }
    const cluster = this.#cluster
    this.#classifier = new SqlClassifierCache((sql) => cluster.classify(sql))
    const onCreate = this.#options.onCreateConnection
    if (onCreate !== undefined) {
      this.#unhook = cluster.addConnectHook((client) => onCreate(new PhysicalConnection(client)))
    }
  }

  async acquireConnection(): Promise<DatabaseConnection> {
    const cluster = this.#cluster
    if (this.#destroyed || cluster === null) throw new Error('driver has already been destroyed')
    const connection =
      this.#idle.pop() ?? new SplitConnection(cluster, this.#classifier!, this.#options.cursor ?? null)
    if (this.#options.onReserveConnection !== undefined) {
      try {
        await this.#options.onReserveConnection(connection)
      } catch (err) {
        connection.release()
        this.#idle.push(connection)
        throw err
      }
    }
    return connection
  }

  async beginTransaction(connection: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    // The same SQL as PostgresDriver; the connection pins itself to a primary client for it.
    if (settings.isolationLevel !== undefined || settings.accessMode !== undefined) {
      let sql = 'start transaction'
      if (settings.isolationLevel !== undefined) sql += ` isolation level ${settings.isolationLevel}`
      if (settings.accessMode !== undefined) sql += ` ${settings.accessMode}`
      await connection.executeQuery(CompiledQuery.raw(sql))
    } else {
      await connection.executeQuery(CompiledQuery.raw('begin'))
    }
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('commit'))
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('rollback'))
  }

  async savepoint(
    connection: DatabaseConnection,
    savepointName: string,
    compileQuery: QueryCompiler['compileQuery'],
  ): Promise<void> {
    await connection.executeQuery(compileQuery(savepointCommand('savepoint', savepointName), createQueryId()))
  }

  async rollbackToSavepoint(
    connection: DatabaseConnection,
    savepointName: string,
    compileQuery: QueryCompiler['compileQuery'],
  ): Promise<void> {
    await connection.executeQuery(
      compileQuery(savepointCommand('rollback to', savepointName), createQueryId()),
    )
  }

  async releaseSavepoint(
    connection: DatabaseConnection,
    savepointName: string,
    compileQuery: QueryCompiler['compileQuery'],
  ): Promise<void> {
    await connection.executeQuery(compileQuery(savepointCommand('release', savepointName), createQueryId()))
  }

  async releaseConnection(connection: DatabaseConnection): Promise<void> {
    if (!(connection instanceof SplitConnection)) return
    connection.release()
    if (!this.#destroyed) this.#idle.push(connection)
  }

  /** Ends the cluster if this driver owns it (created from a config, or `ownsCluster: true`). */
  async destroy(): Promise<void> {
    this.#destroyed = true
    this.#idle.length = 0
    this.#unhook?.()
    this.#unhook = null
    const cluster = this.#cluster
    this.#cluster = null
    if (cluster !== null && this.#owns) await cluster.end()
  }
}
