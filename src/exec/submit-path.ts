import pg from 'pg'
import type { ConsistencyMode } from '../config.js'
import { ClusterEndedError, NoReplicaAvailableError, TransactionStatementError } from '../errors.js'
import { acquireLease, type Lease } from '../pools/lease.js'
import { outcomeOf } from '../pools/outcome.js'
import type { Scope } from '../router/consistency.js'
import { readRequirement, recordWrite } from './causal.js'
import type { ExecContext } from './context.js'
import { acquirePrimaryLease } from './primary-path.js'

/** What pg calls on a Submittable (pg.Query, pg-cursor, pg-query-stream, ...). */
export interface Submittable {
  submit(connection: unknown): void
  text?: string
  callback?: unknown
  handleError?(err: Error, connection?: unknown): void
  handleReadyForQuery?(connection?: unknown): void
}

export interface SubmitRoute {
  /** Runs on the primary (a write, or forced there). */
  readonly toPrimary: boolean
  /** It may write: its success records a write (token, sticky window). */
  readonly writes: boolean
  /** pgsplit chose the route: a 25006 on a replica sends it to the primary. */
  readonly auto: boolean
  readonly schemaChange: boolean
  /** `BEGIN; ...; COMMIT`: after an error its session is never reused. */
  readonly transactionString: boolean
  readonly mode: ConsistencyMode
  readonly scope: Scope | undefined
}

/** The first word of a statement, for error messages. */
export function firstWord(sql: string): string {
  return (sql.replace(/^(\s|--[^\n]*\n|\/\*[\s\S]*?\*\/)+/, '').split(/[\s;(]/)[0] ?? sql).toUpperCase()
}

/**
 * How a Submittable (`db.query(new pg.Query(...))`, a cursor, a stream) runs: the route,
 * consistency, counters and transaction check of `db.query`, and a client that always comes back,
 * whatever the Submittable's options. pg's `query_timeout` timer is not armed for it (pg would
 * replace its completion callback and swallow its 'error' event, and a cursor's timer outlives the
 * cursor); a `pg.Query` gets pgsplit's own bound instead, a cursor runs as long as its caller reads.
 */
export function submit<T extends Submittable>(ctx: ExecContext, submittable: T, route: SubmitRoute): T {
  const text = typeof submittable.text === 'string' ? submittable.text : ''
  const classification = ctx.classifier.classify(text)
  if (classification.transactionControl !== undefined && classification.balanced !== true) {
    fail(submittable, new TransactionStatementError(firstWord(text)))
    return submittable
  }
  void start(ctx, submittable, route).catch((err: unknown) => fail(submittable, err as Error))
  return submittable
}

async function start(ctx: ExecContext, submittable: Submittable, route: SubmitRoute): Promise<void> {
  if (!ctx.state.initialized) await ctx.state.initial.catch(() => undefined)
  if (ctx.state.ended) throw new ClusterEndedError('query')
  const deadline = Date.now() + ctx.config.failover.timeoutMs
  if (route.toPrimary) {
    attach(ctx, await acquirePrimaryLease(ctx, deadline), submittable, route)
    return
  }
  const requirement = await readRequirement(ctx, route.mode, route.scope, undefined)
  const token = requirement === 'primary' ? null : requirement
  let excluded = null
  for (let attempt = 0; requirement !== 'primary' && attempt < 2; attempt++) {
    const node = ctx.router.pick(excluded, token)
    if (node === null) break
    try {
      attach(ctx, await acquireLease(node), submittable, route)
      return
    } catch (err) {
      if (outcomeOf(err, 'connect') === 'exhausted') throw err
      ctx.monitor.markSuspect(node)
      excluded = node
    }
  }
  if (requirement !== 'primary' && token === null && ctx.config.onNoReplica === 'error') {
    throw new NoReplicaAvailableError("no replica is up and within maxLag (onNoReplica: 'error')")
  }
  attach(ctx, await acquirePrimaryLease(ctx, deadline), submittable, route)
}

/** Reports an error to a Submittable that never ran (pg's own path for a failed submit). */
function fail(submittable: Submittable, err: Error): void {
  try {
    submittable.handleError?.(err, undefined)
  } catch {
    // A Submittable that cannot take an error before it was submitted: nothing more to tell it.
  }
}

function attach(ctx: ExecContext, lease: Lease, submittable: Submittable, route: SubmitRoute): void {
  const node = lease.node
  const client = lease.client
  const ownReady = submittable.handleReadyForQuery
  const ownError = submittable.handleError
  let finished = false
  let failed = false
  let resubmit = false
  let timer: NodeJS.Timeout | undefined
  const finish = (err?: Error) => {
    if (finished) return
    finished = true
    clearTimeout(timer)
    submittable.handleReadyForQuery = ownReady
    submittable.handleError = ownError
    lease.release(err)
    if (resubmit) {
      ctx.classifier.markWrite(submittable.text ?? '', 'rejected by a replica (25006)')
      ctx.emit('reclassified', { node: node.name, sql: submittable.text ?? '' })
      const again = { ...route, toPrimary: true, writes: true }
      void acquirePrimaryLease(ctx, Date.now() + ctx.config.failover.timeoutMs).then(
        (primary) => attach(ctx, primary, submittable, again),
        (e: unknown) => fail(submittable, e as Error),
      )
      return
    }
    if (err === undefined && !failed && route.writes) {
      recordWrite(ctx, node, route.mode, route.scope, route.schemaChange)
    }
  }
  submittable.handleReadyForQuery = function (this: Submittable, connection?: unknown) {
    if (!resubmit) ownReady?.call(this, connection)
    finish()
  }
  submittable.handleError = function (this: Submittable, err: Error, connection?: unknown) {
    const outcome = outcomeOf(err, 'query', client, node.role === 'replica')
    node.errors++
    failed = true
    if (route.transactionString) lease.lost = true
    if (outcome === 'read-only' && route.auto && !route.toPrimary) {
      // The "read" did not run; it runs on the primary (pg drops an errored query as the active
      // one: no ReadyForQuery reaches it, so settle on the next turn).
      resubmit = true
      setImmediate(() => finish())
      return
    }
    try {
      ownError?.call(this, err, connection)
    } finally {
      if (outcome === 'outcome-unknown' || outcome === 'not-sent' || outcome === 'timeout') {
        lease.lost = true
        finish(err)
      } else {
        // An error before anything was sent (bad values) gets no ReadyForQuery: settle on the next turn.
        setImmediate(() => {
          if (!finished && (client as unknown as { activeQuery?: unknown }).activeQuery !== submittable)
            finish()
        })
      }
    }
  }
  node.queries++
  if ((submittable as unknown) instanceof pg.Query) {
    const ms = (node.pool.options as { query_timeout?: number }).query_timeout
    if (typeof ms === 'number' && ms > 0) {
      timer = setTimeout(() => {
        const pid = (client as unknown as { processID?: number }).processID
        if (typeof pid === 'number') node.signalBackend(pid, 'terminate')
        try {
          submittable.handleError?.(new Error('Query read timeout'), undefined)
        } catch {
          // No 'error' listener on the Query: the lease is released all the same (finally above).
        }
      }, ms)
      timer.unref()
    }
  }
  const parameters = (client as unknown as { connectionParameters: { query_timeout?: number } })
    .connectionParameters
  const saved = parameters.query_timeout
  parameters.query_timeout = 0 // read synchronously by client.query: no pg timer for this one
  try {
    client.query(submittable as unknown as pg.Submittable)
  } finally {
    parameters.query_timeout = saved
  }
}
