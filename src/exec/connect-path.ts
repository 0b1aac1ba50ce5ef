import type pg from 'pg'
import type { ConsistencyMode } from '../config.js'
import { ClusterEndedError, NoReplicaAvailableError, PoolExhaustedError } from '../errors.js'
import { acquireLease, type Lease } from '../pools/lease.js'
import type { ClusterNode } from '../pools/node.js'
import { outcomeOf } from '../pools/outcome.js'
import type { Scope } from '../router/consistency.js'
import type { ExecContext } from './context.js'
import { pinnedClient } from './pinned-client.js'
import { acquirePrimaryLease } from './primary-path.js'

/**
 * A lease on a healthy replica for a pinned client or a read-only transaction: a failed connect
 * marks the replica suspect and tries another one (never primary discovery: a lost replica is not
 * a failover). `token` restricts the choice to replicas that have replayed it. Null: none could
 * be had (the caller decides between the primary and `onNoReplica`).
 */
export async function acquireReplicaLease(
  ctx: ExecContext,
  token: Parameters<ExecContext['router']['pick']>[1] = null,
): Promise<Lease | null> {
  let excluded: ClusterNode | null = null
  for (let attempt = 0; attempt < 2; attempt++) {
    const node = ctx.router.pick(excluded, token)
    if (node === null) return null
    try {
      return await acquireLease(node)
    } catch (err) {
      if (ctx.state.ended) throw new ClusterEndedError('connect()')
      const outcome = outcomeOf(err, 'connect')
      if (outcome === 'exhausted') {
        throw new PoolExhaustedError(node.name, node.connectTimeoutMs, { cause: err })
      }
      if (outcome === 'sql') throw err
      ctx.monitor.markSuspect(node)
      excluded = node
    }
  }
  return null
}

/** `db.connect()`: a pinned client on the primary (waiting through a failover) or a replica. */
export async function connectClient(
  ctx: ExecContext,
  role: 'primary' | 'replica',
  mode: ConsistencyMode,
  scope: Scope | undefined,
): Promise<pg.PoolClient> {
  if (!ctx.state.initialized) await ctx.state.initial.catch(() => undefined)
  if (ctx.state.ended) throw new ClusterEndedError('connect()')
  if (role === 'replica') {
    const lease = await acquireReplicaLease(ctx)
    if (lease !== null) return pinnedClient(ctx, lease, mode, scope)
    if (ctx.config.onNoReplica === 'error') {
      throw new NoReplicaAvailableError("no replica is up and within maxLag (onNoReplica: 'error')")
    }
  }
  const lease = await acquirePrimaryLease(ctx, Date.now() + ctx.config.failover.timeoutMs)
  return pinnedClient(ctx, lease, mode, scope)
}
