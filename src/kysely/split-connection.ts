import type {
  CompiledQuery,
  DatabaseConnection,
  PostgresCursor,
  PostgresCursorConstructor,
  QueryResult,
} from 'kysely'

import type pg from 'pg'
import { type InternalQueryOptions, STATEMENT_HANDLE } from '../exec/statement.js'
import type { QueryOptions } from '../index.js'
import { StatementHandle } from '../pools/statement-handle.js'
import { isForcedToPrimary } from './primary.js'
import { type QueryRoute, routeQuery, type SqlClassifierCache } from './query-routing.js'

/** What a connection needs of a Cluster: its public `query` and `connect` (structural, see SplitCluster). */
export interface ConnectionCluster {
  query(text: pg.QueryConfig, options?: QueryOptions): Promise<pg.QueryResult>
  query<T extends CursorSubmittable>(submittable: T, options?: QueryOptions): T
  connect(options?: { role?: 'primary' | 'replica' }): Promise<pg.PoolClient>
}

/** A pg-cursor as pg sees it: a Submittable. */
export interface CursorSubmittable {
  submit: (connection: unknown) => void
}

type Cursor<R> = PostgresCursor<R> & CursorSubmittable

const ROW_COUNT_COMMANDS = new Set(['INSERT', 'UPDATE', 'DELETE', 'MERGE'])

function toQueryResult<R>(result: pg.QueryResult): QueryResult<R> {
  // A multi-statement text answers an array; PostgresDriver reads it the same way (no rows).
  const { command, rowCount, rows } = result as Partial<pg.QueryResult>
  return {
    numAffectedRows:
      command !== undefined && ROW_COUNT_COMMANDS.has(command) ? BigInt(rowCount ?? 0) : undefined,
    rows: (rows ?? []) as R[],
  }
}

/** Adds the caller's stack to a driver error, as Kysely's PostgresConnection does; the error stays the same object. */
function withCallerStack(err: unknown, caller: Error): unknown {
  if (err instanceof Error && typeof err.stack === 'string' && typeof caller.stack === 'string') {
    const callerFrames = caller.stack.split('\n').slice(1).join('\n')
    err.stack += `\n${callerFrames}`
  }
  return err
}

/**
 * A Kysely connection over a Cluster that binds lazily.
 *
 * - Unbound (the state it is handed out in): it holds no pg client. Each read runs on its own
 *   through `cluster.query()`, so a read-only request never touches the primary, and replicas,
 *   lag bounds, causal tokens and `onPrimary` scopes apply per statement.
 * - Pinned: the first statement that writes, holds session state or controls a transaction
 *   (INSERT/UPDATE/DELETE/MERGE, DDL, `SELECT ... FOR UPDATE`, a writing CTE, raw SQL the
 *   classifier calls a write: `SET`, `CREATE TEMP TABLE`, `pg_advisory_lock`, `BEGIN`, ...)
 *   takes one primary client with `cluster.connect()`. That statement and every later one of this
 *   connection run on it until Kysely releases the connection. Transactions, savepoints,
 *   `db.connection()` with temp tables or `SET` therefore see one session, as with PostgresDialect.
 */
export class SplitConnection implements DatabaseConnection {
  readonly #cluster: ConnectionCluster
  readonly #classifier: SqlClassifierCache
  readonly #cursor: PostgresCursorConstructor | null
  #client: pg.PoolClient | null = null
  #pinning: Promise<pg.PoolClient> | null = null
  #inTransaction = false
  /** Aborts the unpinned statement in flight (Kysely's cancel query / kill session). */
  /** Stops the unpinned query in flight (cancelQuery / killSession). */
  readonly #handle = new StatementHandle()

  constructor(
    cluster: ConnectionCluster,
    classifier: SqlClassifierCache,
    cursor: PostgresCursorConstructor | null,
  ) {
    this.#cluster = cluster
    this.#classifier = classifier
    this.#cursor = cursor
  }

  /** True while the connection holds a primary client (until release). */
  get pinned(): boolean {
    return this.#client !== null
  }

  async executeQuery<R>(compiledQuery: CompiledQuery): Promise<QueryResult<R>> {
    try {
      const route = routeQuery(compiledQuery, this.#classifier)
      const config: pg.QueryConfig = { text: compiledQuery.sql, values: [...compiledQuery.parameters] }
      if (this.#client === null && !route.pin) {
        // One reusable handle: Kysely runs one query at a time per connection.
        const handle = this.#handle
        handle.reset()
        const options: InternalQueryOptions = isForcedToPrimary(compiledQuery.queryId, compiledQuery.query)
          ? { role: 'primary', [STATEMENT_HANDLE]: handle }
          : { [STATEMENT_HANDLE]: handle }
        return toQueryResult<R>(await this.#cluster.query(config, options))
      }
      const client = this.#client ?? (await this.#pin())
      let result: pg.QueryResult
      try {
        result = await client.query(config)
      } catch (err) {
        this.#track(route, false)
        throw err
      }
      this.#track(route, true)
      return toQueryResult<R>(result)
    } catch (err) {
      // As PostgresConnection: V8's async stack of a new Error names the caller's await chain.
      throw withCallerStack(err, new Error())
    }
  }

  async *streamQuery<R>(
    compiledQuery: CompiledQuery,
    chunkSize?: number,
  ): AsyncIterableIterator<QueryResult<R>> {
    const Cursor = this.#cursor
    if (Cursor === null) {
      throw new Error(
        "'cursor' is not present in your SplitDialect config. It's required to make streaming work in postgres.",
      )
    }
    if (!Number.isInteger(chunkSize) || chunkSize === undefined || chunkSize <= 0) {
      throw new Error('chunkSize must be a positive integer')
    }
    const route = routeQuery(compiledQuery, this.#classifier)
    const created = new Cursor<R>(compiledQuery.sql, compiledQuery.parameters.slice()) as Cursor<R>
    let cursor: Cursor<R>
    if (this.#client === null && !route.pin) {
      // Through the cluster: it checks out a replica client (or the primary when forced or none
      // is healthy), submits the cursor, and releases the client when the cursor ends or closes.
      const options: QueryOptions | undefined = isForcedToPrimary(compiledQuery.queryId, compiledQuery.query)
        ? { role: 'primary' }
        : undefined
      cursor = this.#cluster.query(created, options)
    } else {
      const client = this.#client ?? (await this.#pin())
      cursor = client.query(created as unknown as pg.Submittable) as unknown as Cursor<R>
    }
    try {
      while (true) {
        const rows = await cursor.read(chunkSize)
        if (rows.length === 0) break
        yield { rows }
      }
    } finally {
      await cursor.close()
    }
  }

  /** Kysely 0.29's `inflightQueryAbortStrategy: 'cancel query'`: cancels the statement in flight. */
  async cancelQuery(): Promise<void> {
    await this.#signal('cancel')
  }

  /** Kysely 0.29's `inflightQueryAbortStrategy: 'kill session'`: ends the session in flight. */
  async killSession(): Promise<void> {
    await this.#signal('terminate')
  }

  async #signal(how: 'cancel' | 'terminate'): Promise<void> {
    const client = this.#client
    if (client === null) {
      // Unpinned: the cluster knows which backend runs it and signals it on that node.
      this.#handle.abort(how)
      return
    }
    // Pinned: a primary client whose backend pid is known.
    const pid = (client as unknown as { processID?: number }).processID
    if (typeof pid !== 'number') return
    const fn = how === 'terminate' ? 'pg_terminate_backend' : 'pg_cancel_backend'
    await this.#cluster.query({ text: `SELECT ${fn}($1)`, values: [pid] }, { role: 'primary' })
  }

  async #pin(): Promise<pg.PoolClient> {
    if (this.#pinning === null) {
      this.#pinning = this.#cluster.connect({ role: 'primary' }).then(
        (client) => {
          this.#client = client
          return client
        },
        (err: unknown) => {
          this.#pinning = null
          throw err
        },
      )
    }
    return this.#pinning
  }

  #track(route: QueryRoute, succeeded: boolean): void {
    switch (route.transactionControl) {
      case 'begin':
        if (succeeded) this.#inTransaction = true
        break
      case 'commit':
      case 'rollback':
        // Whether it succeeded or failed, the transaction block is over.
        this.#inTransaction = false
        break
    }
  }

  /**
   * Gives the pinned client (if any) back to its pool and returns to the unbound state. A client
   * released in the middle of a transaction (a `BEGIN` without `COMMIT`/`ROLLBACK`) is closed, so that
   * the server rolls the transaction back and no other caller inherits it.
   */
  release(): void {
    const client = this.#client
    const inTransaction = this.#inTransaction
    this.#client = null
    this.#pinning = null
    this.#inTransaction = false
    if (client === null) return
    client.release(
      inTransaction ? new Error('pgsplit/kysely: connection released inside a transaction') : undefined,
    )
  }
}

/**
 * A physical pg client as a Kysely connection, for `onCreateConnection`: its statements run on
 * that client, whatever node it belongs to (session settings for every connection).
 */
export class PhysicalConnection implements DatabaseConnection {
  readonly #client: pg.PoolClient

  constructor(client: pg.PoolClient) {
    this.#client = client
  }

  async executeQuery<R>(compiledQuery: CompiledQuery): Promise<QueryResult<R>> {
    return toQueryResult<R>(await this.#client.query(compiledQuery.sql, [...compiledQuery.parameters]))
  }

  // biome-ignore lint/correctness/useYield: a connection being set up streams nothing
  async *streamQuery<R>(): AsyncIterableIterator<QueryResult<R>> {
    throw new Error('pgsplit/kysely: streaming is not available inside onCreateConnection')
  }
}
