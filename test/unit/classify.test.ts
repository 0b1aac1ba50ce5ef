import { loadModule, parseSync } from 'libpg-query'
import { beforeAll, describe, expect, it } from 'vitest'
import { classifierBenchData } from '../../bench/classifier.bench-data.js'
import type { Classification, StatementKind } from '../../src/router/classify.js'
import {
  BUILTIN_WRITE_FUNCTION_PREFIXES,
  BUILTIN_WRITE_FUNCTIONS,
  classify,
  hasPrimaryHint,
  MAX_CACHED_SQL_LENGTH,
  PRIMARY_HINT,
  StatementClassifier,
} from '../../src/router/classify.js'
import { lexSql } from '../../src/router/sql-lexer.js'

/** [sql, expected kind, expected reason (optional)] */
type Case = readonly [sql: string, kind: StatementKind, reason?: string]

const cases: readonly Case[] = [
  // --- plain reads, mixed case, leading parentheses / whitespace / comments
  ['SELECT 1', 'read', 'SELECT'],
  ['select * from t where id = $1', 'read', 'SELECT'],
  ['SeLeCt a, b FrOm T', 'read'],
  ['   \n\t SELECT 1', 'read'],
  ['-- leading comment\nSELECT 1', 'read'],
  ['/* leading */ /* two */ SELECT 1', 'read'],
  ['(SELECT 1) UNION (SELECT 2)', 'read', 'SELECT'],
  ['((SELECT 1))', 'read'],
  ['(SELECT id FROM a) EXCEPT (SELECT id FROM b) ORDER BY 1', 'read'],
  ['(VALUES (1), (2))', 'read', 'VALUES'],
  ['(WITH x AS (SELECT 1 AS a) SELECT a FROM x)', 'read', 'WITH'],
  ['VALUES (1, 2), (3, 4)', 'read', 'VALUES'],
  ['values (1) order by 1', 'read'],
  ['TABLE t', 'read', 'TABLE'],
  ['TABLE ONLY public.t', 'read'],
  ['SHOW search_path', 'read', 'SHOW'],
  ['SHOW ALL', 'read'],
  ['show transaction isolation level', 'read'],
  ['SELECT 1;', 'read'],
  ['SELECT 1; ', 'read'],
  ['SELECT 1;;', 'read'],
  [';SELECT 1', 'read'],
  ['SELECT 1; -- trailing comment', 'read'],
  ['SELECT 1; /* trailing */ ', 'read'],
  ['SELECT count(*) FROM orders WHERE customer_id = $1 GROUP BY status HAVING count(*) > 1', 'read'],
  ['SELECT a.id FROM a JOIN LATERAL (SELECT * FROM b WHERE b.a_id = a.id LIMIT 1) bb ON true', 'read'],
  ['SELECT rank() OVER (PARTITION BY team ORDER BY score DESC) FROM players', 'read'],
  ['SELECT array_agg(x ORDER BY x) FILTER (WHERE x > 0) FROM t', 'read'],
  ['SELECT * FROM t ORDER BY id FETCH FIRST 10 ROWS ONLY', 'read'],
  ['SELECT * FROM t ORDER BY id OFFSET 5 ROWS FETCH NEXT 5 ROWS WITH TIES', 'read'],
  ['SELECT substring(name FROM 1 FOR 3) FROM t', 'read'],
  ['SELECT overlay(name PLACING $1 FROM 2 FOR 3) FROM t', 'read'],
  ['SELECT 1 FOR READ ONLY', 'read'],
  ['SELECT CAST(x AS varchar(10)), y::numeric(10, 2) FROM t', 'read'],
  ['SELECT 1.5e10, .5, 0x1F, 1_000, 2E-3', 'read'],
  ['SELECT * FROM t WHERE a IN (SELECT b FROM u WHERE u.c = t.c) AND EXISTS (SELECT 1 FROM v)', 'read'],
  ['SELECT pg_is_in_recovery(), now(), current_setting($1), pg_sleep(0.1)', 'read'],
  ['SELECT lo_get(16401)', 'read'],
  ['SELECT pg_last_wal_replay_lsn(), txid_current_snapshot()', 'read'],
  ['SELECT x$$ FROM t', 'read'],
  ['SELECT "ünïcode", \'ü\' FROM t', 'read'],
  ['SELECT * FROM t GROUP BY GROUPING SETS ((a), (b), ())', 'read'],
  ['SELECT * FROM t TABLESAMPLE SYSTEM (10)', 'read'],
  ["SELECT jsonb_path_query(doc, '$.a[*] ? (@ > 1)') FROM docs", 'read'],

  // --- WITH without writes
  ['WITH x AS (SELECT 1 AS a) SELECT a FROM x', 'read', 'WITH'],
  ['WITH x AS MATERIALIZED (SELECT 1) SELECT * FROM x', 'read'],
  ['WITH x AS NOT MATERIALIZED (SELECT 1), y AS (SELECT 2) SELECT * FROM x, y', 'read'],
  [
    'WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 10) SELECT sum(n) FROM t',
    'read',
  ],
  [
    'WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 5) CYCLE n SET is_cycle USING path SELECT * FROM t',
    'read',
  ],
  ['WITH x AS (SELECT 1) TABLE x', 'read'],
  ['WITH x AS (VALUES (1)) SELECT * FROM x', 'read'],

  // --- strings, comments, dollar quotes and quoted identifiers must not fool it
  ["SELECT 'DELETE FROM t'", 'read', 'SELECT'],
  ["SELECT 'it''s; DELETE FROM t'", 'read'],
  ["SELECT * FROM audit WHERE action = 'UPDATE' OR action = 'INSERT'", 'read'],
  ["SELECT 'SELECT nextval(''s'')'", 'read'],
  ["SELECT E'\\' ; DELETE FROM t'", 'read'],
  ["SELECT e'line\\nnext'", 'read'],
  ["SELECT E'\\\\'", 'read'],
  ["SELECT U&'\\0041; DELETE'", 'read'],
  ["SELECT B'101', X'1F', N'FOR UPDATE'", 'read'],
  ["SELECT 'C:\\path'", 'read'],
  ["SELECT '\\\\'", 'read'],
  ['SELECT $$ DELETE FROM t; $$', 'read'],
  ['SELECT $body$ $$ ; DELETE $$ FOR UPDATE $body$', 'read'],
  ["SELECT $a$ it's $a$, $b$ nextval('s') $b$", 'read'],
  ['SELECT $1, $2::text, $10', 'read'],
  ['SELECT 1 -- ; DELETE FROM t', 'read'],
  ['SELECT 1 -- FOR UPDATE\n', 'read'],
  ['SELECT 1 /* ; DELETE FROM t */', 'read'],
  ['SELECT * FROM t /* FOR /* nested */ UPDATE */', 'read'],
  ['SELECT * FROM t /* a /* b /* c */ */ ; DELETE */', 'read'],
  ['SELECT 2*/**/3', 'read'],
  ['SELECT "FOR UPDATE" FROM t', 'read'],
  ['SELECT "nextval" FROM t', 'read'],
  ['SELECT nextval FROM t', 'read'],
  ['SELECT "delete", "update", "insert", "into" FROM t', 'read'],
  ['SELECT t.update, t.delete, t.merge FROM t', 'read'],
  ['SELECT 1 AS update, 2 AS delete', 'read'],
  ['SELECT "for" FROM t WHERE "update" = 1', 'read'],
  ['SELECT delete_flag, update_time, insert_id, for_update, into_x FROM t', 'read'],
  ['SELECT "a""b" FROM t', 'read'],
  ['SELECT U&"\\0061" FROM t', 'read'],
  ['SELECT "pgsplit:primary" FROM t', 'read'],
  ["SELECT '/* pgsplit:primary */'", 'read'],
  ['SELECT $$ -- pgsplit:primary $$', 'read'],

  // --- EXPLAIN
  ['EXPLAIN SELECT * FROM t', 'read', 'EXPLAIN'],
  ['EXPLAIN ANALYZE SELECT * FROM t', 'read'],
  ['EXPLAIN ANALYZE VERBOSE SELECT 1', 'read'],
  ['EXPLAIN VERBOSE SELECT 1', 'read'],
  ['EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM t', 'read'],
  ['EXPLAIN (SELECT 1)', 'read'],
  ['EXPLAIN (ANALYZE) (SELECT 1)', 'read'],
  ['EXPLAIN WITH x AS (SELECT 1) SELECT * FROM x', 'read'],
  ['EXPLAIN DELETE FROM t', 'write', 'EXPLAIN DELETE'],
  ['EXPLAIN ANALYZE DELETE FROM t WHERE id = 1', 'write', 'EXPLAIN DELETE'],
  ['EXPLAIN (ANALYZE true, FORMAT json) UPDATE t SET a = 1', 'write', 'EXPLAIN UPDATE'],
  ['EXPLAIN ANALYZE VERBOSE INSERT INTO t VALUES (1)', 'write', 'EXPLAIN INSERT'],
  ['EXPLAIN SELECT * FROM t FOR UPDATE', 'write', 'EXPLAIN FOR UPDATE'],
  ["EXPLAIN ANALYZE SELECT nextval('s')", 'write', 'EXPLAIN function nextval'],
  ['EXPLAIN EXECUTE p(1)', 'write', 'EXPLAIN EXECUTE'],
  ['EXPLAIN CREATE TABLE x AS SELECT 1', 'write', 'EXPLAIN CREATE'],
  ['EXPLAIN ANALYZE WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d', 'write', 'EXPLAIN writing CTE'],

  // --- COPY
  ['COPY t TO STDOUT', 'read', 'COPY TO STDOUT'],
  ['COPY t (a, b) TO STDOUT WITH (FORMAT csv, HEADER)', 'read'],
  ['copy public.t to stdout', 'read'],
  ['COPY "Sch"."T" TO STDOUT', 'read'],
  ['COPY BINARY t TO STDOUT', 'read'],
  ['COPY (SELECT * FROM t WHERE a > 1) TO STDOUT', 'read', 'COPY TO STDOUT'],
  ['COPY (SELECT 1) TO STDOUT (FORMAT binary)', 'read'],
  ['COPY t FROM STDIN', 'write', 'COPY FROM'],
  ["COPY t FROM '/tmp/t.csv' WITH (FORMAT csv)", 'write', 'COPY FROM'],
  ["COPY t TO '/tmp/t.csv'", 'write', 'COPY TO file'],
  ["COPY (SELECT 1) TO '/tmp/x'", 'write', 'COPY TO file'],
  ["COPY t TO PROGRAM 'gzip > /tmp/t.gz'", 'write', 'COPY TO file'],
  ['COPY t TO STDIN', 'write', 'COPY TO file'],
  ['COPY (DELETE FROM t RETURNING *) TO STDOUT', 'write', 'COPY DELETE'],
  ['COPY (SELECT * FROM t FOR UPDATE) TO STDOUT', 'write', 'COPY FOR UPDATE'],
  ["COPY (SELECT nextval('s')) TO STDOUT", 'write', 'COPY function nextval'],

  // --- DML
  ['INSERT INTO t (a) VALUES (1)', 'write', 'INSERT'],
  ['insert into t select * from u', 'write', 'INSERT'],
  ['UPDATE t SET a = 1 WHERE id = $1', 'write', 'UPDATE'],
  ['DELETE FROM t WHERE id = $1', 'write', 'DELETE'],
  ['MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a', 'write', 'MERGE'],
  ['INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = excluded.a', 'write', 'INSERT'],
  ['UPSERT INTO t VALUES (1)', 'write', 'UPSERT'],
  ['  /* c */ (DELETE FROM t)', 'write'],

  // --- writing CTEs, at any depth, and WITH leading a write
  ['WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x', 'write', 'writing CTE'],
  ['WITH x AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM x', 'write', 'writing CTE'],
  ['WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT count(*) FROM x', 'write', 'writing CTE'],
  ['WITH x AS MATERIALIZED (update t set a = 1 returning *) SELECT 1', 'write', 'writing CTE'],
  ['WITH a AS (SELECT 1), b AS (DELETE FROM t RETURNING *) SELECT * FROM a', 'write', 'writing CTE'],
  ['WITH a AS (WITH b AS (SELECT 1) DELETE FROM t RETURNING *) SELECT * FROM a', 'write', 'writing CTE'],
  [
    'WITH m AS (MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE RETURNING *) SELECT * FROM m',
    'write',
    'writing CTE',
  ],
  ['WITH x AS (SELECT 1) DELETE FROM t', 'write', 'DELETE'],
  ['WITH x AS (SELECT 1 AS a) INSERT INTO t SELECT a FROM x', 'write', 'INSERT'],
  [
    'WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 5) CYCLE n SET is_cycle USING path DELETE FROM x',
    'write',
    'DELETE',
  ],
  ['SELECT count(*) delete FROM t', 'write'],

  // --- locking clauses at any depth
  ['SELECT * FROM t FOR UPDATE', 'write', 'FOR UPDATE'],
  ['select * from t for update skip locked', 'write', 'FOR UPDATE'],
  ['SELECT * FROM t FOR NO KEY UPDATE', 'write', 'FOR NO KEY UPDATE'],
  ['SELECT * FROM t FOR SHARE OF t NOWAIT', 'write', 'FOR SHARE'],
  ['SELECT * FROM t FOR KEY SHARE', 'write', 'FOR KEY SHARE'],
  ['SELECT * FROM t FOR/**/UPDATE', 'write', 'FOR UPDATE'],
  ['SELECT * FROM t FOR\n  -- why not\n  UPDATE', 'write', 'FOR UPDATE'],
  ['SELECT * FROM (SELECT * FROM t FOR UPDATE) s', 'write', 'FOR UPDATE'],
  ['SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = t.id FOR SHARE)', 'write', 'FOR SHARE'],
  ['WITH x AS (SELECT * FROM t FOR UPDATE) SELECT * FROM x', 'write', 'FOR UPDATE'],
  ['(SELECT * FROM t FOR UPDATE) UNION ALL (SELECT * FROM u)', 'write', 'FOR UPDATE'],

  // --- SELECT INTO (creates a table)
  ['SELECT * INTO new_t FROM t', 'write', 'SELECT INTO'],
  ['SELECT id INTO TEMP recent FROM t', 'write', 'SELECT INTO'],
  ['select a into unlogged x from t', 'write', 'SELECT INTO'],
  ["SELECT 'INTO' FROM t", 'read'],

  // --- functions that write or hold session state
  ["SELECT nextval('s')", 'write', 'function nextval'],
  ["SELECT NEXTVAL('s')", 'write', 'function nextval'],
  ["SELECT nextval ('s')", 'write', 'function nextval'],
  ["SELECT nextval/* gap */('s')", 'write', 'function nextval'],
  ["SELECT pg_catalog.nextval('s')", 'write', 'function nextval'],
  ["SELECT pg_catalog . nextval ('s')", 'write', 'function nextval'],
  ['SELECT "pg_catalog"."nextval"(\'s\')', 'write', 'function nextval'],
  ['SELECT "nextval"(\'s\')', 'write', 'function nextval'],
  ['SELECT U&"\\006Eextval"(\'s\')', 'write', 'function nextval'],
  ["SELECT * FROM nextval('s')", 'write', 'function nextval'],
  ["VALUES (nextval('s'))", 'write', 'function nextval'],
  ["SELECT setval('s', 10)", 'write', 'function setval'],
  ["SELECT currval('s')", 'write', 'function currval'],
  ['SELECT lastval()', 'write', 'function lastval'],
  ['SELECT pg_advisory_lock(1)', 'write', 'function pg_advisory_lock'],
  ['SELECT pg_advisory_xact_lock(1, 2)', 'write'],
  ['SELECT pg_advisory_unlock_all()', 'write'],
  ['SELECT pg_try_advisory_xact_lock_shared(42)', 'write', 'function pg_try_advisory_xact_lock_shared'],
  ["SELECT set_config('app.user', $1, false)", 'write', 'function set_config'],
  ["SELECT pg_notify('ch', 'payload')", 'write', 'function pg_notify'],
  ['SELECT txid_current()', 'write', 'function txid_current'],
  ['SELECT txid_current_if_assigned()', 'write'],
  ['SELECT pg_current_xact_id()', 'write', 'function pg_current_xact_id'],
  ['SELECT lo_create(0)', 'write', 'function lo_create'],
  ["SELECT lo_import('/tmp/x')", 'write'],
  ['SELECT lo_unlink(16401)', 'write'],
  ["SELECT lo_put(16401, 0, '\\x00')", 'write'],
  ["SELECT lo_from_bytea(0, '\\xdeadbeef')", 'write'],
  ['SELECT lo_open(16401, 131072)', 'write'],
  ["SELECT lowrite(0, 'x')", 'write', 'function lowrite'],
  ['SELECT pg_promote()', 'write', 'function pg_promote'],
  ["SELECT pg_create_physical_replication_slot('s')", 'write'],
  ["SELECT * FROM pg_create_logical_replication_slot('s', 'pgoutput')", 'write'],
  ['SELECT pg_switch_wal()', 'write'],
  ['SELECT pg_reload_conf()', 'write'],
  ['SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1', 'write'],
  ['SELECT pg_cancel_backend(123)', 'write'],
  ["SELECT dblink_exec('conn', 'DELETE FROM t')", 'write', 'function dblink_exec'],
  ["SELECT * FROM dblink('conn', 'SELECT 1') AS r(a int)", 'write'],
  ['SELECT pg_current_wal_lsn()', 'write', 'function pg_current_wal_lsn'],
  ['SELECT pg_wal_replay_pause()', 'write'],
  ['SELECT setseed(0.5)', 'write'],
  ['SELECT pg_stat_reset()', 'write'],
  ["SELECT pg_logical_emit_message(true, 'p', 'm')", 'write'],
  ["SELECT count(*) FROM t WHERE id = nextval('s')", 'write'],
  ['SELECT coalesce(max(id), 0) + 1, (SELECT pg_advisory_lock(7))', 'write'],

  // --- temporary tables live in one session on the primary
  ['SELECT * FROM pg_temp.t', 'write', 'temp table'],
  ['SELECT * FROM "pg_temp".t', 'write', 'temp table'],
  ['SELECT * FROM pg_temp_3.t', 'write', 'temp table'],
  ['CREATE TEMP TABLE x (a int)', 'write', 'CREATE'],

  // --- multi-statement strings
  ['SELECT 1; SELECT 2', 'write', 'multi-statement'],
  ['SELECT 1; DELETE FROM t', 'write', 'multi-statement'],
  ["SELECT 'a'; SELECT 'b';", 'write', 'multi-statement'],
  ["SELECT ';'; SELECT 1", 'write', 'multi-statement'],
  ["SELECT 'a\\'; DELETE FROM t; --'", 'write', 'multi-statement'],
  // with standard_conforming_strings = off the first string would end elsewhere: both readings must agree
  ["SELECT '\\''; DELETE FROM t; --'", 'write', 'backslash in string: multi-statement'],

  // --- cursors (session state, primary-pinned transaction)
  ['DECLARE c CURSOR FOR SELECT * FROM t', 'write', 'DECLARE'],
  ['DECLARE c CURSOR WITH HOLD FOR SELECT 1', 'write', 'DECLARE'],
  ['FETCH 10 FROM c', 'write', 'FETCH'],
  ['fetch next in c', 'write', 'FETCH'],
  ['MOVE FORWARD 5 IN c', 'write', 'MOVE'],
  ['CLOSE c', 'write', 'CLOSE'],
  ['CLOSE ALL', 'write', 'CLOSE'],

  // --- session state, DDL, maintenance
  ['LOCK TABLE t IN ACCESS SHARE MODE', 'write', 'LOCK'],
  ['CALL do_things(1)', 'write', 'CALL'],
  ['DO $$ BEGIN PERFORM 1; END $$', 'write', 'DO'],
  ['CREATE TABLE t (id int)', 'write', 'CREATE'],
  ['ALTER TABLE t ADD COLUMN a int', 'write', 'ALTER'],
  ['DROP TABLE t', 'write', 'DROP'],
  ['TRUNCATE t', 'write', 'TRUNCATE'],
  ["COMMENT ON TABLE t IS 'SELECT'", 'write', 'COMMENT'],
  ['GRANT SELECT ON t TO app', 'write', 'GRANT'],
  ['REVOKE SELECT ON t FROM app', 'write', 'REVOKE'],
  ['REINDEX TABLE t', 'write', 'REINDEX'],
  ['CLUSTER t USING t_pkey', 'write', 'CLUSTER'],
  ["SECURITY LABEL ON TABLE t IS 'x'", 'write', 'SECURITY'],
  ['IMPORT FOREIGN SCHEMA s FROM SERVER srv INTO local_s', 'write', 'IMPORT'],
  ['VACUUM ANALYZE t', 'write', 'VACUUM'],
  ['ANALYZE t', 'write', 'ANALYZE'],
  ['REFRESH MATERIALIZED VIEW CONCURRENTLY mv', 'write', 'REFRESH'],
  ['CHECKPOINT', 'write', 'CHECKPOINT'],
  ['SET search_path = app, public', 'write', 'SET'],
  ['SET LOCAL statement_timeout = 1000', 'write', 'SET'],
  ['RESET ALL', 'write', 'RESET'],
  ['DISCARD ALL', 'write', 'DISCARD'],
  ['LISTEN jobs', 'write', 'LISTEN'],
  ['UNLISTEN *', 'write', 'UNLISTEN'],
  ["NOTIFY jobs, 'x'", 'write', 'NOTIFY'],
  ['PREPARE q AS SELECT 1', 'write', 'PREPARE'],
  ['EXECUTE q', 'write', 'EXECUTE'],
  ['DEALLOCATE q', 'write', 'DEALLOCATE'],
  ["LOAD 'auto_explain'", 'write', 'LOAD'],

  // --- the hint
  ['/* pgsplit:primary */ SELECT 1', 'write', 'hint pgsplit:primary'],
  ['SELECT * FROM t -- pgsplit:primary', 'write', 'hint pgsplit:primary'],
  ['SELECT /*PGSPLIT:PRIMARY*/ 1', 'write', 'hint pgsplit:primary'],
  ['SELECT 1 /* route: pgsplit:primary, because fresh */', 'write', 'hint pgsplit:primary'],

  // --- things the lexer cannot close or does not know: writes
  ['', 'write', 'empty statement'],
  ['   \n ', 'write', 'empty statement'],
  ['-- only a comment', 'write', 'empty statement'],
  [';', 'write', 'empty statement'],
  ["SELECT 'unterminated", 'write', 'unterminated string'],
  ['SELECT "unterminated', 'write', 'unterminated quoted identifier'],
  ['SELECT $$unterminated', 'write', 'unterminated dollar-quoted string'],
  ['SELECT 1 /* unterminated', 'write', 'unterminated comment'],
  ["SELECT E'\\'", 'write', 'unterminated string'],
  ['\\d t', 'write', 'backslash outside a string'],
  ['SELECT (1', 'write', 'unbalanced parentheses'],
  ['SELECT 1)', 'write', 'unbalanced parentheses'],
  ['foo bar', 'write', 'unknown statement'],
  ['"select" 1', 'write', 'unknown statement'],
  ['123', 'write', 'unknown statement'],
  ["SELECT\u00a0nextval('s')", 'write'],
  ["SELECT 1nextval('s')", 'write', 'function nextval'],
]

describe('classify: table of statements', () => {
  it('has at least 150 statements', () => {
    expect(cases.length).toBeGreaterThanOrEqual(150)
  })

  for (const [sql, kind, reason] of cases) {
    it(`${JSON.stringify(sql)} -> ${kind}`, () => {
      const result = classify(sql)
      expect(result.kind).toBe(kind)
      if (reason !== undefined) expect(result.reason).toBe(reason)
      expect(result.transactionControl).toBeUndefined()
    })
  }
})

describe('classify: transaction control', () => {
  const txCases: readonly [string, NonNullable<Classification['transactionControl']>][] = [
    ['BEGIN', 'begin'],
    ['begin;', 'begin'],
    ['BEGIN ISOLATION LEVEL SERIALIZABLE', 'begin'],
    ['BEGIN READ ONLY', 'begin'],
    ['START TRANSACTION', 'begin'],
    ['START TRANSACTION READ ONLY, DEFERRABLE', 'begin'],
    ['/* c */ BEGIN WORK', 'begin'],
    ['COMMIT', 'commit'],
    ['COMMIT WORK', 'commit'],
    ['END', 'commit'],
    ['END TRANSACTION', 'commit'],
    ['COMMIT AND NO CHAIN', 'commit'],
    ['COMMIT AND CHAIN', 'other'],
    ['ROLLBACK', 'rollback'],
    ['ABORT', 'rollback'],
    ['rollback work', 'rollback'],
    ['ROLLBACK AND CHAIN', 'other'],
    ['ROLLBACK TO SAVEPOINT s1', 'other'],
    ['ROLLBACK TO s1', 'other'],
    ['SAVEPOINT s1', 'other'],
    ['RELEASE SAVEPOINT s1', 'other'],
    ['RELEASE s1', 'other'],
    ["PREPARE TRANSACTION 'gid'", 'other'],
    ["COMMIT PREPARED 'gid'", 'other'],
    ["ROLLBACK PREPARED 'gid'", 'other'],
    ['SET TRANSACTION ISOLATION LEVEL REPEATABLE READ', 'other'],
    ['BEGIN; UPDATE t SET a = 1; COMMIT', 'begin'],
    ['UPDATE t SET a = 1; COMMIT', 'commit'],
    ['/* pgsplit:primary */ BEGIN', 'begin'],
  ]

  it.each(txCases)('%j -> %s', (sql, tx) => {
    const result = classify(sql)
    expect(result.kind).toBe('write')
    expect(result.transactionControl).toBe(tx)
  })

  it('names the statement in the reason', () => {
    expect(classify('START TRANSACTION')).toEqual({
      kind: 'write',
      reason: 'START TRANSACTION',
      transactionControl: 'begin',
    })
    expect(classify('BEGIN; SELECT 1; COMMIT')).toEqual({
      kind: 'write',
      reason: 'multi-statement',
      transactionControl: 'begin',
      balanced: true,
    })
  })

  it('tells balanced transaction strings (pg.Pool runs them on one connection) from ones left open', () => {
    for (const sql of [
      'BEGIN; INSERT INTO t VALUES (1); COMMIT;',
      'BEGIN; INSERT INTO t VALUES (1); COMMIT',
      'START TRANSACTION; UPDATE t SET a = 1; COMMIT',
      'BEGIN; DELETE FROM t; ROLLBACK;',
      'BEGIN; SELECT 1; END',
      'begin; savepoint a; rollback to savepoint a; commit;',
      'BEGIN; INSERT INTO t VALUES (1); COMMIT; BEGIN; SELECT 1; ABORT;',
    ]) {
      expect(classify(sql).balanced, sql).toBe(true)
    }
    for (const sql of [
      'BEGIN; INSERT INTO t VALUES (1)',
      'BEGIN; INSERT INTO t VALUES (1);',
      'COMMIT; BEGIN',
      'BEGIN; COMMIT AND CHAIN',
      'BEGIN; SELECT 1; ROLLBACK TO SAVEPOINT a',
      "SELECT 1; BEGIN; SELECT 'COMMIT'",
    ]) {
      expect(classify(sql).balanced, sql).toBe(false)
    }
    // A single transaction-control statement is never "balanced": it is refused on a pool.
    expect(classify('BEGIN').balanced).toBeUndefined()
    expect(classify('COMMIT').balanced).toBeUndefined()
  })

  it('marks schema changes (every later read must see the catalog)', () => {
    for (const sql of [
      'CREATE TABLE t (a int)',
      'alter table t add b int',
      'DROP INDEX i',
      'select 1; create index i on t (a)',
      'GRANT SELECT ON t TO r',
    ]) {
      expect(classify(sql).schemaChange, sql).toBe(true)
    }
    for (const sql of ['INSERT INTO t VALUES (1)', "SELECT 'CREATE TABLE x'", 'TRUNCATE t', 'VACUUM t']) {
      expect(classify(sql).schemaChange, sql).toBeUndefined()
    }
  })

  it('leaves statements that merely contain the words alone', () => {
    for (const sql of [
      'SET search_path = x',
      'PREPARE p AS SELECT 1',
      'DO $$ BEGIN PERFORM 1; END $$',
      "SELECT 'BEGIN'",
    ]) {
      expect(classify(sql).transactionControl).toBeUndefined()
    }
  })
})

describe('classify: writeFunctions', () => {
  const options = { writeFunctions: ['touch_user', 'audit.log_access', '"Billing".Charge'] }
  const fnCases: readonly [string, StatementKind][] = [
    ['SELECT touch_user($1)', 'write'],
    ['SELECT app.touch_user($1)', 'write'],
    ['SELECT "touch_user"($1)', 'write'],
    ['SELECT TOUCH_USER($1)', 'write'],
    ['SELECT touch_user FROM t', 'read'],
    ["SELECT 'touch_user(1)'", 'read'],
    ['SELECT audit.log_access()', 'write'],
    ['SELECT "audit"."log_access"()', 'write'],
    ['SELECT log_access()', 'write'],
    ['SELECT other.log_access()', 'read'],
    ['SELECT billing.charge(1)', 'write'],
    ['SELECT charge(1)', 'write'],
    ['SELECT x FROM t WHERE touch_user_count(x) > 1', 'read'],
  ]

  it.each(fnCases)('%j -> %s', (sql, kind) => {
    expect(classify(sql, options).kind).toBe(kind)
    expect(new StatementClassifier(options).classify(sql).kind).toBe(kind)
  })

  it('gives the function in the reason', () => {
    expect(classify('SELECT audit.log_access()', options).reason).toBe('function log_access')
  })

  it('without the option the same statements are reads', () => {
    expect(classify('SELECT touch_user($1)').kind).toBe('read')
  })
})

describe('hasPrimaryHint', () => {
  it('finds the hint in comments only', () => {
    expect(PRIMARY_HINT).toBe('pgsplit:primary')
    expect(hasPrimaryHint('/* pgsplit:primary */ SELECT 1')).toBe(true)
    expect(hasPrimaryHint('SELECT 1 -- PgSplit:Primary')).toBe(true)
    expect(hasPrimaryHint("SELECT '/* pgsplit:primary */'")).toBe(false)
    expect(hasPrimaryHint('SELECT "pgsplit:primary" FROM t')).toBe(false)
    expect(hasPrimaryHint('SELECT 1')).toBe(false)
  })
})

describe('StatementClassifier cache', () => {
  it('returns the cached object on a hit', () => {
    const classifier = new StatementClassifier()
    const first = classifier.classify('SELECT 1')
    expect(classifier.classify('SELECT 1')).toBe(first)
    expect(classifier.cacheSize).toBe(1)
    expect(Object.isFrozen(first)).toBe(true)
  })

  it('defaults to 5000 entries and stays bounded', () => {
    expect(new StatementClassifier().maxCacheSize).toBe(5000)
    const classifier = new StatementClassifier({ cacheSize: 100 })
    for (let i = 0; i < 1000; i++) classifier.classify(`SELECT ${i}`)
    expect(classifier.cacheSize).toBe(100)
    // the oldest went first
    const recent = classifier.classify('SELECT 999')
    expect(classifier.classify('SELECT 999')).toBe(recent)
    expect(classifier.cacheSize).toBe(100)
  })

  it('keeps a statement that keeps being hit', () => {
    const classifier = new StatementClassifier({ cacheSize: 10 })
    const hot = classifier.classify('SELECT hot')
    for (let i = 0; i < 200; i++) {
      classifier.classify(`SELECT ${i}`)
      expect(classifier.classify('SELECT hot')).toBe(hot)
    }
    expect(classifier.cacheSize).toBe(10)
  })

  it('evicts a statement that is not hit again', () => {
    const classifier = new StatementClassifier({ cacheSize: 10 })
    const cold = classifier.classify('SELECT cold')
    for (let i = 0; i < 10; i++) classifier.classify(`SELECT ${i}`)
    expect(classifier.classify('SELECT cold')).not.toBe(cold)
  })

  it('does not cache long texts', () => {
    const classifier = new StatementClassifier()
    const long = `SELECT ${'1 + '.repeat(MAX_CACHED_SQL_LENGTH / 4)}1`
    expect(long.length).toBeGreaterThan(MAX_CACHED_SQL_LENGTH)
    expect(classifier.classify(long).kind).toBe('read')
    expect(classifier.cacheSize).toBe(0)
  })

  it('markWrite turns a read into a write, long texts included', () => {
    const classifier = new StatementClassifier()
    const sql = 'SELECT my_volatile_fn()'
    expect(classifier.classify(sql).kind).toBe('read')
    classifier.markWrite(sql, 'replica rejected (25006)')
    expect(classifier.classify(sql)).toEqual({ kind: 'write', reason: 'replica rejected (25006)' })

    const long = `SELECT ${'my_fn(1) + '.repeat(MAX_CACHED_SQL_LENGTH / 10)}1`
    classifier.markWrite(long)
    expect(classifier.classify(long)).toEqual({ kind: 'write', reason: 'marked write' })
    expect(classifier.cacheSize).toBe(2)
  })

  it('markWrite keeps the transaction control', () => {
    const classifier = new StatementClassifier()
    classifier.markWrite('BEGIN', 'x')
    expect(classifier.classify('BEGIN')).toEqual({ kind: 'write', reason: 'x', transactionControl: 'begin' })
  })

  it('cacheSize 0 disables the cache', () => {
    const classifier = new StatementClassifier({ cacheSize: 0 })
    const a = classifier.classify('SELECT 1')
    expect(classifier.classify('SELECT 1')).not.toBe(a)
    expect(classifier.classify('SELECT 1')).toEqual(a)
    expect(classifier.cacheSize).toBe(0)
  })

  it('rejects a bad cacheSize', () => {
    expect(() => new StatementClassifier({ cacheSize: -1 })).toThrow(RangeError)
    expect(() => new StatementClassifier({ cacheSize: 1.5 })).toThrow(RangeError)
  })

  it('agrees with classify()', () => {
    const classifier = new StatementClassifier()
    for (const [sql] of cases) {
      expect(classifier.classify(sql)).toEqual(classify(sql))
      expect(classifier.classify(sql)).toEqual(classify(sql))
    }
  })
})

describe('lexer', () => {
  it('drops comments and strings, keeps code', () => {
    const { tokens, error } = lexSql(`SELECT 'x', "Y" -- z\n FROM t /* w */`)
    expect(error).toBeUndefined()
    expect(tokens.map((t) => `${t.type}:${t.text}`)).toEqual([
      'word:select',
      'string:',
      'punct:,',
      'qident:Y',
      'word:from',
      'word:t',
    ])
  })

  it('lower-cases ASCII only', () => {
    // U+212A KELVIN SIGN lower-cases to "k" in Unicode, but not in PostgreSQL.
    expect(lexSql('SELEC\u212A').tokens[0]?.text).toBe('selec\u212a')
  })

  it('scans long texts in linear time', () => {
    const many = `SELECT ${Array.from({ length: 20_000 }, (_, i) => `'s${i}'`).join(', ')} -- \\`
    const t0 = performance.now()
    expect(classify(many).kind).toBe('read')
    expect(performance.now() - t0).toBeLessThan(1000)
  })
})

describe('bench data', () => {
  it.each(classifierBenchData.map((s) => [s.sql, s.kind] as const))('%j -> %s', (sql, kind) => {
    expect(classify(sql).kind).toBe(kind)
  })
})

// --- Cross-check with PostgreSQL's own parser (libpg-query, dev dependency only) -------------------------

type Json = null | boolean | number | string | Json[] | { [key: string]: Json }

function isObject(value: Json | undefined): value is { [key: string]: Json } {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function isBuiltinWrite(name: string): boolean {
  return (
    BUILTIN_WRITE_FUNCTIONS.has(name) ||
    (name !== 'lo_get' && BUILTIN_WRITE_FUNCTION_PREFIXES.some((prefix) => name.startsWith(prefix)))
  )
}

/** Every reason, found anywhere in the tree, that makes a statement not read-only. */
function writesInTree(node: Json | undefined, found: string[] = []): string[] {
  if (Array.isArray(node)) {
    for (const item of node) writesInTree(item, found)
    return found
  }
  if (!isObject(node)) return found
  for (const [key, value] of Object.entries(node)) {
    if (key === 'InsertStmt' || key === 'UpdateStmt' || key === 'DeleteStmt' || key === 'MergeStmt')
      found.push(key)
    if (key === 'lockingClause' && Array.isArray(value) && value.length > 0) found.push('locking clause')
    if (key === 'intoClause') found.push('INTO')
    if (key === 'schemaname' && typeof value === 'string' && value.startsWith('pg_temp'))
      found.push('pg_temp')
    if (key === 'FuncCall' && isObject(value) && Array.isArray(value.funcname)) {
      const last = value.funcname[value.funcname.length - 1]
      const name = isObject(last) && isObject(last.String) ? last.String.sval : undefined
      if (typeof name === 'string' && isBuiltinWrite(name.toLowerCase())) found.push(`function ${name}`)
    }
    writesInTree(value, found)
  }
  return found
}

/** Why libpg-query does not see `sql` as one read-only statement; undefined when it does. */
function whyNotRead(sql: string): string | undefined {
  const parsed = JSON.parse(JSON.stringify(parseSync(sql))) as Json
  const stmts = isObject(parsed) && Array.isArray(parsed.stmts) ? parsed.stmts : []
  if (stmts.length !== 1) return `${stmts.length} statements`
  const raw = stmts[0]
  const stmt = isObject(raw) && isObject(raw.stmt) ? raw.stmt : {}
  const [kind] = Object.keys(stmt)
  const body = kind === undefined ? undefined : stmt[kind]
  switch (kind) {
    case 'SelectStmt':
    case 'VariableShowStmt':
    case 'ExplainStmt':
      break
    case 'CopyStmt':
      if (
        !isObject(body) ||
        body.is_from === true ||
        body.filename !== undefined ||
        body.is_program === true
      ) {
        return 'COPY that is not TO STDOUT'
      }
      break
    default:
      return kind ?? 'no statement'
  }
  const writes = writesInTree(body)
  return writes.length > 0 ? writes.join(', ') : undefined
}

/** Statements built from pieces that try to fool a lexer; many parse, many do not. */
function generatedStatements(): string[] {
  const heads = [
    'SELECT',
    'SELECT DISTINCT',
    '(SELECT',
    'WITH w AS (SELECT 1) SELECT',
    'EXPLAIN SELECT',
    'EXPLAIN ANALYZE SELECT',
  ]
  const items = [
    '1',
    "'DELETE FROM t'",
    "E'\\' FOR UPDATE'",
    "'a\\'",
    '$$ ; DELETE FROM t $$',
    '$q$ nextval(1) $q$',
    '"nextval"',
    '"nextval"(\'s\')',
    "nextval('s')",
    "pg_catalog.setval('s', 1)",
    'pg_advisory_lock(1)',
    'lo_get(1)',
    'count(*)',
    'x.update',
    '1 AS delete',
    '(SELECT 1 FOR UPDATE)',
    "U&'\\0041'",
    'U&"\\006Eextval"(1)',
    '1 /* ; DELETE */',
    "'--' || 'x'",
  ]
  const tails = [
    '',
    ' FROM t',
    ' FROM t FOR UPDATE',
    ' FROM t FOR KEY SHARE',
    ' FROM t -- FOR UPDATE',
    ' FROM t /* FOR UPDATE */',
    ' INTO x FROM t',
    '; DELETE FROM t',
    ';',
    ' FROM pg_temp.t',
    ' FROM (DELETE FROM t RETURNING *) d',
    ' FROM t WHERE a = $1',
  ]
  const out: string[] = []
  for (const head of heads) {
    for (const item of items) {
      for (const tail of tails) {
        const close = head.startsWith('(') ? ')' : ''
        out.push(`${head} ${item}${tail}${close}`)
      }
    }
  }
  return out
}

describe('cross-check with libpg-query', () => {
  beforeAll(async () => {
    await loadModule()
  })

  it('has a checker that sees writes', () => {
    expect(whyNotRead('SELECT 1')).toBeUndefined()
    expect(whyNotRead('SELECT * FROM t FOR UPDATE')).toBe('locking clause')
    expect(whyNotRead('WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d')).toBe('DeleteStmt')
    expect(whyNotRead("SELECT pg_catalog.nextval('s')")).toBe('function nextval')
    expect(whyNotRead('SELECT 1 INTO x')).toBe('INTO')
    expect(whyNotRead('SELECT * FROM pg_temp.t')).toBe('pg_temp')
    expect(whyNotRead('COPY t FROM STDIN')).toBe('COPY that is not TO STDOUT')
    expect(whyNotRead('SELECT 1; SELECT 2')).toBe('2 statements')
    expect(whyNotRead('BEGIN')).toBe('TransactionStmt')
  })

  it('parses every read of the table as one read-only statement', () => {
    const reads = [...cases.map(([sql]) => sql), ...classifierBenchData.map((s) => s.sql)].filter(
      (sql) => classify(sql).kind === 'read',
    )
    expect(reads.length).toBeGreaterThan(80)
    const wrong = reads.map((sql) => [sql, whyNotRead(sql)]).filter(([, why]) => why !== undefined)
    expect(wrong).toEqual([])
  })

  it('never calls read what the parser sees writing (generated statements)', () => {
    const statements = generatedStatements()
    let parsedReads = 0
    const wrong: [string, string][] = []
    for (const sql of statements) {
      if (classify(sql).kind !== 'read') continue
      let why: string | undefined
      try {
        why = whyNotRead(sql)
      } catch {
        // The server rejects it before running anything: harmless on a replica.
        continue
      }
      parsedReads++
      if (why !== undefined) wrong.push([sql, why])
    }
    expect(wrong).toEqual([])
    // enough of them are valid SQL for the check to mean something
    expect(statements.length).toBeGreaterThan(1000)
    expect(parsedReads).toBeGreaterThan(100)
  })
})
