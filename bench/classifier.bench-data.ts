/**
 * A realistic mix of statements for benchmarking the classifier: what a web backend sends through an
 * ORM or query builder (Kysely-style lower-case SQL with quoted identifiers and $n parameters), plus
 * hand-written reports, a job queue and a few admin statements. About four reads for one write, as in a
 * typical read-heavy service. Each entry carries the expected kind, which the unit tests check.
 *
 * @example
 * ```ts
 * import { classifierBenchStatements } from './classifier.bench-data.js'
 * for (const sql of classifierBenchStatements) classifier.classify(sql)
 * ```
 */

import type { StatementKind } from '../src/router/classify.js'

export interface BenchStatement {
  readonly sql: string
  readonly kind: StatementKind
}

export const classifierBenchData: readonly BenchStatement[] = [
  // --- reads: query-builder output
  {
    sql: 'select "users"."id", "users"."email", "users"."name" from "users" where "users"."id" = $1',
    kind: 'read',
  },
  { sql: 'select * from "users" where "email" = $1 limit $2', kind: 'read' },
  {
    sql: 'select "posts".*, "users"."name" as "author_name" from "posts" inner join "users" on "users"."id" = "posts"."author_id" where "posts"."published" = $1 order by "posts"."created_at" desc limit $2 offset $3',
    kind: 'read',
  },
  { sql: 'select count(*) as "count" from "posts" where "author_id" = $1', kind: 'read' },
  {
    sql: 'select "id", "title" from "posts" where "id" in ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)',
    kind: 'read',
  },
  {
    sql: 'select exists (select 1 from "memberships" where "user_id" = $1 and "org_id" = $2) as "exists"',
    kind: 'read',
  },
  {
    sql: 'select "orders"."id", "orders"."total", json_agg(json_build_object(\'sku\', "items"."sku", \'qty\', "items"."qty")) as "items" from "orders" left join "order_items" as "items" on "items"."order_id" = "orders"."id" where "orders"."customer_id" = $1 group by "orders"."id" order by "orders"."id" desc limit 20',
    kind: 'read',
  },
  { sql: 'select * from "sessions" where "token" = $1 and "expires_at" > now()', kind: 'read' },
  {
    sql: 'select "tags"."name", count("post_tags"."post_id") as "uses" from "tags" join "post_tags" on "post_tags"."tag_id" = "tags"."id" group by "tags"."name" having count("post_tags"."post_id") > $1 order by "uses" desc',
    kind: 'read',
  },
  {
    sql: 'select "id", "payload"->>\'type\' as "type" from "events" where "payload" @> $1::jsonb and "created_at" >= $2 order by "created_at" limit 100',
    kind: 'read',
  },
  { sql: 'SELECT id, name, price FROM products WHERE category_id = $1 AND deleted_at IS NULL', kind: 'read' },
  { sql: 'SELECT * FROM products WHERE name ILIKE $1 ORDER BY name LIMIT 50', kind: 'read' },
  {
    sql: "SELECT p.id, p.name, coalesce(sum(s.qty), 0) AS sold FROM products p LEFT JOIN sales s ON s.product_id = p.id AND s.sold_at > now() - interval '30 days' GROUP BY p.id ORDER BY sold DESC LIMIT 10",
    kind: 'read',
  },
  {
    sql: "SELECT to_char(created_at, 'YYYY-MM') AS month, count(*) FROM orders WHERE status <> 'cancelled' GROUP BY 1 ORDER BY 1",
    kind: 'read',
  },
  {
    sql: `WITH recent AS (
  SELECT customer_id, max(created_at) AS last_order
  FROM orders
  GROUP BY customer_id
)
SELECT c.id, c.email, r.last_order
FROM customers c
JOIN recent r ON r.customer_id = c.id
WHERE r.last_order < now() - interval '90 days'
ORDER BY r.last_order
LIMIT 500`,
    kind: 'read',
  },
  {
    sql: `-- dashboard: revenue per day
SELECT date_trunc('day', paid_at) AS day, sum(amount_cents) / 100.0 AS revenue
FROM payments
WHERE paid_at >= $1 AND paid_at < $2 /* half-open range */
GROUP BY 1
ORDER BY 1`,
    kind: 'read',
  },
  {
    sql: 'WITH RECURSIVE tree AS (SELECT id, parent_id, name, 1 AS depth FROM categories WHERE id = $1 UNION ALL SELECT c.id, c.parent_id, c.name, t.depth + 1 FROM categories c JOIN tree t ON c.parent_id = t.id) SELECT * FROM tree ORDER BY depth, name',
    kind: 'read',
  },
  {
    sql: 'SELECT u.id, u.name, rank() OVER (PARTITION BY u.team_id ORDER BY u.score DESC) AS r FROM users u WHERE u.active',
    kind: 'read',
  },
  { sql: 'SELECT 1', kind: 'read' },
  { sql: 'select now()', kind: 'read' },
  { sql: 'SELECT version()', kind: 'read' },
  { sql: 'SELECT pg_is_in_recovery()', kind: 'read' },
  { sql: 'SHOW search_path', kind: 'read' },
  {
    sql: "SELECT * FROM audit_log WHERE action = 'DELETE' AND table_name = $1 ORDER BY id DESC LIMIT 100",
    kind: 'read',
  },
  {
    sql: "SELECT id FROM documents WHERE to_tsvector('english', body) @@ plainto_tsquery('english', $1) ORDER BY ts_rank(to_tsvector('english', body), plainto_tsquery('english', $1)) DESC LIMIT 20",
    kind: 'read',
  },
  {
    sql: 'SELECT "t0"."id", "t0"."email", "t1"."role" FROM "public"."User" AS "t0" LEFT JOIN "public"."Membership" AS "t1" ON ("t1"."userId") = ("t0"."id") WHERE ("t0"."id" = $1 AND 1=1) LIMIT $2 OFFSET $3',
    kind: 'read',
  },
  { sql: '(SELECT id FROM a WHERE x = $1) UNION ALL (SELECT id FROM b WHERE y = $1)', kind: 'read' },
  { sql: 'VALUES (1, $1), (2, $2)', kind: 'read' },
  { sql: 'TABLE feature_flags', kind: 'read' },
  { sql: 'EXPLAIN SELECT * FROM orders WHERE customer_id = 42', kind: 'read' },
  { sql: 'COPY (SELECT id, email FROM users ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)', kind: 'read' },
  {
    sql: 'SELECT id, status FROM jobs WHERE queue = $1 AND run_at <= now() ORDER BY priority DESC, id LIMIT 10',
    kind: 'read',
  },
  { sql: 'SELECT "nextval", "update" FROM "sequence_report" WHERE "for" = $1', kind: 'read' },
  { sql: "SELECT $$ INSERT INTO t VALUES (1) $$ AS snippet, 'FOR UPDATE' AS note", kind: 'read' },
  {
    sql: 'SELECT a.id, b.total FROM accounts a JOIN LATERAL (SELECT sum(amount) AS total FROM ledger l WHERE l.account_id = a.id) b ON true WHERE a.org_id = $1',
    kind: 'read',
  },
  {
    sql: 'select "id", "name", "created_at" from "projects" where "org_id" = $1 and "archived" = false and ("name" ilike $2 or "description" ilike $2) order by "updated_at" desc limit $3',
    kind: 'read',
  },
  { sql: 'select max("version") as "version" from "schema_migrations"', kind: 'read' },
  {
    sql: 'SELECT id FROM notifications WHERE user_id = $1 AND read_at IS NULL ORDER BY created_at DESC FETCH FIRST 20 ROWS ONLY',
    kind: 'read',
  },
  { sql: "SELECT current_setting('server_version_num')::int", kind: 'read' },
  {
    sql: 'SELECT p.*, array_agg(t.name ORDER BY t.name) FILTER (WHERE t.name IS NOT NULL) AS tags FROM posts p LEFT JOIN post_tags pt ON pt.post_id = p.id LEFT JOIN tags t ON t.id = pt.tag_id WHERE p.id = ANY($1::int[]) GROUP BY p.id',
    kind: 'read',
  },
  { sql: 'select * from "users" where "id" = $1 /* pgsplit:primary */', kind: 'write' },

  // --- writes
  {
    sql: 'insert into "users" ("email", "name", "password_hash") values ($1, $2, $3) returning "id", "created_at"',
    kind: 'write',
  },
  { sql: 'update "users" set "last_login_at" = $1 where "id" = $2', kind: 'write' },
  { sql: 'delete from "sessions" where "expires_at" < $1', kind: 'write' },
  {
    sql: 'insert into "post_views" ("post_id", "day", "views") values ($1, $2, 1) on conflict ("post_id", "day") do update set "views" = "post_views"."views" + 1',
    kind: 'write',
  },
  {
    sql: "UPDATE jobs SET status = 'running', started_at = now() WHERE id = (SELECT id FROM jobs WHERE status = 'queued' ORDER BY priority DESC, id FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING *",
    kind: 'write',
  },
  { sql: 'SELECT * FROM accounts WHERE id = $1 FOR UPDATE', kind: 'write' },
  { sql: 'SELECT pg_advisory_xact_lock($1)', kind: 'write' },
  { sql: "SELECT nextval('invoice_number_seq')", kind: 'write' },
  {
    sql: "WITH moved AS (DELETE FROM inbox WHERE processed_at < now() - interval '7 days' RETURNING *) INSERT INTO inbox_archive SELECT * FROM moved",
    kind: 'write',
  },
  {
    sql: 'MERGE INTO stock s USING deliveries d ON s.sku = d.sku WHEN MATCHED THEN UPDATE SET qty = s.qty + d.qty WHEN NOT MATCHED THEN INSERT (sku, qty) VALUES (d.sku, d.qty)',
    kind: 'write',
  },
  { sql: 'BEGIN', kind: 'write' },
  { sql: 'COMMIT', kind: 'write' },
  { sql: "SELECT set_config('app.user_id', $1, false)", kind: 'write' },
  { sql: 'CREATE TEMP TABLE import_rows (id int, payload jsonb) ON COMMIT DROP', kind: 'write' },
  { sql: 'COPY import_rows FROM STDIN WITH (FORMAT csv)', kind: 'write' },
  { sql: "NOTIFY cache_invalidate, 'users'", kind: 'write' },
  {
    sql: "SELECT id INTO TEMP recent_ids FROM orders WHERE created_at > now() - interval '1 hour'",
    kind: 'write',
  },
  { sql: 'REFRESH MATERIALIZED VIEW CONCURRENTLY daily_stats', kind: 'write' },
]

/** The SQL texts alone, in order. */
export const classifierBenchStatements: readonly string[] = classifierBenchData.map((s) => s.sql)
