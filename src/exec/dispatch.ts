import type pg from 'pg'
import type { QueryOptions } from '../cluster-types.js'
import { type ConsistencyMode, validateConsistency } from '../config.js'
import { TransactionStatementError } from '../errors.js'
import type { Statement } from '../pools/lease.js'
import type { Classification } from '../router/classify.js'
import { currentScope, type Scope } from '../router/consistency.js'
import { recordWrite, schemaPending } from './causal.js'
import type { ExecContext } from './context.js'
import { runOnPrimary } from './primary-path.js'
import { readEventual, readWithRequirement } from './read-path.js'
import { firstWord, type SubmitRoute } from './submit-path.js'

/**
 * Where `db.query` sends a statement. Overrides win (`role`, an `onPrimary` scope); otherwise
 * the classifier decides. A string that would leave a pooled session inside a transaction is
 * refused; a balanced one (`BEGIN; ...; COMMIT`) runs on the primary as `pg.Pool` runs it.
 */
export function dispatch(
  ctx: ExecContext,
  statement: Statement,
  options: QueryOptions | undefined,
): Promise<pg.QueryResult> {
  const scope = currentScope()
  const classification = ctx.classifier.classify(statement.text)
  if (classification.transactionControl !== undefined && classification.balanced !== true) {
    return Promise.reject(new TransactionStatementError(firstWord(statement.text)))
  }
  let mode: ConsistencyMode
  try {
    mode = modeOf(ctx, options, scope)
  } catch (err) {
    return Promise.reject(err)
  }
  const role = options?.role ?? (scope?.forcePrimary === true ? 'primary' : 'auto')
  if (role === 'primary' || (role === 'auto' && classification.kind === 'write')) {
    // Forced to the primary counts as a write: it may call a function that writes, so it is
    // never re-sent once sent, and it is recorded for read-your-writes.
    return write(ctx, statement, mode, scope, classification)
  }
  const request = { statement, auto: role === 'auto', mode, scope }
  if (mode === 'eventual' && options?.after === undefined && !schemaPending(ctx)) {
    return readEventual(ctx, request)
  }
  return readWithRequirement(ctx, request, options?.after)
}

function write(
  ctx: ExecContext,
  statement: Statement,
  mode: ConsistencyMode,
  scope: Scope | undefined,
  classification: Classification,
): Promise<pg.QueryResult> {
  const transactionString = classification.transactionControl !== undefined
  return runOnPrimary(ctx, statement, true, transactionString).then(({ result, node }) => {
    recordWrite(ctx, node, mode, scope, classification.schemaChange === true)
    return result
  })
}

/** The consistency of one call: its option, else the scope's, else the cluster's. */
export function modeOf(
  ctx: ExecContext,
  options: QueryOptions | undefined,
  scope: Scope | undefined,
): ConsistencyMode {
  if (options?.consistency !== undefined)
    return validateConsistency(options.consistency, 'options.consistency')
  return scope?.consistency ?? ctx.config.consistency
}

/** The route of a Submittable, decided as for `db.query`. */
export function submitRoute(ctx: ExecContext, text: string, options: QueryOptions | undefined): SubmitRoute {
  const scope = currentScope()
  const classification = ctx.classifier.classify(text)
  const role = options?.role ?? (scope?.forcePrimary === true ? 'primary' : 'auto')
  const toPrimary = role === 'primary' || (role === 'auto' && classification.kind === 'write')
  return {
    toPrimary,
    writes: toPrimary,
    auto: role === 'auto',
    schemaChange: classification.schemaChange === true,
    transactionString: classification.transactionControl !== undefined,
    mode: modeOf(ctx, options, scope),
    scope,
  }
}
