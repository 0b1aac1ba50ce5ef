import { EventEmitter } from 'node:events'
import pg from 'pg'
import type {
  ClusterEvents,
  ConnectOptions,
  QueryOptions,
  RoleTarget,
  SessionOptions,
  TopologySnapshot,
  TransactionOptions,
} from './cluster-types.js'
import { type ClusterConfig, type NodeInput, type PoolOptions, validateTimeout } from './config.js'
import { ClusterEndedError } from './errors.js'
import { ClusterCore } from './exec/cluster-core.js'
import { connectClient } from './exec/connect-path.js'
import type { ExecContext } from './exec/context.js'
import { dispatch, modeOf, submitRoute } from './exec/dispatch.js'
import { type InternalQueryOptions, STATEMENT_HANDLE, toStatement } from './exec/statement.js'
import { type Submittable, submit } from './exec/submit-path.js'
import { runTransaction } from './exec/transaction-path.js'
import type { NodeSnapshot } from './pools/node.js'
import { handleOfSignal, type StatementHandle } from './pools/statement-handle.js'
import type { Classification } from './router/classify.js'
import { currentScope, runInScope } from './router/consistency.js'

export type {
  ClusterEvents,
  ConnectOptions,
  IsolationLevel,
  QueryOptions,
  RoleTarget,
  RouteRole,
  SessionOptions,
  TopologySnapshot,
  TransactionOptions,
} from './cluster-types.js'

type Callback<T> = (err: Error | undefined, result?: T) => void
type QueryText = string | pg.QueryConfig
type QueryArg = unknown[] | QueryOptions | Callback<pg.QueryResult> | undefined
type ConnectCallback = (err: Error | undefined, client?: pg.PoolClient, done?: (err?: Error) => void) => void

function isSubmittable(value: unknown): value is Submittable {
  return typeof value === 'object' && value !== null && typeof (value as Submittable).submit === 'function'
}

/**
 * One client over a streaming-replication cluster: writes to the primary, reads to healthy
 * replicas within the lag bound, the new primary found after a promotion, read-your-writes on
 * demand. Keeps `pg.Pool`'s `query`, `connect`, `end`, events and counters, so code written
 * for a pool takes a Cluster. Every statement path is a module of `exec/`; this class is the
 * `pg.Pool` facade and the lifecycle.
 *
 * ```ts
 * const db = createCluster({ primary: process.env.PRIMARY_URL, replicas: [process.env.REPLICA_URL] })
 * await db.ready()
 * await db.query('INSERT INTO t (name) VALUES ($1)', ['x']) // primary
 * const { rows } = await db.query('SELECT * FROM t')       // a replica
 * await db.end()
 * ```
 */
export class Cluster extends EventEmitter<ClusterEvents> {
  readonly #parts: ClusterCore
  readonly #ctx: ExecContext
  #ending: Promise<void> | null = null
  #drained = false

  /** Forced to the primary: `db.primary.query(...)`, `db.primary.connect()`. */
  readonly primary: RoleTarget
  /** Forced to a healthy replica (or `onNoReplica`). */
  readonly replica: RoleTarget

  constructor(config: ClusterConfig) {
    super()
    this.#parts = new ClusterCore(config, this)
    this.#ctx = this.#parts.context
    this.primary = this.#roleTarget('primary')
    this.replica = this.#roleTarget('replica')
  }

  /**
   * Resolves after the first discovery and probe round, once a primary is known. Rejects with
   * {@link NoPrimaryError} if none is found within `timeoutMs` (default `failover.timeoutMs`);
   * the cluster keeps looking in the background either way.
   */
  ready(options: { timeoutMs?: number } = {}): Promise<void> {
    if (this.#ctx.state.ended) return Promise.reject(new ClusterEndedError('ready()'))
    let timeoutMs: number
    try {
      // A timer holds at most 2^31-1 ms: a longer bound would reject after 1 ms.
      timeoutMs = validateTimeout('ready().timeoutMs', options.timeoutMs, this.#ctx.config.failover.timeoutMs)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#parts.ready(timeoutMs)
  }

  /**
   * `pg.Pool#query`: promise and callback forms, same results and errors; a Submittable is
   * returned as given. Reads go to a replica, writes to the primary; the last argument may be
   * {@link QueryOptions}.
   */
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(
    text: QueryText,
    values?: unknown[],
    options?: QueryOptions,
  ): Promise<pg.QueryResult<R>>
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(
    text: QueryText,
    options?: QueryOptions,
  ): Promise<pg.QueryResult<R>>
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(
    text: QueryText,
    callback: Callback<pg.QueryResult<R>>,
  ): void
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(
    text: QueryText,
    values: unknown[] | undefined,
    callback: Callback<pg.QueryResult<R>>,
  ): void
  query<T extends pg.Submittable>(submittable: T, options?: QueryOptions): T
  query(text: QueryText | pg.Submittable, a?: QueryArg, b?: QueryArg, c?: QueryArg): unknown {
    let values: unknown[] | undefined
    let options: QueryOptions | undefined
    let callback: Callback<pg.QueryResult> | undefined
    // Unrolled, no array: this runs for every query.
    for (let i = 0; i < 3; i++) {
      const arg = i === 0 ? a : i === 1 ? b : c
      if (arg === undefined || arg === null) continue
      if (Array.isArray(arg)) values = arg
      else if (typeof arg === 'function') callback = arg
      else if (typeof arg === 'object') options = arg
    }
    if (isSubmittable(text)) {
      const sql = typeof text.text === 'string' ? text.text : ''
      return submit(this.#ctx, text, submitRoute(this.#ctx, sql, options))
    }
    const promise = this.#query(text as QueryText, values, options)
    if (callback === undefined) return promise
    const cb = callback
    promise.then(
      (result) => cb(undefined, result),
      (err: Error) => cb(err),
    )
    return undefined
  }

  /** Not async on purpose: an eventual read is one checkout and one query, no extra frame. */
  #query(
    text: QueryText,
    values: unknown[] | undefined,
    options: QueryOptions | undefined,
  ): Promise<pg.QueryResult> {
    const own = (options as InternalQueryOptions | undefined)?.[STATEMENT_HANDLE]
    const signal = options?.signal
    if (own !== undefined || signal === undefined) return this.#send(text, values, options, own)
    if (typeof (signal as { addEventListener?: unknown }).addEventListener !== 'function') {
      return Promise.reject(new TypeError('db.query: options.signal must be an AbortSignal'))
    }
    const { handle, dispose } = handleOfSignal(signal)
    const promise = this.#send(text, values, options, handle)
    promise.then(dispose, dispose)
    return promise
  }

  #send(
    text: QueryText,
    values: unknown[] | undefined,
    options: QueryOptions | undefined,
    handle: StatementHandle | undefined,
  ): Promise<pg.QueryResult> {
    const state = this.#ctx.state
    if (state.ended) return Promise.reject(new ClusterEndedError('query'))
    const statement = toStatement(text, values, handle)
    if (statement === null) {
      return Promise.reject(
        new TypeError('db.query: expected SQL text, a QueryConfig with .text, or a Submittable'),
      )
    }
    if (!state.initialized) {
      const scope = currentScope()
      return state.initial
        .catch(() => undefined)
        .then(() => runInScope(scope ?? {}, () => dispatch(this.#ctx, statement, options)))
    }
    return dispatch(this.#ctx, statement, options)
  }

  /**
   * A pinned `pg.PoolClient`: on the primary (default) or a healthy replica. Release it with
   * `client.release()` as with `pg.Pool`.
   */
  connect(options?: ConnectOptions): Promise<pg.PoolClient>
  connect(callback: ConnectCallback): void
  connect(arg?: ConnectOptions | ConnectCallback): Promise<pg.PoolClient> | undefined {
    const options = typeof arg === 'object' ? arg : undefined
    const scope = currentScope()
    const promise = connectClient(
      this.#ctx,
      options?.role ?? 'primary',
      modeOf(this.#ctx, undefined, scope),
      scope,
    )
    if (typeof arg !== 'function') return promise
    promise.then(
      (client) => arg(undefined, client, (err?: Error) => client.release(err)),
      (err: Error) => arg(err),
    )
    return undefined
  }

  /**
   * Runs `fn` in a transaction on the primary: BEGIN, COMMIT, ROLLBACK when `fn` throws, and
   * the client released in every case.
   *
   * ```ts
   * const id = await db.transaction(async (tx) => {
   *   const { rows } = await tx.query('INSERT INTO orders (total) VALUES ($1) RETURNING id', [10])
   *   await tx.query('INSERT INTO order_lines (order_id) VALUES ($1)', [rows[0].id])
   *   return rows[0].id
   * })
   * ```
   */
  async transaction<T>(
    fn: (client: pg.PoolClient) => Promise<T>,
    options: TransactionOptions = {},
  ): Promise<T> {
    const state = this.#ctx.state
    if (state.ended) throw new ClusterEndedError('transaction()')
    if (!state.initialized) await state.initial.catch(() => undefined)
    const scope = currentScope()
    return runTransaction(this.#ctx, fn, options, modeOf(this.#ctx, undefined, scope), scope)
  }

  /**
   * Everything inside `fn`, including nested library calls, runs on the primary.
   *
   * ```ts
   * await db.onPrimary(async () => { await service.loadAfterPayment(id) })
   * ```
   */
  onPrimary<T>(fn: () => T): T {
    return runInScope({ forcePrimary: true }, fn)
  }

  /**
   * A read-your-writes scope: reads inside `fn` see the writes made inside it (causal by
   * default), and those of `options.token` (from an earlier request or another instance).
   *
   * ```ts
   * await db.session(async () => {
   *   await db.query('INSERT INTO t (id) VALUES (1)')
   *   await db.query('SELECT * FROM t WHERE id = 1') // sees the row, on a replica if one has it
   * })
   * ```
   */
  session<T>(fn: () => T, options: SessionOptions = {}): T {
    return this.#parts.session(fn, options)
  }

  /**
   * The token of the latest write in the current scope (or of this process outside any scope),
   * as a short string to hand to a client; `undefined` before any write.
   */
  lastWriteToken(): Promise<string | undefined> {
    return this.#parts.lastWriteToken()
  }

  /**
   * Checks a token from outside (a client, another instance): its syntax, its signature when
   * `tokens.secrets` is set, and that the primary has reached it. Resolves with its canonical
   * text; rejects with `InvalidTokenError` (`TokenAheadError` when past the primary).
   *
   * ```ts
   * const token = await db.verifyToken(req.headers['x-pgsplit-lsn'])
   * ```
   */
  async verifyToken(token: string): Promise<string> {
    const tokens = this.#ctx.tokens
    return tokens.format(await tokens.admit(token))
  }

  /** The cluster as pgsplit sees it now. Plain data, no passwords. */
  topology(): TopologySnapshot {
    return this.#parts.snapshot()
  }

  /** Adds a node at run time; its role is found by a probe. Resolves with its snapshot. */
  addNode(input: NodeInput): Promise<NodeSnapshot> {
    if (this.#ctx.state.ended) return Promise.reject(new ClusterEndedError('addNode()'))
    return this.#parts.addNode(input)
  }

  /** Removes a node (never the primary); its pool is drained. */
  removeNode(name: string): Promise<void> {
    if (this.#ctx.state.ended) return Promise.reject(new ClusterEndedError('removeNode()'))
    return this.#parts.removeNode(name)
  }

  /** How pgsplit classifies `sql` (read or write, and why), from the cluster's one cache. */
  classify(sql: string): Classification {
    return this.#ctx.classifier.classify(sql)
  }

  /**
   * Runs `hook` on every new physical connection of every node, awaited before the connection is
   * first used (pg-pool's `onConnect`); returns a function that removes it.
   */
  addConnectHook(hook: (client: pg.PoolClient, node: string) => Promise<void> | void): () => void {
    return this.#parts.addConnectHook(hook)
  }

  /** The pool options every node's pool was made with (`pg.Pool#options`, no password). */
  get options(): Readonly<PoolOptions> {
    return this.#parts.poolOptions
  }

  /** Sum over every node's pool, as `pg.Pool#totalCount`. */
  get totalCount(): number {
    return this.#parts.sum((p) => p.totalCount)
  }

  get idleCount(): number {
    return this.#parts.sum((p) => p.idleCount)
  }
  get waitingCount(): number {
    return this.#parts.sum((p) => p.waitingCount)
  }
  get expiredCount(): number {
    return this.#parts.sum((p) => p.expiredCount)
  }

  /** True from the `end()` call on (`pg.Pool#ending`). */
  get ending(): boolean {
    return this.#ctx.state.ended
  }

  /** True once `end()` has drained every pool (`pg.Pool#ended`). */
  get ended(): boolean {
    return this.#drained
  }

  /**
   * Stops the monitor and ends every pool: statements in flight finish with their result,
   * callers still waiting for a client get {@link ClusterEndedError} at once.
   */
  end(): Promise<void>
  end(callback: (err?: Error) => void): void
  end(callback?: (err?: Error) => void): Promise<void> | undefined {
    if (this.#ending === null) {
      this.#ending = this.#parts.end().then(() => {
        this.#drained = true
      })
    }
    if (callback === undefined) return this.#ending
    this.#ending.then(() => callback(), callback)
    return undefined
  }

  #roleTarget(role: 'primary' | 'replica'): RoleTarget {
    return {
      query: (text: QueryText, values?: unknown[], options?: Omit<QueryOptions, 'role'>) =>
        this.query(text, values, { ...options, role }),
      connect: () => this.connect({ role }),
    } as RoleTarget
  }
}

// Libraries that take a pg.Pool test what they were given (`instanceof pg.Pool`: Prisma's
// adapter-pg, Drizzle's node-postgres driver) and treat anything else as a config or a single
// client. A Cluster is a pool of pools: it answers yes. No pg.Pool constructor ever runs for it
// and every pg.Pool method a caller can use is the Cluster's own.
Object.setPrototypeOf(Cluster.prototype, pg.Pool.prototype)

/**
 * Creates a {@link Cluster}. Validates the config at once (a {@link ConfigError} names the bad
 * field) and starts discovery in the background; `await db.ready()` to wait for it.
 */
export function createCluster(config: ClusterConfig): Cluster {
  return new Cluster(config)
}
