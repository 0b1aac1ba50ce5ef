import type {
  KyselyPlugin,
  PluginTransformQueryArgs,
  PluginTransformResultArgs,
  QueryId,
  QueryResult,
  RootOperationNode,
  UnknownRow,
} from 'kysely'

/**
 * The query ids of the queries that must run on the primary. Kept on `globalThis` under a registered
 * symbol so that the ESM and CJS builds of pgsplit (a dual package loaded twice) share one set.
 */
const REGISTRY = Symbol.for('pgsplit.kysely.forcedPrimary')

function registry(): WeakSet<QueryId> {
  const holder = globalThis as { [REGISTRY]?: WeakSet<QueryId> }
  let set = holder[REGISTRY]
  if (set === undefined) {
    set = new WeakSet<QueryId>()
    holder[REGISTRY] = set
  }
  return set
}

const forced = registry()
/** Kysely 0.27 compiles no queryId: the root node the plugin saw marks the query there. */
const forcedNodes = new WeakSet<object>()

/** True when the query was built through {@link primary} (or a Kysely with {@link PrimaryPlugin}). */
export function isForcedToPrimary(queryId: QueryId | undefined, root?: object): boolean {
  return (queryId !== undefined && forced.has(queryId)) || (root !== undefined && forcedNodes.has(root))
}

/**
 * A Kysely plugin that sends every query of the Kysely instance it is added to to the primary.
 * It changes neither the operation tree nor the SQL: it marks the query's id, which the
 * {@link SplitDialect}'s connections look up. Other dialects ignore it.
 *
 * ```ts
 * const writer = new Kysely<DB>({ dialect, plugins: [new PrimaryPlugin()] }) // an all-primary instance
 * ```
 */
export class PrimaryPlugin implements KyselyPlugin {
  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    if (args.queryId !== undefined) forced.add(args.queryId)
    forcedNodes.add(args.node)
    return args.node
  }

  async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    return args.result
  }
}

const PLUGIN = new PrimaryPlugin()

/**
 * The same Kysely instance (or transaction), with every query it builds sent to the primary:
 * a read that must see a write just made, a report that must not lag.
 *
 * ```ts
 * import { primary } from 'pgsplit/kysely'
 *
 * const person = await primary(db).selectFrom('person').selectAll().where('id', '=', id).executeTakeFirst()
 * ```
 *
 * For a whole scope (including code that takes `db` itself), `cluster.onPrimary(() => ...)` does the same.
 */
export function primary<K extends { withPlugin(plugin: KyselyPlugin): K }>(db: K): K {
  return db.withPlugin(PLUGIN)
}
