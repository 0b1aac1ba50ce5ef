import type pg from 'pg'
import type { IsolationLevel, TransactionOptions } from '../cluster-types.js'
import type { ConsistencyMode } from '../config.js'
import { NoPrimaryError, PgsplitError, WriteOutcomeUnknownError } from '../errors.js'
import { type Lease, runOnLease, type Statement } from '../pools/lease.js'
import { isDead } from '../pools/outcome.js'
import { runInScope, type Scope } from '../router/consistency.js'
import { readRequirement, recordWrite } from './causal.js'
import { acquireReplicaLease } from './connect-path.js'
import type { ExecContext } from './context.js'
import { trackStatements } from './pinned-client.js'
import { acquirePrimaryLease, checkAcknowledged, failedOver } from './primary-path.js'

const COMMIT: Statement = { text: 'COMMIT', values: undefined, config: null }
const ISOLATION_LEVELS: readonly IsolationLevel[] = [
  'read uncommitted',
  'read committed',
  'repeatable read',
  'serializable',
]

/** Our own connection died before COMMIT was sent: `fn` may run again (retryOnFailover). */
class ConnectionLostBeforeCommit {
  constructor(readonly cause: unknown) {}
}

/**
 * How a transaction runs: BEGIN, `fn`, COMMIT on one leased client; ROLLBACK when `fn` throws.
 * Whether the connection was lost is decided by the connection itself (dead, or the ROLLBACK
 * that follows a failure could not be sent), never by the shape of what `fn` threw. Lost before
 * COMMIT was sent: nothing committed, `retryOnFailover` runs `fn` again on the new primary. Lost
 * after: {@link WriteOutcomeUnknownError}. A read-only transaction may run on a replica
 * (`readOnlyTransactions: 'replica'`), honouring causal tokens and sticky windows.
 */
export async function runTransaction<T>(
  ctx: ExecContext,
  fn: (client: pg.PoolClient) => Promise<T>,
  options: TransactionOptions,
  mode: ConsistencyMode,
  scope: Scope | undefined,
): Promise<T> {
  const begin: Statement = { text: beginStatement(options), values: undefined, config: null }
  if (options.readOnly === true && ctx.config.readOnlyTransactions === 'replica') {
    const requirement = await readRequirement(ctx, mode, scope, undefined)
    if (requirement !== 'primary') {
      const lease = await acquireReplicaLease(ctx, requirement)
      if (lease !== null) return unwrap(runOn(ctx, lease, begin, fn, false, mode, scope))
    }
  }
  const deadline = Date.now() + ctx.config.failover.timeoutMs
  for (let attempt = 0; attempt < 100; attempt++) {
    const lease = await acquirePrimaryLease(ctx, deadline)
    try {
      return await runOn(ctx, lease, begin, fn, options.readOnly !== true, mode, scope)
    } catch (err) {
      if (!(err instanceof ConnectionLostBeforeCommit)) throw err
      if (options.retryOnFailover !== true || Date.now() >= deadline || ctx.state.ended) throw err.cause
      await failedOver(ctx, lease.node, `transaction on ${lease.node.name} lost its connection before COMMIT`)
    }
  }
  throw new NoPrimaryError('transaction retried too often', ctx.config.failover.timeoutMs)
}

async function unwrap<T>(run: Promise<T>): Promise<T> {
  try {
    return await run
  } catch (err) {
    throw err instanceof ConnectionLostBeforeCommit ? err.cause : err
  }
}

async function runOn<T>(
  ctx: ExecContext,
  lease: Lease,
  begin: Statement,
  fn: (client: pg.PoolClient) => Promise<T>,
  writes: boolean,
  mode: ConsistencyMode,
  scope: Scope | undefined,
): Promise<T> {
  const node = lease.node
  let commitSent = false
  const tracker = trackStatements(ctx, lease.client)
  let result: T
  let committed: boolean
  try {
    await runOnLease(lease, begin)
    result = await runInScope({ forcePrimary: true }, () => fn(lease.client))
    tracker.restore()
    commitSent = true
    const commit = await runOnLease(lease, COMMIT)
    lease.release()
    // COMMIT of an aborted transaction answers ROLLBACK: nothing was written.
    committed = commit.command === 'COMMIT'
  } catch (err) {
    tracker.restore()
    if (!commitSent && !lease.lost && !isDead(lease.client)) {
      // Also the test of our own connection: a ROLLBACK that cannot be sent means it is gone.
      await runOnLease(lease, rollbackWithin(ctx)).catch(() => undefined)
    }
    const lost = lease.lost || isDead(lease.client)
    lease.release(lost ? err : undefined)
    if (lost && commitSent && writes) throw new WriteOutcomeUnknownError(node.name, err)
    if (lost && !commitSent) {
      if (node.role !== 'replica') {
        void ctx.discovery.trigger(`transaction on ${node.name} lost its connection`)
      }
      throw new ConnectionLostBeforeCommit(err)
    }
    throw err
  }
  if (writes && committed) {
    // Outside the try: the lease is released, and this is not a lost connection.
    checkAcknowledged(ctx, node)
    recordWrite(ctx, node, mode, scope, tracker.schemaChange)
  }
  return result
}

function rollbackWithin(ctx: ExecContext): Statement {
  const ms = ctx.config.healthCheck.timeoutMs
  return {
    text: 'ROLLBACK',
    values: undefined,
    config: { text: 'ROLLBACK', query_timeout: ms } as pg.QueryConfig,
  }
}

/** `BEGIN [ISOLATION LEVEL ...] [READ ONLY] [DEFERRABLE]`, validated. */
export function beginStatement(options: TransactionOptions): string {
  const parts = ['BEGIN']
  if (options.isolationLevel !== undefined) {
    if (!ISOLATION_LEVELS.includes(options.isolationLevel)) {
      throw new PgsplitError(
        'PGSPLIT_BAD_OPTION',
        `transaction isolationLevel must be one of ${ISOLATION_LEVELS.join(', ')}, got ${JSON.stringify(options.isolationLevel)}`,
      )
    }
    parts.push(`ISOLATION LEVEL ${options.isolationLevel.toUpperCase()}`)
  }
  if (options.readOnly === true) parts.push('READ ONLY')
  if (options.deferrable === true) parts.push('DEFERRABLE')
  return parts.join(' ')
}
