import type { CompiledQuery, OperationNode } from 'kysely'
import type { Classification } from '../index.js'

/**
 * Where a compiled Kysely query runs, decided from its root operation node.
 *
 * - `pin: true`: the statement writes, holds session state or controls a transaction. It runs on the
 *   connection's pinned primary client (taken on first need, kept until the connection is released),
 *   so that whatever it leaves in the session (temp tables, `SET`, advisory locks, `currval`) is
 *   there for the next statement of the same connection.
 * - `pin: false`: a read. Routed on its own through `cluster.query()` (replica, lag, causal tokens,
 *   `onPrimary` scopes, 25006 self-correction), unless the connection is already pinned.
 */
export interface QueryRoute {
  readonly pin: boolean
  /** Set for BEGIN / COMMIT / ROLLBACK / SAVEPOINT ...: the connection tracks its transaction. */
  readonly transactionControl?: Classification['transactionControl']
}

/** Not pinned: the cluster routes it (a read to a replica, a write through its write path). */
const READ: QueryRoute = Object.freeze({ pin: false })
const WRITE: QueryRoute = Object.freeze({ pin: true })
/** Writes that leave nothing in the session: through the cluster's write path, unpinned. */
const CLUSTER_WRITE: QueryRoute = READ
/** Roots whose statement changes data or the schema and nothing in the session (unless TEMP). */
const SESSIONLESS_WRITES = new Set([
  'InsertQueryNode',
  'UpdateQueryNode',
  'DeleteQueryNode',
  'MergeQueryNode',
  'CreateTableNode',
  'AlterTableNode',
  'DropTableNode',
  'CreateIndexNode',
  'DropIndexNode',
  'CreateSchemaNode',
  'DropSchemaNode',
  'CreateViewNode',
  'DropViewNode',
  'CreateTypeNode',
  'DropTypeNode',
  'RefreshMaterializedViewNode',
  'CreateSequenceNode',
  'DropSequenceNode',
])

const DATA_MODIFYING = new Set(['InsertQueryNode', 'UpdateQueryNode', 'DeleteQueryNode', 'MergeQueryNode'])
const ROW_LOCKS = new Set(['ForUpdate', 'ForNoKeyUpdate', 'ForShare', 'ForKeyShare'])
/** Nodes whose SQL the node tree does not explain: the statement's text is classified. */
const OPAQUE = new Set(['RawNode', 'FunctionNode'])
/** Nodes that hold user values (objects that may have a `kind` of their own): not descended into. */
const VALUES = new Set(['ValueNode', 'ValueListNode', 'PrimitiveValueListNode', 'DefaultInsertValueNode'])

type Scan = 'write' | 'opaque' | 'read'

function isNode(value: unknown): value is OperationNode {
  return typeof value === 'object' && value !== null && typeof (value as { kind?: unknown }).kind === 'string'
}

/**
 * Looks through a SELECT tree (subqueries, CTEs, joins, set operations, at any depth) for a
 * data-modifying statement or a row-locking clause (`write`), and for raw SQL or function calls
 * whose effect only the SQL text tells (`opaque`).
 */
export function scanSelect(root: OperationNode): Scan {
  let opaque = false
  const stack: unknown[] = [root]
  while (stack.length > 0) {
    const value = stack.pop()
    if (Array.isArray(value)) {
      for (const item of value) stack.push(item)
      continue
    }
    if (!isNode(value)) continue
    const kind = value.kind
    if (DATA_MODIFYING.has(kind)) return 'write'
    if (kind === 'SelectModifierNode') {
      const modifier = (value as { modifier?: string }).modifier
      if (modifier !== undefined && ROW_LOCKS.has(modifier)) return 'write'
    }
    if (VALUES.has(kind)) continue
    if (OPAQUE.has(kind)) opaque = true
    for (const child of Object.values(value)) {
      if (typeof child === 'object' && child !== null) stack.push(child)
    }
  }
  return opaque ? 'opaque' : 'read'
}

function remember<V>(cache: Map<string, V>, max: number, key: string, value: V): void {
  if (key.length > 8192) return
  if (cache.size >= max) {
    const oldest = cache.keys().next()
    if (oldest.done !== true) cache.delete(oldest.value)
  }
  cache.set(key, value)
}

/**
 * Classifies SQL texts with the library's classifier and remembers the answers (bounded), and
 * remembers the route of each SELECT's SQL text: the text shows every data-modifying statement,
 * lock clause and function call the tree holds, so one text has one route, and the tree walk
 * (microseconds per query) runs once per text.
 */
export class SqlClassifierCache {
  readonly #classify: (sql: string) => Classification
  readonly #selects = new Map<string, QueryRoute>()
  readonly #max: number

  /** `classify`: the cluster's own (cached) classifier, so there is one cache per cluster. */
  constructor(classify: (sql: string) => Classification, max = 2000) {
    this.#classify = classify
    this.#max = max
  }

  classify(sql: string): Classification {
    return this.#classify(sql)
  }

  selectRoute(sql: string): QueryRoute | undefined {
    return this.#selects.get(sql)
  }

  rememberSelect(sql: string, route: QueryRoute): QueryRoute {
    remember(this.#selects, this.#max, sql, route)
    return route
  }
}

function fromClassification(c: Classification): QueryRoute {
  if (c.transactionControl !== undefined) return { pin: true, transactionControl: c.transactionControl }
  return c.kind === 'write' ? WRITE : READ
}

/**
 * The route of a compiled query:
 *
 * | root node | route |
 * | --- | --- |
 * | `SelectQueryNode` | read, unless it locks rows or holds a data-modifying statement at any depth; raw SQL or function calls inside it are classified from the SQL text |
 * | `InsertQueryNode`, `UpdateQueryNode`, `DeleteQueryNode`, `MergeQueryNode` | primary |
 * | schema nodes (`CreateTableNode`, `AlterTableNode`, `DropIndexNode`, ...) and any other | primary |
 * | `RawNode` (`sql\`...\``) | the SQL classifier (`role: 'auto'` rules): reads may go to a replica |
 */
export function routeQuery(query: CompiledQuery, classifier: SqlClassifierCache): QueryRoute {
  const node = query.query
  switch (node.kind) {
    case 'SelectQueryNode': {
      const known = classifier.selectRoute(query.sql)
      if (known !== undefined) return known
      const scan = scanSelect(node)
      // FOR UPDATE / a writing CTE: the cluster's classifier sees the same in the text.
      if (scan === 'write') return classifier.rememberSelect(query.sql, CLUSTER_WRITE)
      if (scan === 'opaque')
        return classifier.rememberSelect(query.sql, fromClassification(classifier.classify(query.sql)))
      return classifier.rememberSelect(query.sql, READ)
    }
    case 'RawNode':
      return fromClassification(classifier.classify(query.sql))
    case 'CreateTableNode':
      // A TEMP table lives in the session: the connection pins a primary client for it.
      return (node as { temporary?: boolean }).temporary === true ||
        /^\s*create\s+(local\s+|global\s+)?temp/i.test(query.sql)
        ? WRITE
        : CLUSTER_WRITE
    default:
      return SESSIONLESS_WRITES.has(node.kind) ? CLUSTER_WRITE : WRITE
  }
}
