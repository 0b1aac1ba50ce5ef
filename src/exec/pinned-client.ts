import type pg from 'pg'
import type { ConsistencyMode } from '../config.js'
import type { Lease } from '../pools/lease.js'
import type { Scope } from '../router/consistency.js'
import { recordWrite } from './causal.js'
import type { ExecContext } from './context.js'

/** What ran on a pinned client: whether it wrote, and whether it changed the schema. */
export interface StatementTracker {
  wrote: boolean
  schemaChange: boolean
  /** Puts the client's own `query` back (before it returns to its pool). */
  restore(): void
}

/**
 * Watches the statements sent on a client handed to the caller (`connect()`, `transaction()`),
 * classifying each text through the cluster's one classifier cache, so that a write or a schema
 * change made there is recorded like one made through `db.query`.
 */
export function trackStatements(ctx: ExecContext, client: pg.PoolClient): StatementTracker {
  const own = Object.hasOwn(client, 'query') ? client.query : undefined
  const query = client.query
  const tracker: StatementTracker = {
    wrote: false,
    schemaChange: false,
    restore() {
      if (own === undefined) delete (client as { query?: unknown }).query
      else client.query = own
    },
  }
  client.query = function (this: pg.PoolClient, ...args: unknown[]) {
    const first = args[0] as { text?: unknown } | string | undefined
    const text = typeof first === 'string' ? first : typeof first?.text === 'string' ? first.text : ''
    const classification = ctx.classifier.classify(text)
    if (classification.kind === 'write') tracker.wrote = true
    if (classification.schemaChange === true) tracker.schemaChange = true
    if (typeof (first as { submit?: unknown } | undefined)?.submit !== 'function') {
      return (query as (...a: unknown[]) => unknown).apply(this, args)
    }
    // A cursor or stream: no pg query_timeout timer (it would outlive the cursor by 60 s and
    // cut a slow reader); it runs as long as its caller reads.
    const parameters = (client as unknown as { connectionParameters: { query_timeout?: number } })
      .connectionParameters
    const saved = parameters.query_timeout
    parameters.query_timeout = 0
    try {
      return (query as (...a: unknown[]) => unknown).apply(this, args)
    } finally {
      parameters.query_timeout = saved
    }
  } as pg.PoolClient['query']
  return tracker
}

/**
 * A leased client for the caller: `client.release(err?)` goes through the lease's release rule
 * and records what the client wrote (token or sticky window; the schema barrier).
 */
export function pinnedClient(
  ctx: ExecContext,
  lease: Lease,
  mode: ConsistencyMode,
  scope: Scope | undefined,
): pg.PoolClient {
  const client = lease.client
  const poolRelease = client.release
  const tracker = trackStatements(ctx, client)
  client.release = ((err?: Error | boolean) => {
    tracker.restore()
    client.release = poolRelease
    const failure = err === true ? new Error('released with an error') : err || undefined
    // pg-pool's contract: release(err) destroys the client, whatever the error.
    if (failure !== undefined) lease.lost = true
    lease.release(failure)
    if (failure === undefined && tracker.wrote) {
      recordWrite(ctx, lease.node, mode, scope, tracker.schemaChange)
    }
  }) as pg.PoolClient['release']
  return client
}
