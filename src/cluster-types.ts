import type pg from 'pg'
import type { ConsistencyMode } from './config.js'
import type { MonitorEvents } from './health/monitor.js'
import type { SourceSnapshot } from './health/topology-follower.js'
import type { NodeSnapshot } from './pools/node.js'

/** Where a statement runs: `'auto'` classifies its SQL. */
export type RouteRole = 'primary' | 'replica' | 'auto'

/** Per-call options, the last argument of `db.query(...)`. */
export interface QueryOptions {
  /** Force the primary or a replica; default `'auto'` (classify the SQL). */
  role?: RouteRole
  /** Overrides the cluster's and the scope's consistency for this call. */
  consistency?: ConsistencyMode
  /** Read-your-writes: a replica must have replayed this token (from `lastWriteToken()`). */
  after?: string
  /**
   * Aborting it cancels the statement on its server (`pg_cancel_backend`); with the reason
   * `'terminate'` (`controller.abort('terminate')`) it ends that session. An aborted read is
   * never retried elsewhere; an aborted write that was sent may have committed.
   */
  signal?: AbortSignal
}

export interface ConnectOptions {
  role?: 'primary' | 'replica'
}

export type IsolationLevel = 'read uncommitted' | 'read committed' | 'repeatable read' | 'serializable'

export interface TransactionOptions {
  isolationLevel?: IsolationLevel
  readOnly?: boolean
  deferrable?: boolean
  /**
   * Re-run `fn` on the new primary when pgsplit's own connection died before COMMIT was sent
   * (decided from the connection, never from the shape of an error `fn` threw).
   */
  retryOnFailover?: boolean
}

export interface SessionOptions {
  /** Consistency inside the session. Default `'causal'` (or the cluster's sticky mode). */
  consistency?: ConsistencyMode
  /** A token from an earlier request: reads in the session see that write too. */
  token?: string | null
}

/** What `db.topology()` returns. */
export interface TopologySnapshot {
  primary: string | null
  timeline: number | null
  /** True while the primary is lost and discovery polls for a new one. */
  searching: boolean
  nodes: NodeSnapshot[]
  /** The topology source (`patroni`, `nodes` as a function), or null. */
  source: SourceSnapshot | null
}

/** The events of a Cluster and their payloads. */
export interface ClusterEvents {
  /**
   * An idle client's connection failed (`pg.Pool`'s `'error'`: the error and the client, plus the
   * node's name). Never thrown when nobody listens.
   */
  error: [err: Error, client: pg.PoolClient | undefined, node: string]
  /** A new physical connection (`pg.Pool`'s `'connect'`), before any caller uses it. */
  connect: [client: pg.PoolClient, node: string]
  /** A client was checked out (`pg.Pool`'s `'acquire'`). */
  acquire: [client: pg.PoolClient, node: string]
  /** A client went back (`pg.Pool`'s `'release'`): `err` set when it is being destroyed. */
  release: [err: Error | undefined, client: pg.PoolClient, node: string]
  /** A client was closed and left its pool (`pg.Pool`'s `'remove'`). */
  remove: [client: pg.PoolClient, node: string]
  nodeDown: [{ node: string; reason: string }]
  nodeUp: [{ node: string }]
  replicaLagging: [{ node: string; lagBytes: number | null; lagMs: number | null }]
  replicaCaughtUp: [{ node: string; lagBytes: number | null; lagMs: number | null }]
  primaryLost: [{ node: string; reason: string }]
  failover: [{ from: string | null; to: string; durationMs: number }]
  splitBrain: [{ nodes: string[]; timelines: (number | null)[]; primary: string | null }]
  /** A read that a replica rejected with 25006 ran on the primary; its SQL is now known as a write. */
  reclassified: [{ node: string; sql: string }]
  /** A read failed on a node for a node reason and ran again elsewhere. */
  readRetried: [{ from: string; to: string; reason: string }]
  /** A replica replayed WAL the primary does not have (ahead of it, or on a newer timeline): no reads. */
  replicaDiverged: Parameters<MonitorEvents['replicaDiverged']>
  /** A node of another cluster (its `system_identifier` differs): no reads, no writes. */
  foreignNode: Parameters<MonitorEvents['foreignNode']>
  /** Two configured addresses reach the same server (a configuration mistake, not a split brain). */
  duplicateNode: Parameters<MonitorEvents['duplicateNode']>
  /** The topology source stopped answering (pgsplit falls back to its own discovery), answers again, or could not apply a change. */
  topologySource: [{ source: string; healthy: boolean; reason: string }]
}

/** Explicit routing: `db.primary` and `db.replica`. */
export interface RoleTarget {
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(
    text: string | pg.QueryConfig,
    values?: unknown[],
    options?: Omit<QueryOptions, 'role'>,
  ): Promise<pg.QueryResult<R>>
  connect(): Promise<pg.PoolClient>
}
