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
import { type ClusterConfig, createCluster } from '../index.js'
import { SqlClassifierCache } from './query-routing.js'
import { type ConnectionCluster, SplitConnection } from './split-connection.js'

/** The part of a Cluster the driver uses. */
export interface DriverCluster extends ConnectionCluster {
  end(): Promise<void>
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
  readonly writeFunctions?: readonly string[]
}

function savepointCommand(command: string, name: string): RawNode {
  // As Kysely's PostgresDriver: the identifier node quotes (sanitizes) the name.
  return RawNode.createWithChildren([RawNode.createWithSql(`${command} `), IdentifierNode.create(name)])
}

/**
 * Kysely driver over a pgsplit Cluster. Connections it hands out are {@link SplitConnection}s: lazy,
 * routed per statement until something pins them to a primary client. Idle connection objects are
 * reused, so `onCreateConnection` runs once per connection object, as PostgresDriver runs it once
 * per pg client.
 */
export class SplitDriver implements Driver {
  readonly #source: ClusterSource
  readonly #options: DriverOptions
  readonly #classifier: SqlClassifierCache
  readonly #idle: SplitConnection[] = []
  #cluster: DriverCluster | null = null
  #owns = false
  #destroyed = false

  constructor(source: ClusterSource, options: DriverOptions) {
    this.#source = source
    this.#options = options
    const writeFunctions =
      options.writeFunctions ?? ('config' in source ? source.config.writeFunctions : undefined)
    this.#classifier = new SqlClassifierCache(writeFunctions === undefined ? {} : { writeFunctions })
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
  }

  async acquireConnection(): Promise<DatabaseConnection> {
    const cluster = this.#cluster
    if (this.#destroyed || cluster === null) throw new Error('driver has already been destroyed')
    let connection = this.#idle.pop()
    if (connection === undefined) {
      const created = new SplitConnection(cluster, this.#classifier, this.#options.cursor ?? null)
      if (this.#options.onCreateConnection !== undefined) {
        try {
          await this.#options.onCreateConnection(created)
        } catch (err) {
          created.release()
          throw err
        }
      }
      connection = created
    }
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
    const cluster = this.#cluster
    this.#cluster = null
    if (cluster !== null && this.#owns) await cluster.end()
  }
}
