import type pg from 'pg'
import {
  ClusterEndedError,
  NoPrimaryError,
  PoolExhaustedError,
  PrimaryReadOnlyError,
  WriteOutcomeUnknownError,
} from '../errors.js'
import { describeError } from '../health/probe.js'
import {
  acquire,
  acquireLease,
  type Lease,
  runOnLease,
  runStatement,
  type Statement,
  taggedOutcome,
  tagOutcome,
} from '../pools/lease.js'
import type { ClusterNode } from '../pools/node.js'
import { outcomeOf } from '../pools/outcome.js'
import type { ExecContext } from './context.js'
import { withDeadline, withQueryTimeout } from './statement.js'

/**
 * How a statement survives a failover: the primary's client is taken here, waiting for a new
 * primary up to `failover.timeoutMs`; a failure is read by the outcome rule.
 *
 * - Not sent (a connect that failed, a dead client, a replaced pool): sent again, to the
 *   primary of that moment.
 * - A pool with no free client: {@link PoolExhaustedError} at once, it is not a failover.
 * - 25006 from the primary: discovery looks; a demoted primary means another one takes the
 *   statement, a primary still writable means it is read-only by configuration:
 *   {@link PrimaryReadOnlyError} at once.
 * - Sent, then the connection broke or the client-side timeout fired: a write may have committed,
 *   so it is never re-sent: {@link WriteOutcomeUnknownError}. A read is sent again.
 * - A write acknowledged by a node that stopped being the primary while it ran, or that the
 *   topology authority (Patroni) does not hold as leader: it may be rewound by the new primary's
 *   history, so it is reported as {@link WriteOutcomeUnknownError} too ({@link checkAcknowledged}).
 */
export async function acquirePrimaryLease(
  ctx: ExecContext,
  deadline: number,
  failedBefore?: unknown,
): Promise<Lease> {
  let lastError: unknown = failedBefore
  for (let attempt = 0; attempt < 10_000; attempt++) {
    if (ctx.state.ended) throw new ClusterEndedError('query')
    const left = deadline - Date.now()
    if (left <= 0) break
    let node: ClusterNode
    try {
      node = ctx.topology.primary ?? (await ctx.topology.waitForPrimary(left, ctx.noPrimaryReason()))
    } catch (err) {
      if (ctx.state.ended) throw new ClusterEndedError('query')
      if (err instanceof NoPrimaryError && lastError !== undefined) {
        throw new NoPrimaryError(err.message, err.waitedMs, { cause: lastError })
      }
      throw err
    }
    try {
      return await acquireLease(node)
    } catch (err) {
      if (await primaryConnectFailed(ctx, node, err)) lastError = err
    }
  }
  throw new NoPrimaryError(
    `no writable primary within failover.timeoutMs=${ctx.config.failover.timeoutMs} ms (${ctx.noPrimaryReason()})`,
    ctx.config.failover.timeoutMs,
    { cause: lastError },
  )
}

/**
 * A connect to the primary failed: throws what the caller gets, or resolves when it is worth
 * another try (true: the node is gone, and discovery has looked).
 */
async function primaryConnectFailed(ctx: ExecContext, node: ClusterNode, err: unknown): Promise<boolean> {
  if (ctx.state.ended) throw new ClusterEndedError('query')
  const outcome = outcomeOf(err, 'connect')
  if (outcome === 'not-sent') return false
  if (outcome === 'exhausted') {
    throw new PoolExhaustedError(node.name, node.connectTimeoutMs, { cause: err })
  }
  if (outcome !== 'node-gone') throw err
  node.errors++
  await failedOver(ctx, node, `connect to primary ${node.name} failed: ${describeError(err)}`)
  return true
}

/** Asks discovery to look, and paces retries when the same primary keeps failing. */
export async function failedOver(ctx: ExecContext, node: ClusterNode, reason: string): Promise<void> {
  await ctx.discovery.trigger(reason)
  if (ctx.topology.primary === node && !ctx.state.ended) {
    await new Promise((r) => setTimeout(r, ctx.config.failover.pollIntervalMs).unref())
  }
}

/** What the primary answered, and which node it was (for the write's token). */
export interface PrimaryResult {
  readonly result: pg.QueryResult
  readonly node: ClusterNode
}

/**
 * Runs `statement` on the primary. `write`: it may change data (never re-sent once sent, bounded
 * by `failover.writeTimeoutMs`); otherwise a read, safe to send again after a failover.
 *
 * With a primary known, the first attempt is callbacks only (no async frame: every write passes
 * here); anything that goes wrong is judged by the same rules as later attempts.
 */
export function runOnPrimary(
  ctx: ExecContext,
  statement: Statement,
  write: boolean,
  transactionString = false,
): Promise<PrimaryResult> {
  const deadline = Date.now() + ctx.config.failover.timeoutMs
  const node = ctx.topology.primary
  if (node === null || ctx.state.ended)
    return primaryAttempts(ctx, statement, write, transactionString, deadline)
  return new Promise((resolve, reject) => {
    acquire(node, (connectError, lease) => {
      if (connectError !== null) {
        primaryConnectFailed(ctx, node, connectError)
          .then((gone) =>
            primaryAttempts(
              ctx,
              statement,
              write,
              transactionString,
              deadline,
              gone ? connectError : undefined,
            ),
          )
          .then(resolve, reject)
        return
      }
      const l = lease!
      runStatement(l, write ? boundWrite(ctx, node, statement) : statement, (err, result, outcome) => {
        if (err !== null) {
          primaryStatementFailed(ctx, l, statement, write, transactionString, tagOutcome(err, outcome!))
            .then(() => primaryAttempts(ctx, statement, write, transactionString, deadline))
            .then(resolve, reject)
          return
        }
        try {
          resolve(primarySucceeded(ctx, l, result!, write))
        } catch (notAcknowledged) {
          reject(notAcknowledged)
        }
      })
    })
  })
}

/** The attempts after the first (or all of them while no primary is known). */
async function primaryAttempts(
  ctx: ExecContext,
  statement: Statement,
  write: boolean,
  transactionString: boolean,
  deadline: number,
  failedBefore?: unknown,
): Promise<PrimaryResult> {
  for (let attempt = 0; attempt < 10_000; attempt++) {
    const lease = await acquirePrimaryLease(ctx, deadline, attempt === 0 ? failedBefore : undefined)
    const node = lease.node
    let result: pg.QueryResult
    try {
      result = await runOnLease(lease, write ? boundWrite(ctx, node, statement) : statement)
    } catch (err) {
      await primaryStatementFailed(ctx, lease, statement, write, transactionString, err as Error)
      continue
    }
    return primarySucceeded(ctx, lease, result, write)
  }
  throw new NoPrimaryError('statement retried too often', ctx.config.failover.timeoutMs)
}

/**
 * A statement on the primary answered: the lease goes back, and a write is acknowledged only by
 * the rule of {@link checkAcknowledged} (throws otherwise).
 */
function primarySucceeded(
  ctx: ExecContext,
  lease: Lease,
  result: pg.QueryResult,
  write: boolean,
): PrimaryResult {
  lease.release()
  if (write) checkAcknowledged(ctx, lease.node)
  return { result, node: lease.node }
}

/**
 * A statement on the primary failed (`err` tagged with its outcome): releases the lease, then
 * throws what the caller gets, or resolves when the statement may be sent again (it was not
 * sent, the node stopped being the primary, or it is a read lost with its connection).
 */
async function primaryStatementFailed(
  ctx: ExecContext,
  lease: Lease,
  statement: Statement,
  write: boolean,
  transactionString: boolean,
  err: Error,
): Promise<void> {
  const node = lease.node
  // `BEGIN; ...; COMMIT` that failed may have left the session in an (aborted) transaction,
  // and its ReadyForQuery status comes after the error: never reuse that session.
  if (transactionString) lease.lost = true
  lease.release(err)
  const outcome = taggedOutcome(err)
  if (outcome === 'not-sent' && statement.handle?.aborted !== true) return
  if (statement.handle?.aborted === true) {
    // The caller aborted it: its answer. A write that was sent may have committed.
    if (write && (outcome === 'outcome-unknown' || outcome === 'timeout')) {
      throw new WriteOutcomeUnknownError(node.name, err)
    }
    throw err
  }
  if (outcome === 'read-only') {
    await ctx.discovery.trigger(`primary ${node.name} answered 25006 (read-only)`)
    // Still the primary after a fresh look: writable, yet read-only by its configuration.
    if (ctx.topology.primary === node) throw new PrimaryReadOnlyError(node.name, { cause: err })
    return
  }
  if (outcome === 'outcome-unknown' || outcome === 'timeout') {
    const reason = `statement on primary ${node.name} failed after it was sent: ${describeError(err)}`
    if (write) {
      if (outcome === 'outcome-unknown') void ctx.discovery.trigger(reason)
      throw new WriteOutcomeUnknownError(node.name, err)
    }
    if (outcome === 'timeout') throw err
    await failedOver(ctx, node, reason)
    return
  }
  throw err
}

/**
 * The acknowledgement rule, at every point where a write's success is reported (a write through
 * `db.query`, a transaction's COMMIT): the node that answered must still be the primary and, while
 * a topology authority answers, its leader. Otherwise the write may be rewound by the new
 * primary's history: {@link WriteOutcomeUnknownError}, never a success.
 */
export function checkAcknowledged(ctx: ExecContext, node: ClusterNode): void {
  if (ctx.topology.primary !== node) {
    throw new WriteOutcomeUnknownError(
      node.name,
      new Error(`${node.name} stopped being the primary while the write ran; it may not survive`),
    )
  }
  const follower = ctx.follower
  if (follower !== null && !follower.mayAcknowledge(node.name)) {
    throw new WriteOutcomeUnknownError(node.name, follower.notLeaderError(node.name))
  }
}

/** A write's client-side bound: `failover.writeTimeoutMs` when it is below the pool's query_timeout. */
function boundWrite(ctx: ExecContext, node: ClusterNode, statement: Statement): Statement {
  const bound = ctx.config.failover.writeTimeoutMs
  const poolBound = (node.pool.options as { query_timeout?: number }).query_timeout
  if (bound === undefined || (poolBound !== undefined && poolBound <= bound)) return statement
  if ((statement.config as { query_timeout?: number } | null)?.query_timeout !== undefined) return statement
  // The node's deadline sweep when it keeps this bound to within a tenth (the default 20 s bound
  // under the default 60 s pool one): no pg timer and no QueryConfig copy per write (measured
  // +10 µs per write). A shorter bound gets pg's own per-query timer.
  const sweep = node.deadlines
  if (sweep.timeoutMs > 0 && bound >= sweep.periodMs * 10) return withDeadline(statement, bound)
  return withQueryTimeout(statement, bound)
}
