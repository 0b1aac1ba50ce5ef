/**
 * SQL text -> 'read' | 'write': which statements a replica may run.
 *
 * A statement is a read only when it is provably read-only and leaves no session state behind; everything
 * doubtful is a write, because a write sent to the primary is merely a little slower while a "read" that
 * writes fails on a replica (25006) or, worse, takes a lock or sets state on a node nobody will use again.
 *
 * Reads: `SELECT`, `VALUES`, `TABLE t`, `WITH ... SELECT`, `SHOW`, `EXPLAIN <a read>` and
 * `COPY t|(query) TO STDOUT`, provided that nowhere in them (at any depth) is there a locking clause
 * (`FOR UPDATE | NO KEY UPDATE | SHARE | KEY SHARE`), a data-modifying statement (writing CTE), `INTO`
 * (`SELECT INTO` creates a table), a temporary schema (`pg_temp`), or a call of a function that writes or
 * holds session state (`nextval`, advisory locks, `set_config`, ..., see {@link BUILTIN_WRITE_FUNCTIONS},
 * plus the user's `writeFunctions`). Everything else, including anything the lexer cannot close, several
 * statements in one string, and the `/* pgsplit:primary *\/` hint, is a write.
 *
 * Decisions
 * - `EXPLAIN X` is classified as X, with or without ANALYZE. Without ANALYZE a replica could plan
 *   `EXPLAIN DELETE ...`, but the rule "EXPLAIN inherits from its statement" needs no parsing of the
 *   option list (ANALYZE may hide in `(ANALYZE true, ...)`, `(analyze on)`, ...), and whoever explains a
 *   write wants the plan of the node that runs it. EXPLAIN is rare: routing it to the primary costs nothing.
 * - Cursors (`DECLARE`, `FETCH`, `MOVE`, `CLOSE`) are writes: a cursor lives in one backend session (and,
 *   without `WITH HOLD`, in one transaction), which is the primary-pinned connection; a `FETCH` sent to a
 *   pooled replica connection can only fail with "cursor does not exist".
 * - `pg_terminate_backend`/`pg_cancel_backend` are writes: they act on a PID of one server, and through
 *   the load balancer a random replica would be the target. The primary is the deterministic choice and the
 *   node whose sessions hold the locks and transactions worth cancelling; use a node's own pool for others.
 * - Replica-only and primary-only admin functions (`pg_wal_replay_pause`, `pg_current_wal_lsn`, ...) are
 *   writes: on a random replica they would act on the wrong node or fail with an error that is not 25006.
 * - `COPY ... TO STDIN` (which the server accepts as a synonym of STDOUT) is a write: only STDOUT is proven.
 * - A plain '...' string containing a backslash is lexed twice, with and without
 *   `standard_conforming_strings`: the statement is a read only if both readings agree.
 *
 * Why a hand-written lexer rather than a real parser. Measured with
 * `npx tsx bench/classifier-parser-compare.ts` on the 59-statement mix of bench/classifier.bench-data.ts
 * (Node 20, 2 vCPU Xeon 2.5 GHz shared with other jobs; the best run, in brackets the range over runs):
 *
 *   lexer, uncached `classify()`          3.5 µs / statement   (3.5 - 7.7)
 *   lexer, cached `StatementClassifier`   22 ns / statement    (22 - 45; one Map hit)
 *   libpg-query 18 `parseSync` only       31 µs / statement    (31 - 127; no tree walk yet), after an
 *                                         async WASM `loadModule()` of 18 - 105 ms
 *
 * A parser is about ten times slower per uncached statement (before walking its tree), is asynchronous
 * to start, and would be a runtime dependency (the library may depend only on pg and pg-pool). Routing
 * needs far less than a parse tree: where code is (versus strings, comments, quoted names) and a handful
 * of keyword patterns, all fail-safe towards the primary. libpg-query stays a dev dependency: the unit
 * tests check that every statement the lexer calls a read parses there as one read-only statement.
 *
 * @example
 * ```ts
 * import { StatementClassifier } from './classify.js'
 *
 * const classifier = new StatementClassifier({ writeFunctions: ['audit.log_access'] })
 * classifier.classify('SELECT * FROM t WHERE id = $1') // { kind: 'read', reason: 'SELECT' }
 * classifier.classify('SELECT * FROM jobs FOR UPDATE SKIP LOCKED') // { kind: 'write', reason: 'FOR UPDATE' }
 * classifier.classify('BEGIN') // { kind: 'write', reason: 'BEGIN', transactionControl: 'begin' }
 * ```
 */

import type { Token } from './sql-lexer.js'
import { lexSql, punctToken } from './sql-lexer.js'

export type StatementKind = 'read' | 'write'

export interface ClassifyOptions {
  /**
   * User functions that write (or hold session state), so that a `SELECT` calling them goes to the primary.
   * Lower-case names, bare (`log_access`, matches in every schema) or schema-qualified (`audit.log_access`,
   * matches `audit.log_access(...)` and the unqualified `log_access(...)`, which the search_path may
   * resolve to it). Quoted calls (`"log_access"(...)`) match too.
   */
  writeFunctions?: readonly string[]
}

export interface Classification {
  kind: StatementKind
  /** Short and human: 'SELECT', 'FOR UPDATE', 'writing CTE', 'function nextval', 'multi-statement', ... */
  reason: string
  /**
   * Set when the statement controls a transaction block (`BEGIN`, `START TRANSACTION`, `COMMIT`, `END`,
   * `ROLLBACK`, `ABORT`, `SAVEPOINT`, `RELEASE`, `ROLLBACK TO`, `PREPARE TRANSACTION`, `COMMIT PREPARED`,
   * `ROLLBACK PREPARED`, `SET TRANSACTION`), so that the Cluster can refuse it on a pooled connection.
   * `... AND CHAIN` is 'other' since the session stays in a transaction. For a multi-statement string, the
   * value of its first transaction-control statement.
   */
  transactionControl?: 'begin' | 'commit' | 'rollback' | 'other'
  /**
   * For a multi-statement string with transaction control: true when it ends outside a
   * transaction block (`BEGIN; ...; COMMIT;`), as `pg.Pool` runs it atomically on one connection.
   */
  balanced?: boolean
  /** The statement (or one of a string's) changes the schema: later reads must see the catalog. */
  schemaChange?: boolean
}

/** Leading keywords of statements that change the catalog (DDL). */
const SCHEMA_STARTERS: ReadonlySet<string> = new Set([
  'create',
  'alter',
  'drop',
  'comment',
  'grant',
  'revoke',
  'security',
  'import',
  'reassign',
])

/** `/* pgsplit:primary *\/` (in any comment, any case) forces a statement to the primary. */
export const PRIMARY_HINT = 'pgsplit:primary'

/** Longer SQL texts are classified every time rather than cached (big generated statements rarely repeat). */
export const MAX_CACHED_SQL_LENGTH = 8 * 1024

/** Default number of SQL texts a {@link StatementClassifier} remembers. */
export const DEFAULT_CACHE_SIZE = 5000

/**
 * Built-in functions that write, take locks or hold session state, or that are meaningful on one node only.
 * Matched on the bare name whatever the schema (`pg_catalog.nextval`, `"nextval"`, `public.nextval`).
 */
export const BUILTIN_WRITE_FUNCTIONS: ReadonlySet<string> = new Set([
  // sequences: write, and currval/lastval read this session's state
  'nextval',
  'setval',
  'currval',
  'lastval',
  // session state and notifications
  'set_config',
  'setseed',
  'pg_notify',
  'pg_export_snapshot',
  // a transaction id is assigned on the primary only
  'txid_current',
  'txid_current_if_assigned',
  'pg_current_xact_id',
  'pg_current_xact_id_if_assigned',
  // large objects: writes, and descriptors that live in one transaction
  'lowrite',
  'loread',
  // server administration that targets one node
  'pg_promote',
  'pg_switch_wal',
  'pg_switch_xlog',
  'pg_reload_conf',
  'pg_rotate_logfile',
  'pg_log_standby_snapshot',
  'pg_terminate_backend',
  'pg_cancel_backend',
  'pg_backup_start',
  'pg_backup_stop',
  'pg_start_backup',
  'pg_stop_backup',
  'pg_walfile_name',
  'pg_walfile_name_offset',
  'pg_import_system_collations',
  'pg_truncate_visibility_map',
  'pg_sync_replication_slots',
  // index maintenance
  'brin_summarize_new_values',
  'brin_summarize_range',
  'brin_desummarize_range',
  'gin_clean_pending_list',
])

/** Families matched by prefix, so that new members are writes too. */
export const BUILTIN_WRITE_FUNCTION_PREFIXES: readonly string[] = [
  'pg_advisory_', // pg_advisory_lock, _xact_lock, _unlock, _unlock_all, ... (they work on a standby!)
  'pg_try_advisory_',
  'lo_', // lo_create, lo_import, lo_export, lo_unlink, lo_put, lo_from_bytea, lo_open, ... (not lo_get)
  'pg_create_', // pg_create_{physical,logical}_replication_slot, pg_create_restore_point
  'pg_drop_', // pg_drop_replication_slot
  'pg_copy_', // pg_copy_{physical,logical}_replication_slot
  'pg_replication_slot_', // pg_replication_slot_advance
  'pg_replication_origin_',
  'pg_logical_', // pg_logical_slot_get_changes consumes, pg_logical_emit_message writes WAL
  'pg_current_wal_', // primary-only (an error on a standby)
  'pg_current_xlog_',
  'pg_wal_replay_', // replica-only: pausing a random replica is never what was meant
  'pg_xlog_replay_',
  'pg_stat_reset', // pg_stat_reset, pg_stat_reset_shared, ... (per node)
  'pg_stat_statements_reset',
  'pg_file_', // adminpack: pg_file_write, pg_file_unlink, ...
  'pg_set_', // pg_set_relation_stats, ...
  'pg_clear_',
  'pg_restore_',
  'dblink', // dblink_exec writes remotely; dblink_connect keeps a named connection in the session
]

/** `lo_get` only reads, and works on a standby. */
const READ_ONLY_EXCEPTIONS: ReadonlySet<string> = new Set(['lo_get'])

/** Leading keywords of the statements that can be reads. */
const QUERY_STARTERS: ReadonlySet<string> = new Set(['select', 'values', 'table', 'with'])

/** `EXPLAIN ANALYZE VERBOSE q`: the options of the old syntax. */
const EXPLAIN_WORDS: ReadonlySet<string> = new Set(['analyze', 'analyse', 'verbose'])

/** Leading keywords that name their statement in the reason; other leading words: 'unknown statement'. */
const KNOWN_WRITE_STARTERS: ReadonlySet<string> = new Set([
  'insert',
  'update',
  'delete',
  'merge',
  'upsert',
  'create',
  'alter',
  'drop',
  'truncate',
  'comment',
  'grant',
  'revoke',
  'reindex',
  'cluster',
  'security',
  'import',
  'vacuum',
  'analyze',
  'analyse',
  'refresh',
  'checkpoint',
  'set',
  'reset',
  'discard',
  'listen',
  'unlisten',
  'notify',
  'lock',
  'call',
  'do',
  'prepare',
  'execute',
  'deallocate',
  'declare',
  'fetch',
  'move',
  'close',
  'load',
  'reassign',
  'copy',
])

/** Words that matter inside a read candidate, looked up once per word. */
const W_FOR = 1
const W_INTO = 2
const W_DML = 3
const W_TEMP = 4
const SPECIAL_WORDS: ReadonlyMap<string, number> = new Map([
  ['for', W_FOR],
  ['into', W_INTO],
  ['insert', W_DML],
  ['update', W_DML],
  ['delete', W_DML],
  ['merge', W_DML],
  ['pg_temp', W_TEMP],
])

// Lexer punctuation tokens are shared objects: identity comparison is the cheapest test.
const LPAREN = punctToken('(')
const RPAREN = punctToken(')')
const DOT = punctToken('.')
const SEMICOLON = punctToken(';')

/** Compiled `writeFunctions`: bare name -> schemas ('' = any schema). */
type UserFunctions = ReadonlyMap<string, ReadonlySet<string>>

type Verdict = Classification

const read = (reason: string): Verdict => ({ kind: 'read', reason })
const write = (reason: string): Verdict => ({ kind: 'write', reason })

function isWord(t: Token | undefined, word: string): boolean {
  return t !== undefined && t.type === 'word' && t.text === word
}

function compileWriteFunctions(names: readonly string[] | undefined): UserFunctions {
  const map = new Map<string, Set<string>>()
  for (const entry of names ?? []) {
    const clean = entry.trim().replaceAll('"', '').toLowerCase()
    if (clean === '') continue
    const dot = clean.lastIndexOf('.')
    const name = clean.slice(dot + 1)
    const schema = dot < 0 ? '' : clean.slice(0, dot)
    let schemas = map.get(name)
    if (schemas === undefined) {
      schemas = new Set()
      map.set(name, schemas)
    }
    schemas.add(schema)
  }
  return map
}

function isWriteFunction(name: string, schema: string | undefined, user: UserFunctions): boolean {
  if (BUILTIN_WRITE_FUNCTIONS.has(name)) return true
  // Every prefix starts with 'pg_', 'lo_' or 'dblink': skip the loop for count(), coalesce(), ...
  const c = name.charCodeAt(0)
  if ((c === 0x70 /* p */ || c === 0x6c /* l */ || c === 0x64) /* d */ && !READ_ONLY_EXCEPTIONS.has(name)) {
    for (const prefix of BUILTIN_WRITE_FUNCTION_PREFIXES) if (name.startsWith(prefix)) return true
  }
  if (user.size === 0) return false
  const schemas = user.get(name)
  if (schemas === undefined) return false
  // An unqualified call may resolve to any schema on the search_path; a qualified one must match.
  return schemas.has('') || schema === undefined || schemas.has(schema)
}

function lockingReason(next: Token | undefined): string | undefined {
  if (next === undefined || next.type !== 'word') return undefined
  switch (next.text) {
    case 'update':
      return 'FOR UPDATE'
    case 'share':
      return 'FOR SHARE'
    case 'no':
      return 'FOR NO KEY UPDATE'
    case 'key':
      return 'FOR KEY SHARE'
    default:
      return undefined
  }
}

/**
 * Look through a read candidate, at every depth, for anything that makes it a write.
 * Returns undefined when nothing is found.
 */
function findWrite(
  tokens: readonly Token[],
  start: number,
  end: number,
  user: UserFunctions,
): Verdict | undefined {
  let depth = 0
  for (let i = start; i < end; i++) {
    const t = tokens[i]!
    const type = t.type
    if (type === 'punct') {
      if (t === LPAREN) depth++
      else if (t === RPAREN && --depth < 0) return write('unbalanced parentheses')
      continue
    }
    let name: string
    if (type === 'word') {
      name = t.text
      switch (SPECIAL_WORDS.get(name)) {
        case undefined:
          break
        case W_FOR: {
          const lock = lockingReason(tokens[i + 1])
          if (lock !== undefined) return write(lock)
          break
        }
        case W_INTO:
          return write('SELECT INTO')
        case W_DML: {
          // `t.update` is a column and `AS update` an alias; anywhere else the word starts a statement.
          const prev = tokens[i - 1]
          if (prev !== DOT && !isWord(prev, 'as'))
            return write(depth > 0 ? 'writing CTE' : name.toUpperCase())
          break
        }
        case W_TEMP:
          return write('temp table')
      }
    } else if (type === 'qident') {
      // Quoted names are case-sensitive to the server; lower-casing can only add writes.
      name = t.text.toLowerCase()
      if (name === 'pg_temp') return write('temp table')
    } else {
      continue
    }
    // Temporary tables exist only in the session that created them (on the primary).
    if (name.startsWith('pg_temp_')) return write('temp table')
    if (tokens[i + 1] === LPAREN) {
      let schema: string | undefined
      const qualifier = tokens[i - 2]
      if (tokens[i - 1] === DOT && qualifier !== undefined) {
        if (qualifier.type === 'word') schema = qualifier.text
        else if (qualifier.type === 'qident') schema = qualifier.text.toLowerCase()
      }
      if (isWriteFunction(name, schema, user)) return write(`function ${name}`)
    }
  }
  if (depth !== 0) return write('unbalanced parentheses')
  return undefined
}

/** Index after the `)` matching the `(` at `open`, or -1. */
function skipParens(tokens: readonly Token[], open: number, end: number): number {
  let depth = 0
  for (let i = open; i < end; i++) {
    const t = tokens[i]
    if (t === LPAREN) depth++
    else if (t === RPAREN && --depth === 0) return i + 1
  }
  return -1
}

/** `... AND CHAIN` keeps the session in a (new) transaction. */
function endsWithChain(tokens: readonly Token[], start: number, end: number): boolean {
  for (let i = start; i < end - 1; i++) {
    if (isWord(tokens[i], 'and') && isWord(tokens[i + 1], 'chain')) return true
  }
  return false
}

function transactionControl(
  tokens: readonly Token[],
  start: number,
  end: number,
): Pick<Classification, 'reason' | 'transactionControl'> | undefined {
  const first = tokens[start]
  if (first === undefined || first.type !== 'word') return undefined
  const second = tokens[start + 1]
  switch (first.text) {
    case 'begin':
      return { reason: 'BEGIN', transactionControl: 'begin' }
    case 'start':
      return isWord(second, 'transaction')
        ? { reason: 'START TRANSACTION', transactionControl: 'begin' }
        : undefined
    case 'commit':
    case 'end':
      if (isWord(second, 'prepared')) return { reason: 'COMMIT PREPARED', transactionControl: 'other' }
      return {
        reason: first.text.toUpperCase(),
        transactionControl: endsWithChain(tokens, start, end) ? 'other' : 'commit',
      }
    case 'rollback':
    case 'abort': {
      if (isWord(second, 'prepared')) return { reason: 'ROLLBACK PREPARED', transactionControl: 'other' }
      const toSavepoint = tokens.slice(start + 1, end).some((t) => isWord(t, 'to'))
      if (toSavepoint) return { reason: 'ROLLBACK TO SAVEPOINT', transactionControl: 'other' }
      return {
        reason: first.text.toUpperCase(),
        transactionControl: endsWithChain(tokens, start, end) ? 'other' : 'rollback',
      }
    }
    case 'savepoint':
      return { reason: 'SAVEPOINT', transactionControl: 'other' }
    case 'release':
      return { reason: 'RELEASE', transactionControl: 'other' }
    case 'prepare':
      return isWord(second, 'transaction')
        ? { reason: 'PREPARE TRANSACTION', transactionControl: 'other' }
        : undefined
    case 'set':
      return isWord(second, 'transaction')
        ? { reason: 'SET TRANSACTION', transactionControl: 'other' }
        : undefined
    default:
      return undefined
  }
}

/** `EXPLAIN [ ( options ) | ANALYZE | VERBOSE ...] statement`: the statement decides. */
function classifyExplain(tokens: readonly Token[], start: number, end: number, user: UserFunctions): Verdict {
  let i = start + 1
  const next = tokens[i + 1]
  // `EXPLAIN (SELECT 1)` explains a parenthesized query; `EXPLAIN (ANALYZE, ...) q` has an option list.
  if (tokens[i] === LPAREN && next !== LPAREN && !(next?.type === 'word' && QUERY_STARTERS.has(next.text))) {
    i = skipParens(tokens, i, end)
    if (i < 0) return write('unbalanced parentheses')
  }
  for (let t = tokens[i]; t?.type === 'word' && EXPLAIN_WORDS.has(t.text); t = tokens[++i]) {
    // skip the unparenthesized options
  }
  const inner = classifyStatement(tokens, i, end, user)
  return inner.kind === 'read' ? read('EXPLAIN') : write(`EXPLAIN ${inner.reason}`)
}

/** `COPY table [(cols)] TO STDOUT ...` and `COPY (query) TO STDOUT ...` are reads; nothing else is. */
function classifyCopy(tokens: readonly Token[], start: number, end: number, user: UserFunctions): Verdict {
  let i = start + 1
  if (tokens[i] === LPAREN) {
    const close = skipParens(tokens, i, end)
    if (close < 0) return write('unbalanced parentheses')
    const inner = classifyStatement(tokens, i + 1, close - 1, user)
    if (inner.kind !== 'read') return write(`COPY ${inner.reason}`)
    i = close
  } else {
    if (isWord(tokens[i], 'binary')) i++
    // [schema.]table, each part a word or a quoted identifier
    for (;;) {
      const part = tokens[i]
      if (part === undefined || (part.type !== 'word' && part.type !== 'qident')) return write('COPY')
      i++
      if (tokens[i] !== DOT) break
      i++
    }
    if (tokens[i] === LPAREN) {
      i = skipParens(tokens, i, end)
      if (i < 0) return write('unbalanced parentheses')
    }
  }
  if (isWord(tokens[i], 'from')) return write('COPY FROM')
  if (!isWord(tokens[i], 'to')) return write('COPY')
  if (!isWord(tokens[i + 1], 'stdout')) return write('COPY TO file')
  const found = findWrite(tokens, start, end, user)
  return found ?? read('COPY TO STDOUT')
}

/** Classify the single statement tokens[start, end). */
function classifyStatement(
  tokens: readonly Token[],
  start: number,
  end: number,
  user: UserFunctions,
): Verdict {
  let i = start
  while (i < end && tokens[i] === LPAREN) i++
  const first = tokens[i]
  if (i >= end || first === undefined) return write('empty statement')
  if (first.type !== 'word') return write('unknown statement')
  const keyword = first.text
  if (QUERY_STARTERS.has(keyword)) {
    return findWrite(tokens, start, end, user) ?? read(keyword.toUpperCase())
  }
  // Only queries may open with parentheses.
  if (i !== start) return write('unknown statement')
  switch (keyword) {
    case 'show':
      return findWrite(tokens, start, end, user) ?? read('SHOW')
    case 'explain':
      return classifyExplain(tokens, start, end, user)
    case 'copy':
      return classifyCopy(tokens, start, end, user)
  }
  const tx = transactionControl(tokens, start, end)
  if (tx !== undefined) return { kind: 'write', ...tx }
  return write(KNOWN_WRITE_STARTERS.has(keyword) ? keyword.toUpperCase() : 'unknown statement')
}

function isSchemaStatement(tokens: readonly Token[], start: number): boolean {
  const first = tokens[start]
  return first !== undefined && first.type === 'word' && SCHEMA_STARTERS.has(first.text)
}

/** Classify one lexing of the text: statements split at `;`, the hint, lexer errors. */
function classifyLexed(sql: string, backslashEscapes: boolean, user: UserFunctions): Verdict {
  const lexed = lexSql(sql, { backslashEscapes, marker: PRIMARY_HINT })
  if (lexed.error !== undefined) return write(lexed.error)
  const tokens = lexed.tokens
  // The first non-empty statement, and whether another one follows (`SELECT 1;` and `;;` are one).
  let start = 0
  while (start < tokens.length && tokens[start] === SEMICOLON) start++
  let end = start
  while (end < tokens.length && tokens[end] !== SEMICOLON) end++
  let more = end
  while (more < tokens.length && tokens[more] === SEMICOLON) more++
  let verdict: Verdict
  if (start === tokens.length) {
    verdict = write('empty statement')
  } else if (more === tokens.length) {
    verdict = classifyStatement(tokens, start, end, user)
  } else {
    verdict = write('multi-statement')
    // Report the first transaction-control statement, and whether the string ends outside a
    // transaction block: `BEGIN; ...; COMMIT` runs as pg.Pool runs it, a bare `BEGIN; ...` would
    // leave a pooled connection inside a transaction.
    let open = false
    for (let s = start; s < tokens.length; ) {
      let e = s
      while (e < tokens.length && tokens[e] !== SEMICOLON) e++
      if (e > s) {
        const tx = transactionControl(tokens, s, e)
        if (tx !== undefined) {
          verdict.transactionControl ??= tx.transactionControl
          if (tx.transactionControl === 'begin') open = true
          else if (tx.transactionControl === 'commit' || tx.transactionControl === 'rollback') open = false
        }
        if (isSchemaStatement(tokens, s)) verdict.schemaChange = true
      }
      s = e + 1
    }
    if (verdict.transactionControl !== undefined) verdict.balanced = !open
  }
  if (more === tokens.length && start < tokens.length && isSchemaStatement(tokens, start)) {
    verdict = { ...verdict, schemaChange: true }
  }
  if (lexed.markerInComment) {
    verdict = { ...verdict, kind: 'write', reason: `hint ${PRIMARY_HINT}` }
  }
  if (verdict.kind === 'read' && lexed.backslashInPlainString && !backslashEscapes) {
    // With standard_conforming_strings = off the same text may end its strings elsewhere.
    const other = classifyLexed(sql, true, user)
    if (other.kind !== 'read') return write(`backslash in string: ${other.reason}`)
  }
  return verdict
}

const NO_USER_FUNCTIONS: UserFunctions = new Map()
const compiledOptions = new WeakMap<readonly string[], UserFunctions>()

function userFunctionsOf(options: ClassifyOptions | undefined): UserFunctions {
  const names = options?.writeFunctions
  if (names === undefined || names.length === 0) return NO_USER_FUNCTIONS
  let compiled = compiledOptions.get(names)
  if (compiled === undefined) {
    compiled = compileWriteFunctions(names)
    compiledOptions.set(names, compiled)
  }
  return compiled
}

/**
 * Classify one SQL text, without a cache. Prefer a {@link StatementClassifier} on hot paths.
 *
 * @example
 * ```ts
 * classify(`SELECT 'DELETE FROM t'`)                       // { kind: 'read', reason: 'SELECT' }
 * classify('WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d') // write, 'writing CTE'
 * classify('SELECT audit.touch($1)', { writeFunctions: ['audit.touch'] }) // write, 'function touch'
 * ```
 */
export function classify(sql: string, options?: ClassifyOptions): Classification {
  return classifyLexed(sql, false, userFunctionsOf(options))
}

/**
 * Whether a comment of `sql` (not a string, not a quoted name) contains `pgsplit:primary`.
 *
 * @example
 * ```ts
 * hasPrimaryHint('/* pgsplit:primary *\/ SELECT 1') // true
 * hasPrimaryHint(`SELECT '/* pgsplit:primary *\/'`)  // false
 * ```
 */
export function hasPrimaryHint(sql: string): boolean {
  if (!sql.toLowerCase().includes(PRIMARY_HINT)) return false
  return lexSql(sql, { marker: PRIMARY_HINT }).markerInComment
}

interface CacheEntry {
  readonly result: Classification
  /** Value of the insertion counter when the entry was last (re)inserted. */
  tick: number
}

/**
 * Classifies statements and remembers the answers per SQL text.
 *
 * The cache is a `Map` in insertion order: when full, the oldest entry goes. A hit moves its entry to the
 * young end only when it has drifted into the older half, so hot statements stay and most hits cost one
 * `Map.get`. Texts longer than {@link MAX_CACHED_SQL_LENGTH} are classified each time. `cacheSize: 0`
 * disables caching (and with it what {@link StatementClassifier.markWrite} learns).
 *
 * @example
 * ```ts
 * const classifier = new StatementClassifier({ cacheSize: 10_000 })
 * classifier.classify('SELECT * FROM users WHERE id = $1').kind // 'read'
 * // a replica answered 25006 (read-only transaction): it was a write after all
 * classifier.markWrite('SELECT my_volatile_fn()', 'replica rejected (25006)')
 * classifier.classify('SELECT my_volatile_fn()').kind // 'write'
 * ```
 */
export class StatementClassifier {
  /** Most SQL texts remembered at once. */
  readonly maxCacheSize: number
  readonly #user: UserFunctions
  readonly #cache = new Map<string, CacheEntry>()
  #tick = 0

  constructor(options: ClassifyOptions & { cacheSize?: number } = {}) {
    const size = options.cacheSize ?? DEFAULT_CACHE_SIZE
    if (!Number.isInteger(size) || size < 0) {
      throw new RangeError(`cacheSize must be a non-negative integer, got ${String(size)}`)
    }
    this.maxCacheSize = size
    this.#user = compileWriteFunctions(options.writeFunctions)
  }

  /** Classify `sql`, from the cache when it was seen before. The result is frozen and shared. */
  classify(sql: string): Classification {
    const hit = this.#cache.get(sql)
    if (hit !== undefined) {
      if (this.#tick - hit.tick > this.maxCacheSize >> 1) {
        this.#cache.delete(sql)
        hit.tick = ++this.#tick
        this.#cache.set(sql, hit)
      }
      return hit.result
    }
    const result = Object.freeze(classifyLexed(sql, false, this.#user))
    if (sql.length <= MAX_CACHED_SQL_LENGTH) this.#store(sql, result)
    return result
  }

  /**
   * Remember `sql` as a write from now on (after a replica rejected it with 25006, read-only transaction).
   * Whatever its length; it keeps a transactionControl already known.
   */
  markWrite(sql: string, reason = 'marked write'): void {
    const known = this.#cache.get(sql)?.result ?? classifyLexed(sql, false, this.#user)
    const result: Classification = { kind: 'write', reason }
    if (known.transactionControl !== undefined) result.transactionControl = known.transactionControl
    this.#cache.delete(sql)
    this.#store(sql, Object.freeze(result))
  }

  /** Number of SQL texts cached now (at most {@link StatementClassifier.maxCacheSize}). */
  get cacheSize(): number {
    return this.#cache.size
  }

  #store(sql: string, result: Classification): void {
    if (this.maxCacheSize === 0) return
    if (this.#cache.size >= this.maxCacheSize) {
      const oldest = this.#cache.keys().next()
      if (oldest.done !== true) this.#cache.delete(oldest.value)
    }
    this.#cache.set(sql, { result, tick: ++this.#tick })
  }
}
