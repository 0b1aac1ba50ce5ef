import type pg from 'pg'
import type { ConsistencyMode } from '../config.js'
import { ClusterEndedError, NoReplicaAvailableError, PoolExhaustedError } from '../errors.js'
import { describeError } from '../health/probe.js'
import { acquire, runStatement, type Statement } from '../pools/lease.js'
import type { ClusterNode } from '../pools/node.js'
import { type Outcome, outcomeOf } from '../pools/outcome.js'
import type { Scope, WriteToken } from '../router/consistency.js'
import { readRequirement, recordWrite } from './causal.js'
import type { ExecContext } from './context.js'
import { runOnPrimary } from './primary-path.js'

/**
 * How a read is routed and retried.
 *
 * - A replica the router calls eligible takes it (for a causal read: one that has replayed the
 *   caller's token, else a bounded wait on the freshest replica, else the primary).
 * - A node failure (no connection, 53300, connection lost, recovery conflict) marks the replica
 *   suspect (not for a recovery conflict) and runs the read once more on another replica, or on
 *   the primary when `onNoReplica` is `'primary'` or the read needs a token.
 * - A 25006 answer means the "read" was a write: it runs on the primary and its SQL is
 *   remembered as a write (only when pgsplit chose the route).
 * - The client-side `query_timeout` is the caller's answer: no retry, no suspect mark; the
 *   server-side backend is terminated by the lease so the statement stops using the replica.
 * - Reads on the primary take the write path's failover handling: a read is safe to send again.
 */
export interface ReadRequest {
  readonly statement: Statement
  /** pgsplit chose the route (not a forced `role: 'replica'`): 25006 may be corrected. */
  readonly auto: boolean
  readonly mode: ConsistencyMode
  readonly scope: Scope | undefined
}

/** An eventual read with nothing to wait for: one checkout, one query, no async frame. */
export function readEventual(ctx: ExecContext, request: ReadRequest): Promise<pg.QueryResult> {
  const node = ctx.router.pick()
  if (node === null) return noReplica(ctx, request, 'no replica is up and within maxLag')
  return new Promise((resolve, reject) => runRead(ctx, request, node, null, true, resolve, reject))
}

/** A read that may have to wait: causal tokens, sticky windows, `after:`, the schema barrier. */
export async function readWithRequirement(
  ctx: ExecContext,
  request: ReadRequest,
  after: string | undefined,
): Promise<pg.QueryResult> {
  const requirement = await readRequirement(ctx, request.mode, request.scope, after)
  if (requirement === 'primary') return readOnPrimary(ctx, request.statement)
  if (requirement === null) return readEventual(ctx, request)
  const node = ctx.router.pick(null, requirement)
  if (node === null) return causalWait(ctx, request, requirement)
  return new Promise((resolve, reject) => runRead(ctx, request, node, requirement, true, resolve, reject))
}

/** A read on the primary of the moment, waiting through a failover, sent again if lost. */
export async function readOnPrimary(ctx: ExecContext, statement: Statement): Promise<pg.QueryResult> {
  return (await runOnPrimary(ctx, statement, false)).result
}

function runRead(
  ctx: ExecContext,
  request: ReadRequest,
  node: ClusterNode,
  token: WriteToken | null,
  mayRetry: boolean,
  resolve: (result: pg.QueryResult) => void,
  reject: (err: unknown) => void,
): void {
  // Callbacks, not promises: this is every read's hot path (see bench/overhead.ts).
  acquire(node, (connectError, lease) => {
    if (connectError !== null) {
      node.errors++
      readFailed(ctx, request, node, token, connectError, outcomeOf(connectError, 'connect'), mayRetry).then(
        resolve,
        reject,
      )
      return
    }
    const l = lease!
    runStatement(l, request.statement, (err, result, outcome) => {
      l.release(err ?? undefined)
      if (err === null) resolve(result!)
      else readFailed(ctx, request, node, token, err, outcome!, mayRetry).then(resolve, reject)
    })
  })
}

async function readFailed(
  ctx: ExecContext,
  request: ReadRequest,
  node: ClusterNode,
  token: WriteToken | null,
  err: Error,
  outcome: Outcome,
  mayRetry: boolean,
): Promise<pg.QueryResult> {
  if (ctx.state.ended) throw err instanceof ClusterEndedError ? err : new ClusterEndedError('query')
  // The caller aborted it: its answer, never a reason to run it elsewhere.
  if (request.statement.handle?.aborted === true) throw err
  switch (outcome) {
    case 'read-only':
      if (!request.auto) throw err
      // A "read" the replica refused as a write did not run: it is a write, remembered as one.
      ctx.classifier.markWrite(request.statement.text, 'rejected by a replica (25006)')
      ctx.emit('reclassified', { node: node.name, sql: request.statement.text })
      return runAsWrite(ctx, request)
    case 'exhausted':
      throw new PoolExhaustedError(node.name, node.connectTimeoutMs, { cause: err })
    case 'timeout':
    case 'sql':
      throw err
    case 'not-sent':
      // The pool was replaced under the caller: nothing ran, route again (not a failure).
      if (!mayRetry) throw err
      return retryElsewhere(ctx, request, node, token, err, true)
    default:
      if (outcome !== 'recovery-conflict') ctx.monitor.markSuspect(node)
      node.retries++
      if (!mayRetry) throw err
      return retryElsewhere(ctx, request, node, token, err, false)
  }
}

async function retryElsewhere(
  ctx: ExecContext,
  request: ReadRequest,
  failed: ClusterNode,
  token: WriteToken | null,
  err: Error,
  sameNodeAllowed: boolean,
): Promise<pg.QueryResult> {
  const other = ctx.router.pick(sameNodeAllowed ? null : failed, token)
  const reason = describeError(err)
  if (other !== null) {
    ctx.emit('readRetried', { from: failed.name, to: other.name, reason })
    return new Promise((resolve, reject) => runRead(ctx, request, other, token, false, resolve, reject))
  }
  if (ctx.config.onNoReplica === 'primary' || token !== null) {
    ctx.emit('readRetried', { from: failed.name, to: ctx.topology.primary?.name ?? '(primary)', reason })
    return readOnPrimary(ctx, request.statement)
  }
  throw new NoReplicaAvailableError(
    `read failed on ${failed.name} (${reason}) and no other replica is up and within maxLag (onNoReplica: 'error')`,
    { cause: err },
  )
}

async function runAsWrite(ctx: ExecContext, request: ReadRequest): Promise<pg.QueryResult> {
  const { result, node } = await runOnPrimary(ctx, request.statement, true)
  recordWrite(ctx, node, request.mode, request.scope, false)
  return result
}

function noReplica(ctx: ExecContext, request: ReadRequest, why: string): Promise<pg.QueryResult> {
  if (ctx.config.onNoReplica === 'error') {
    return Promise.reject(
      new NoReplicaAvailableError(`no replica can take this read: ${why} (onNoReplica: 'error')`),
    )
  }
  return readOnPrimary(ctx, request.statement)
}

/**
 * No replica is known to have the token's write: wait on a replica the monitor saw within
 * `causalWaitMs` of the primary (chosen by the read strategy; see ReadRouter#freshest), else the
 * freshest eligible one, for up to `causalWaitMs`, sharing that replica's position polls with
 * the other reads waiting on it (ReplayWatch); else read from the primary. Decided for this read
 * and this replica only; the wait holds no pooled connection.
 */
async function causalWait(
  ctx: ExecContext,
  request: ReadRequest,
  token: WriteToken,
): Promise<pg.QueryResult> {
  const waitMs = ctx.config.causalWaitMs
  const node = waitMs > 0 ? ctx.router.freshest(null, waitMs) : null
  if (node === null || !(await ctx.replayWatch.wait(node, token, waitMs)) || ctx.state.ended) {
    return readOnPrimary(ctx, request.statement)
  }
  // The replica may have gone down or out of the lag bound while the read waited.
  const chosen = node.isEligibleReplica(Date.now()) ? node : ctx.router.pick(null, token)
  if (chosen === null) return readOnPrimary(ctx, request.statement)
  return new Promise((resolve, reject) => runRead(ctx, request, chosen, token, true, resolve, reject))
}
