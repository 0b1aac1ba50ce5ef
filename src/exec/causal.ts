import type { ConsistencyMode } from '../config.js'
import type { ClusterNode } from '../pools/node.js'
import {
  type CausalSession,
  laterToken,
  modeName,
  type Scope,
  type WriteToken,
} from '../router/consistency.js'
import { hasReached } from '../router/route.js'
import type { ExecContext } from './context.js'

/** The session a scope's reads and writes use: its own, or the process's. */
export function sessionOf(ctx: ExecContext, scope: Scope | undefined): CausalSession {
  return scope?.session ?? ctx.global
}

/**
 * After a committed write on `node`. The process learns a token (lazily: it is read when a read
 * first needs it, so write-only traffic pays one closure per write), whatever the mode, so that a
 * per-call `consistency: 'causal'` read sees every write this process acknowledged. The scope's
 * session learns it in causal mode, or a sticky window. A schema change raises the barrier that
 * every later read waits for, in every mode.
 */
export function recordWrite(
  ctx: ExecContext,
  node: ClusterNode,
  mode: ConsistencyMode,
  scope: Scope | undefined,
  schemaChange: boolean,
): void {
  const session = sessionOf(ctx, scope)
  // Read on the primary of that moment: after a failover, the new one's position covers every
  // write that survived it.
  let fetched: Promise<WriteToken | null> | null = null
  const fetch = () => {
    fetched ??= ctx.lsnReader.read(ctx.topology.primary ?? node).catch(() => null)
    return fetched
  }
  const pinMs = ctx.config.failover.timeoutMs
  ctx.global.recordWrite(fetch, pinMs)
  if (schemaChange) ctx.schema.recordWrite(fetch, pinMs)
  if (typeof mode === 'object') {
    const until = Date.now() + mode.windowMs
    session.pinToPrimary(until)
    if (session !== ctx.global) ctx.global.pinToPrimary(until)
    return
  }
  if (mode === 'causal' && session !== ctx.global) session.recordWrite(fetch, pinMs)
}

/** What a read must wait for: a token, `'primary'` (a sticky window or an unknown token), or nothing. */
export type ReadRequirement = WriteToken | 'primary' | null

/**
 * The position a read must see: the caller's `after` token, the session's writes in causal mode,
 * and the schema barrier in every mode.
 */
export async function readRequirement(
  ctx: ExecContext,
  mode: ConsistencyMode,
  scope: Scope | undefined,
  after: string | undefined,
): Promise<ReadRequirement> {
  let token: WriteToken | null = after === undefined ? null : await ctx.tokens.admit(after)
  const kind = modeName(mode)
  if (kind !== 'eventual') {
    const session = sessionOf(ctx, scope)
    if (session.primaryUntil > Date.now()) return 'primary'
    if (kind === 'causal') {
      token = laterToken(token, session.needsWait ? await session.token() : session.settledToken)
      if (session.primaryUntil > Date.now()) return 'primary'
    }
  }
  if (schemaPending(ctx)) {
    const schema = ctx.schema.needsWait ? await ctx.schema.token() : ctx.schema.settledToken
    if (ctx.schema.primaryUntil > Date.now()) return 'primary'
    token = laterToken(token, schema)
  }
  if (token !== null && token.timeline < ctx.topology.timeline) {
    // The cluster has left the token's timeline (a failover): only the primary is sure to have it.
    return 'primary'
  }
  return token
}

/**
 * True while a schema change of this process may not be on every replica yet. The barrier is
 * dropped once every replica that is up has replayed it, or the cluster moved to a newer timeline.
 */
export function schemaPending(ctx: ExecContext): boolean {
  const schema = ctx.schema
  if (schema.needsWait) return true
  if (schema.primaryUntil !== 0 && schema.primaryUntil > Date.now()) return true
  const token = schema.settledToken
  if (token === null) return false
  if (token.timeline < ctx.topology.timeline) return !clearSchema(ctx)
  for (const node of ctx.topology.nodes) {
    if (node.role === 'replica' && node.state === 'up' && !hasReached(node, token)) return true
  }
  return !clearSchema(ctx)
}

function clearSchema(ctx: ExecContext): boolean {
  ctx.schema.clear()
  return true
}
