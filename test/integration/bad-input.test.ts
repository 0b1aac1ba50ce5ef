import net from 'node:net'
import type { FastifyInstance, InjectOptions } from 'fastify'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp, MAX_OFFSET } from '../../examples/fastify-app/app.js'
import {
  type Cluster,
  type ClusterConfig,
  ClusterEndedError,
  ConfigError,
  createCluster,
  InvalidTokenError,
  NoPrimaryError,
  NoReplicaAvailableError,
  PgsplitError,
} from '../../src/index.js'
import { startCluster, type TestCluster } from '../../src/testing/index.js'
import {
  adminQuery,
  eventually,
  expectNoLibraryConnections,
  timed,
  trackProcessErrors,
} from '../support/reliability.js'

// Bad input at run time: nodes that do not answer, SQL that fails, calls after end(), and a flood
// of failing queries. One local cluster for the whole file; the first block stops and restarts it.

const APP = 'pgsplit-bad-input'
/** The cluster's password: no error, response or message below may show it. */
const PASSWORD = 'Bad-Input-S3cret-pw'

/** Small bounds so failures show fast; every wait of the library is bounded by one of them. */
const FAST: Omit<ClusterConfig, 'primary' | 'replicas' | 'nodes'> = {
  healthCheck: { intervalMs: 200, timeoutMs: 500, maxBackoffMs: 500 },
  failover: { timeoutMs: 1_500, pollIntervalMs: 100 },
  pool: { connectionTimeoutMillis: 1_000, query_timeout: 10_000, application_name: APP },
}

/** Ports on 127.0.0.1 with nothing listening (taken, then released). */
async function deadPorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<net.Server>((resolve, reject) => {
          const server = net.createServer()
          server.once('error', reject)
          server.listen(0, '127.0.0.1', () => resolve(server))
        }),
    ),
  )
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port)
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))))
  return ports
}

function expectTyped(
  result: { ok: boolean; error?: unknown },
  ...classes: (new (
    ...a: never[]
  ) => Error)[]
): void {
  expect(result.ok, 'the call should fail').toBe(false)
  expect(result.error).toBeInstanceOf(PgsplitError)
  expect(
    classes.some((c) => result.error instanceof c),
    `${String(result.error)} should be one of ${classes.map((c) => c.name).join(', ')}`,
  ).toBe(true)
}

let pgc: TestCluster
const open: Cluster[] = []
const processErrors = trackProcessErrors()

function cluster(config: ClusterConfig): Cluster {
  const db = createCluster(config)
  open.push(db)
  return db
}

beforeAll(async () => {
  pgc = await startCluster({ backend: 'local', replicas: 2, password: PASSWORD })
  await adminQuery(pgc.primaryUrl, 'CREATE TABLE bad_input_t (id int PRIMARY KEY, v text)')
  await adminQuery(pgc.primaryUrl, "INSERT INTO bad_input_t VALUES (1, 'one')")
})

afterAll(async () => {
  await Promise.all(open.map((db) => db.end()))
  await pgc?.destroy()
  processErrors.dispose()
})

describe('nodes that do not answer', () => {
  it('createCluster succeeds; ready() and every kind of call fail with typed errors within their bounds', async () => {
    const [p, r1, r2] = await deadPorts(3)
    const url = (port: number | undefined) => `postgres://postgres:postgres@127.0.0.1:${port}/app`
    const db = cluster({ primary: url(p), replicas: [url(r1), url(r2)], ...FAST })

    const ready = await timed(db.ready({ timeoutMs: 1_000 }))
    expectTyped(ready, NoPrimaryError)
    expect(ready.ms).toBeLessThan(5_000)
    expect((ready.error as Error).message).toMatch(/ECONNREFUSED/)

    // failover.timeoutMs (1.5 s) bounds every wait for a primary; generous liveness bound below.
    const calls = await Promise.all([
      timed(() => db.query('INSERT INTO bad_input_t VALUES (2)')),
      timed(() => db.query('SELECT 1')),
      timed(() => db.primary.query('SELECT 1')),
      timed(() => db.replica.query('SELECT 1')),
      timed(() => db.connect()),
      timed(() => db.transaction(async (tx) => tx.query('SELECT 1'))),
    ])
    for (const call of calls) {
      expectTyped(call, NoPrimaryError)
      expect(call.ms).toBeLessThan(8_000)
    }
    const topology = db.topology()
    expect(topology.primary).toBeNull()
    expect(topology.searching).toBe(true)
    for (const node of topology.nodes) {
      expect(node.state).toBe('down')
      expect(node.lastError).toMatch(/ECONNREFUSED/)
    }
    expect(db.totalCount).toBe(0)
    expect((await timed(db.end())).ms).toBeLessThan(5_000)
  })

  it("reads fail with NoReplicaAvailableError under onNoReplica: 'error', role-less nodes with NoPrimaryError", async () => {
    const [a, b] = await deadPorts(2)
    const url = (port: number | undefined) => `postgres://postgres:postgres@127.0.0.1:${port}/app`
    const strict = cluster({ primary: url(a), replicas: [url(b)], onNoReplica: 'error', ...FAST })
    const read = await timed(() => strict.query('SELECT 1'))
    expectTyped(read, NoReplicaAvailableError)
    expect(read.ms).toBeLessThan(5_000)

    const roleless = cluster({ nodes: [url(a), url(b)], ...FAST })
    const write = await timed(() => roleless.query('INSERT INTO bad_input_t VALUES (2)'))
    expectTyped(write, NoPrimaryError)
    expect(write.ms).toBeLessThan(8_000)
    await Promise.all([strict.end(), roleless.end()])
  })

  it('a cluster created while its servers are down recovers by itself when they come up', async () => {
    await pgc.stop(1)
    await pgc.stop(2)
    await pgc.stop(0)
    const [primary, ...replicas] = pgc.nodes.map((n) => n.url)
    const db = cluster({ primary: primary!, replicas, ...FAST })

    const ready = await timed(db.ready({ timeoutMs: 1_000 }))
    expectTyped(ready, NoPrimaryError)
    expect(ready.ms).toBeLessThan(5_000)
    const write = await timed(() => db.query('INSERT INTO bad_input_t VALUES (3)'))
    expectTyped(write, NoPrimaryError)
    expect(write.ms).toBeLessThan(8_000)
    const read = await timed(() => db.query('SELECT v FROM bad_input_t WHERE id = 1'))
    expectTyped(read, NoPrimaryError)

    await pgc.start(0)
    await pgc.start(1)
    await pgc.start(2)

    // Nobody calls anything on `db` to help it: the monitor and discovery find the nodes again.
    await db.ready({ timeoutMs: 20_000 })
    await db.query('INSERT INTO bad_input_t VALUES (3)')
    const replicaPorts = new Set(pgc.nodes.slice(1).map((n) => n.port))
    await eventually(async () => {
      const topology = db.topology()
      expect(topology.primary).toBe(`127.0.0.1:${pgc.nodes[0]!.port}`)
      expect(topology.nodes.map((n) => n.state)).toEqual(['up', 'up', 'up'])
      const { rows } = await db.query<{ port: number }>('SELECT inet_server_port() AS port')
      expect(replicaPorts.has(rows[0]!.port)).toBe(true)
    }, 20_000)
    await db.end()
    expect(db.totalCount).toBe(0)
  })
})

/** The secret in every form a message could carry it. */
function expectNoPassword(...texts: string[]): void {
  for (const text of texts) {
    expect(text).not.toContain(PASSWORD)
    expect(text).not.toContain(encodeURIComponent(PASSWORD))
  }
}

describe('bad configs against real servers', () => {
  // Built from the running cluster's own URLs, so that what is refused differs from a working
  // config by exactly the mistake named.
  const withPassword = (url: string, password: string) =>
    url.replace(`:${encodeURIComponent(PASSWORD)}@`, `:${password}@`)
  const CASES: [string, () => ClusterConfig, string, RegExp][] = [
    [
      'a %ZZ escape in the password',
      () => ({ primary: withPassword(pgc.primaryUrl, `${PASSWORD}%ZZ`) }),
      'primary',
      /malformed %-escape in its password/,
    ],
    [
      'the same replica as localhost and 127.0.0.1',
      () => ({
        primary: pgc.primaryUrl,
        replicas: [pgc.replicaUrls[0]!, pgc.replicaUrls[0]!.replace('127.0.0.1', 'localhost')],
      }),
      'replicas[1]',
      /same server/,
    ],
    [
      'the primary again as [::1]',
      () => ({ nodes: [pgc.primaryUrl, ...pgc.replicaUrls, pgc.primaryUrl.replace('127.0.0.1', '[::1]')] }),
      'nodes[3]',
      /same server/,
    ],
    [
      'sslmode=bogus',
      () => ({ primary: `${pgc.primaryUrl}?sslmode=bogus` }),
      'primary?sslmode',
      /must be one of/,
    ],
    [
      "pool.ssl: 'yes'",
      () => ({ primary: pgc.primaryUrl, pool: { ssl: 'yes' as never } }),
      'pool.ssl',
      /got "yes"/,
    ],
    [
      'healthCheck.intervalMs of 2^31 ms',
      () => ({ primary: pgc.primaryUrl, healthCheck: { intervalMs: 2 ** 31 } }),
      'healthCheck.intervalMs',
      /got 2147483648/,
    ],
    [
      'connectionTimeoutMillis: false',
      () => ({ primary: pgc.primaryUrl, pool: { connectionTimeoutMillis: false as never } }),
      'pool.connectionTimeoutMillis',
      /wait forever/,
    ],
    [
      'a typo in a node object',
      () => ({ primary: pgc.primaryUrl, replicas: [{ url: pgc.replicaUrls[0]!, wieght: 2 } as never] }),
      'replicas[0].wieght',
      /did you mean weight/,
    ],
  ]
  it.each(CASES)('%s: ConfigError before any connection', (_what, config, field, problem) => {
    let thrown: unknown
    try {
      open.push(createCluster(config()))
    } catch (err) {
      thrown = err
    }
    expect(thrown).toBeInstanceOf(ConfigError)
    const err = thrown as ConfigError
    expect(err.field).toBe(field)
    expect(err.message).toMatch(problem)
    expectNoPassword(err.message, String(err.stack), JSON.stringify(err))
  })
})

describe('valid configs at the edges, on real servers', () => {
  it('classifierCacheSize: 0 (no cache) still routes reads to replicas and writes to the primary', async () => {
    const db = cluster({
      primary: pgc.primaryUrl,
      replicas: pgc.replicaUrls,
      classifierCacheSize: 0,
      ...FAST,
    })
    await db.ready({ timeoutMs: 20_000 })
    const replicaPorts = new Set(pgc.nodes.slice(1).map((n) => n.port))
    await eventually(async () => {
      const { rows } = await db.query<{ port: number }>('SELECT inet_server_port() AS port')
      expect(replicaPorts.has(rows[0]!.port)).toBe(true)
    })
    for (let i = 0; i < 3; i++) {
      const { rows } = await db.query<{ port: number }>(
        "INSERT INTO bad_input_t VALUES ($1, 'no cache') ON CONFLICT (id) DO UPDATE SET v = 'no cache' RETURNING inet_server_port() AS port",
        [100 + i],
      )
      expect(rows[0]!.port).toBe(pgc.nodes[0]!.port)
    }
    await db.end()
  })
})

describe('bad tokens and per-call options', () => {
  let db: Cluster
  beforeAll(async () => {
    db = cluster({ primary: pgc.primaryUrl, replicas: pgc.replicaUrls, ...FAST })
    await db.ready({ timeoutMs: 20_000 })
  })

  const TOKENS: [string, unknown][] = [
    ['garbage', 'garbage'],
    ['no timeline', '0/3000148'],
    ['timeline 0', '0:0/3000148'],
    ['not hex', '1:ZZ/1'],
    ['an empty string', ''],
    ['a very long token', `1:${'F'.repeat(1_000)}/1`],
    ['a URL with the password', `postgres://postgres:${PASSWORD}@127.0.0.1/app`],
  ]
  it.each(TOKENS)('after: %s -> InvalidTokenError naming the token, nothing sent', async (_what, token) => {
    const call = await timed(() => db.query('SELECT 1', { after: token as string }))
    expect(call.error).toBeInstanceOf(InvalidTokenError)
    expect((call.error as Error).message).toMatch(/write token/)
    expectNoPassword((call.error as Error).message)
  })

  it.each([
    ['2^31 ms (a timer would fire after 1 ms)', 2 ** 31],
    ['0', 0],
    ['text', '5s'],
  ])('ready({ timeoutMs: %s }) -> ConfigError naming ready().timeoutMs', async (_what, timeoutMs) => {
    const call = await timed(() => db.ready({ timeoutMs: timeoutMs as number }))
    expect(call.error).toBeInstanceOf(ConfigError)
    expect((call.error as ConfigError).field).toBe('ready().timeoutMs')
  })

  it('session(fn, { token }) with a bad token fails the same way', async () => {
    const call = await timed(() => db.session(() => db.query('SELECT 1'), { token: 'nope' }))
    expect(call.error).toBeInstanceOf(InvalidTokenError)
  })

  it.each([
    ['a mode name that does not exist', 'strong'],
    ['sticky without a window', { mode: 'sticky' }],
    ['a window beyond a timer', { mode: 'sticky', windowMs: 2 ** 31 }],
  ])('consistency override: %s -> ConfigError naming options.consistency', async (_what, consistency) => {
    const call = await timed(() => db.query('SELECT 1', { consistency: consistency as never }))
    expect(call.error).toBeInstanceOf(ConfigError)
    expect((call.error as ConfigError).field).toMatch(/^options\.consistency/)
  })

  it.each([
    ['a NUL in a parameter', 'SELECT $1::text', ['a\0b'], '22021'],
    ['an offset beyond bigint', 'SELECT 1 OFFSET $1', ['9223372036854775808'], '22003'],
    ['1e30 as a bigint', 'SELECT 1 OFFSET $1', [1e30], '22P02'],
  ])('%s: the server error reaches the caller unchanged (%s)', async (_what, sql, params, state) => {
    const call = await timed(() => db.query(sql, params))
    expect(call.error).toBeInstanceOf(pg.DatabaseError)
    expect((call.error as pg.DatabaseError).code).toBe(state)
  })
})

describe('the example app answers client input with 2xx or 4xx, never 5xx', () => {
  let app: FastifyInstance
  const json = (method: 'POST' | 'PUT' | 'PATCH', url: string, payload: unknown): InjectOptions => ({
    method,
    url,
    payload: JSON.stringify(payload),
    headers: { 'content-type': 'application/json' },
  })
  const raw = (method: 'POST', url: string, payload: string, type = 'application/json'): InjectOptions => ({
    method,
    url,
    payload,
    headers: { 'content-type': type },
  })
  const get = (url: string, headers: Record<string, string> = {}): InjectOptions => ({
    method: 'GET',
    url,
    headers,
  })

  beforeAll(async () => {
    const appDb = cluster({ primary: pgc.primaryUrl, replicas: pgc.replicaUrls, ...FAST })
    await appDb.ready({ timeoutMs: 20_000 })
    app = await buildApp({ cluster: appDb, migrate: true })
    await app.ready()
    // Client 1 holds the email the conflicts below ask for; client 2 is the one they change.
    for (const [i, name] of ['Taken', 'Second'].entries()) {
      const res = await app.inject(
        json('POST', '/clients', { name, email: `${name.toLowerCase()}@example.com` }),
      )
      expect(res.statusCode).toBe(201)
      expect(res.json()).toMatchObject({ id: i + 1 })
    }
  })
  afterAll(async () => {
    await app?.close()
  })

  const ok = { name: 'Ada', email: 'ada@example.com' }
  /** [what, request, status, what the body must say (the field named)] */
  const HTTP: [string, InjectOptions, number, RegExp][] = [
    // bodies
    ['NUL in name', json('POST', '/clients', { ...ok, name: 'a\0b' }), 400, /body\/name/],
    ['only a NUL as name', json('POST', '/clients', { ...ok, name: '\0' }), 400, /body\/name/],
    ['NUL in email', json('POST', '/clients', { ...ok, email: 'a\0@example.com' }), 400, /body\/email/],
    [
      'NUL in the email domain',
      json('POST', '/clients', { ...ok, email: 'a@exa\0mple.com' }),
      400,
      /body\/email/,
    ],
    ['name too long', json('POST', '/clients', { ...ok, name: 'x'.repeat(201) }), 400, /body\/name/],
    ['empty name', json('POST', '/clients', { ...ok, name: '' }), 400, /body\/name/],
    ['name null', json('POST', '/clients', { ...ok, name: null }), 400, /body\/name/],
    ['name an object', json('POST', '/clients', { ...ok, name: { $gt: '' } }), 400, /body\/name/],
    ['name an array of two', json('POST', '/clients', { ...ok, name: ['a', 'b'] }), 400, /body\/name/],
    ['email without @', json('POST', '/clients', { ...ok, email: 'nobody' }), 400, /body\/email/],
    [
      'email too long',
      json('POST', '/clients', { ...ok, email: `${'a'.repeat(320)}@x.y` }),
      400,
      /body\/email/,
    ],
    ['email missing', json('POST', '/clients', { name: 'Ada' }), 400, /email/],
    ['both missing', json('POST', '/clients', {}), 400, /name|email/],
    ['body an array', json('POST', '/clients', [ok]), 400, /body must be object/],
    ['body a string', json('POST', '/clients', 'Ada'), 400, /body must be object/],
    ['body a number', json('POST', '/clients', 42), 400, /body must be object/],
    ['invalid JSON', raw('POST', '/clients', '{"name": "Ada",'), 400, /JSON|Unexpected|Expected/i],
    ['empty JSON body', raw('POST', '/clients', ''), 400, /body cannot be empty/i],
    [
      '__proto__ in the body',
      raw('POST', '/clients', '{"__proto__":{"admin":true},"name":"A","email":"a@b.c"}'),
      400,
      /not valid JSON/,
    ],
    ['text/plain body', raw('POST', '/clients', 'name=Ada', 'text/plain'), 400, /body must be object/],
    [
      'form body',
      raw('POST', '/clients', 'name=Ada', 'application/x-www-form-urlencoded'),
      415,
      /Unsupported Media Type/,
    ],
    [
      'a 2 MiB body',
      json('POST', '/clients', { ...ok, name: 'x'.repeat(2 * 1024 * 1024) }),
      413,
      /body is too large/i,
    ],
    [
      'an email already taken',
      json('POST', '/clients', { name: 'Other', email: 'taken@example.com' }),
      409,
      /email/,
    ],
    ['PUT without name', json('PUT', '/clients/1', { email: 'a@b.c' }), 400, /name/],
    ['PUT with NUL', json('PUT', '/clients/1', { name: 'a\0', email: 'a@b.c' }), 400, /body\/name/],
    ['PATCH with nothing', json('PATCH', '/clients/1', {}), 400, /fewer than 1 properties/],
    ['PATCH with NUL email', json('PATCH', '/clients/1', { email: '\0@b.c' }), 400, /body\/email/],
    ['PATCH to the taken email', json('PATCH', '/clients/2', { email: 'taken@example.com' }), 409, /email/],
    // query strings
    ['offset 1e30', get('/clients?offset=1e30'), 400, /querystring\/offset/],
    ['offset 2^63', get('/clients?offset=9223372036854775808'), 400, /querystring\/offset/],
    ['offset beyond the bound', get(`/clients?offset=${MAX_OFFSET + 1}`), 400, /querystring\/offset/],
    ['offset negative', get('/clients?offset=-1'), 400, /querystring\/offset/],
    ['offset text', get('/clients?offset=abc'), 400, /querystring\/offset/],
    ['offset NUL', get('/clients?offset=%00'), 400, /querystring\/offset/],
    ['offset Infinity', get('/clients?offset=Infinity'), 400, /querystring\/offset/],
    ['offset -Infinity', get('/clients?offset=-Infinity'), 400, /querystring\/offset/],
    ['limit Infinity', get('/clients?limit=Infinity'), 400, /querystring\/limit/],
    ['limit 0', get('/clients?limit=0'), 400, /querystring\/limit/],
    ['limit 1001', get('/clients?limit=1001'), 400, /querystring\/limit/],
    ['limit 1.5', get('/clients?limit=1.5'), 400, /querystring\/limit/],
    ['limit given twice', get('/clients?limit=1&limit=2'), 400, /querystring\/limit/],
    ['limit NaN', get('/clients?limit=NaN'), 400, /querystring\/limit/],
    // path parameters
    ['id 0', get('/clients/0'), 400, /params\/id/],
    ['id negative', get('/clients/-1'), 400, /params\/id/],
    ['id text', get('/clients/abc'), 400, /params\/id/],
    ['id beyond int4', get('/clients/2147483648'), 400, /params\/id/],
    ['id 1e30', get('/clients/1e30'), 400, /params\/id/],
    ['id of 20 digits', get('/clients/99999999999999999999'), 400, /params\/id/],
    ['id 1.5', get('/clients/1.5'), 400, /params\/id/],
    ['id NUL', get('/clients/%00'), 400, /params\/id/],
    ['DELETE id text', { method: 'DELETE', url: '/clients/abc' }, 400, /params\/id/],
    ['PATCH id beyond int4', json('PATCH', '/clients/2147483648', { name: 'x' }), 400, /params\/id/],
    // headers
    ['a garbage token header', get('/clients/1', { 'x-pgsplit-lsn': 'garbage' }), 400, /write token/],
    ['a token without timeline', get('/clients/1', { 'x-pgsplit-lsn': '0/3000148' }), 400, /write token/],
    ['a token on timeline 0', get('/clients/1', { 'x-pgsplit-lsn': '0:0/3000148' }), 400, /write token/],
    ['a token with a bad LSN', get('/clients/1', { 'x-pgsplit-lsn': '1:ZZ/1' }), 400, /write token/],
    [
      'a very long token',
      get('/clients/1', { 'x-pgsplit-lsn': `1:${'F'.repeat(2_000)}/1` }),
      400,
      /write token/,
    ],
    ['a token list with one bad', get('/clients/1', { 'x-pgsplit-lsn': '1:0/1, bad' }), 400, /write token/],
    // valid input at the bounds: answered, not refused
    ['id at the int4 bound', get('/clients/2147483647'), 404, /no client 2147483647/],
    ['offset at its bound', get(`/clients?offset=${MAX_OFFSET}`), 200, /"clients":\[\]/],
    [
      'a well-formed token past the primary (refused: no write of this cluster made it)',
      get('/clients/2147483647', { 'x-pgsplit-lsn': '1:FFFFFFFF/FFFFFFFF' }),
      400,
      /PGSPLIT_TOKEN_AHEAD/,
    ],
  ]

  it('has at least 50 cases', () => {
    expect(HTTP.length).toBeGreaterThanOrEqual(50)
  })

  it.each(HTTP)('%s', async (_what, request, status, said) => {
    const res = await app.inject(request)
    expect(res.statusCode, res.body).toBe(status)
    expect(res.body).toMatch(said)
    expectNoPassword(res.body, JSON.stringify(res.headers))
  })

  it('no request above was answered with a server error, and the app still works', async () => {
    const res = await app.inject(json('POST', '/clients', { name: 'After', email: 'after@example.com' }))
    expect(res.statusCode).toBe(201)
  })
})

describe('on a running cluster', () => {
  let db: Cluster
  const retried: unknown[] = []

  beforeAll(async () => {
    db = cluster({ primary: pgc.primaryUrl, replicas: pgc.replicaUrls, ...FAST })
    db.on('readRetried', (e) => retried.push(e))
    await db.ready({ timeoutMs: 20_000 })
    await eventually(() => {
      expect(db.topology().nodes.map((n) => n.state)).toEqual(['up', 'up', 'up'])
    })
  })

  /** [sql, kind, SQLSTATE] */
  const SQL_ERRORS: [string, 'read' | 'write', string][] = [
    ['SELECT 1/0', 'read', '22012'],
    ['SELECT nope FROM bad_input_t', 'read', '42703'],
    ['SELECT * FROM missing_table_x WHERE id = $1', 'read', '42P01'],
    ["SELECT 'abc'::int", 'read', '22P02'],
    ['SELEC 1', 'write', '42601'],
    ['INSERT INTO bad_input_t (id) VALUES (1/0)', 'write', '22012'],
    ['INSERT INTO missing_table_x VALUES (1)', 'write', '42P01'],
    ["INSERT INTO bad_input_t VALUES (1, 'dup')", 'write', '23505'],
    ['UPDATE bad_input_t SET nope = 1', 'write', '42703'],
  ]

  it.each(SQL_ERRORS)(
    '%s: the caller gets the server error unchanged (%s, %s)',
    async (sql, kind, sqlstate) => {
      const params = sql.includes('$1') ? [1] : undefined
      const direct = await timed(() =>
        adminQuery(kind === 'read' ? pgc.replicaUrls[0]! : pgc.primaryUrl, sql, params),
      )
      const errorsBefore = db.topology().nodes.map((n) => n.errors)
      const retriedBefore = retried.length
      const via = await timed(() => db.query(sql, params))
      expect(direct.ok).toBe(false)
      expect(via.ok).toBe(false)
      const d = direct.error as pg.DatabaseError
      const e = via.error as pg.DatabaseError
      expect(e).toBeInstanceOf(pg.DatabaseError)
      expect(e.constructor).toBe(d.constructor)
      expect(e.code).toBe(sqlstate)
      for (const key of [
        'code',
        'message',
        'severity',
        'position',
        'detail',
        'hint',
        'constraint',
        'table',
        'column',
      ] as const) {
        expect(e[key], key).toEqual(d[key])
      }
      if (sql.includes('nope') || sql.includes('missing')) expect(e.position).toBeDefined()
      // Where it ran: reads on a replica, writes on the primary; an SQL error is never retried.
      const errorsAfter = db.topology().nodes.map((n) => n.errors)
      const grew = errorsAfter.map((n, i) => n - errorsBefore[i]!)
      expect(grew.reduce((a, b) => a + b, 0)).toBe(1)
      expect(grew[0]).toBe(kind === 'write' ? 1 : 0)
      expect(retried.length).toBe(retriedBefore)
    },
  )

  it('the callback form and pinned clients get the same errors', async () => {
    const err = await new Promise<Error | undefined>((resolve) => {
      db.query('SELECT 1/0', (e) => resolve(e))
    })
    expect(err).toBeInstanceOf(pg.DatabaseError)
    expect((err as pg.DatabaseError).code).toBe('22012')
    const client = await db.connect()
    try {
      await expect(client.query('SELECT * FROM missing_table_x')).rejects.toMatchObject({ code: '42P01' })
    } finally {
      client.release()
    }
    const inTx = await timed(() =>
      db.transaction(async (tx) => {
        await tx.query("INSERT INTO bad_input_t VALUES (50, 'rolled back')")
        await tx.query('SELECT 1/0')
      }),
    )
    expect(inTx.error).toBeInstanceOf(pg.DatabaseError)
    expect((inTx.error as pg.DatabaseError).code).toBe('22012')
    expect(await adminQuery(pgc.primaryUrl, 'SELECT 1 FROM bad_input_t WHERE id = 50')).toEqual([])
  })

  it('10,000 failing queries (reads, writes, transactions; concurrency 50) leak no client', async () => {
    const TOTAL = 10_000
    const CONCURRENCY = 50
    const kinds: [string, () => Promise<unknown>][] = [
      ['read 22012', () => db.query('SELECT 1/0')],
      ['read 42P01', () => db.query('SELECT * FROM missing_table_x WHERE id = $1', [1])],
      ['write 22012', () => db.query('INSERT INTO bad_input_t (id) VALUES (1/0)')],
      ['write 23505', () => db.query("INSERT INTO bad_input_t VALUES (1, 'dup')")],
      ['syntax 42601', () => db.query('SELEC 1')],
      ['forced replica 22012', () => db.replica.query('SELECT 1/0')],
      [
        'transaction 22012',
        () =>
          db.transaction(async (tx) => {
            await tx.query('SELECT 1')
            await tx.query('SELECT 1/0')
          }),
      ],
      [
        'pinned 42P01',
        async () => {
          const client = await db.connect()
          try {
            await client.query('SELECT * FROM missing_table_x')
          } finally {
            client.release()
          }
        },
      ],
    ]
    let next = 0
    let failed = 0
    const unexpected: unknown[] = []
    const started = Date.now()
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < TOTAL) {
          const i = next++
          const [, run] = kinds[i % kinds.length]!
          try {
            await run()
            unexpected.push(`query ${i} succeeded`)
          } catch (err) {
            if (err instanceof pg.DatabaseError) failed++
            else unexpected.push(err)
          }
        }
      }),
    )
    console.log(`[bad-input] ${TOTAL} failing queries in ${Date.now() - started} ms`)
    expect(unexpected).toEqual([])
    expect(failed).toBe(TOTAL)

    await eventually(() => {
      expect(db.waitingCount).toBe(0)
      expect(db.totalCount).toBe(db.idleCount)
      for (const node of db.topology().nodes) {
        expect(node.inFlight, node.name).toBe(0)
        expect(node.pool.waiting, node.name).toBe(0)
        expect(node.pool.total, node.name).toBe(node.pool.idle)
        expect(node.pool.total, node.name).toBeLessThanOrEqual(10)
      }
    }, 5_000)
    // The servers agree: no connection of the library is stuck in a query or a transaction.
    for (const node of pgc.nodes) {
      const rows = await adminQuery<{ state: string }>(
        node.url,
        `SELECT state FROM pg_stat_activity WHERE application_name = $1 AND state <> 'idle'`,
        [APP],
      )
      expect(rows, node.name).toEqual([])
    }
    // And the cluster still works.
    await db.query("INSERT INTO bad_input_t VALUES (4, 'after the flood')")
    expect((await db.primary.query('SELECT v FROM bad_input_t WHERE id = 4')).rows).toEqual([
      { v: 'after the flood' },
    ])
  })

  it('calls after end() fail clearly with ClusterEndedError', async () => {
    const ended = cluster({ primary: pgc.primaryUrl, replicas: pgc.replicaUrls, ...FAST })
    await ended.ready({ timeoutMs: 20_000 })
    await ended.query('SELECT 1')
    await ended.end()
    expect(ended.ended).toBe(true)
    const calls = await Promise.all([
      timed(() => ended.query('SELECT 1')),
      timed(() => ended.query('INSERT INTO bad_input_t VALUES (5)')),
      timed(() => ended.primary.query('SELECT 1')),
      timed(() => ended.replica.query('SELECT 1')),
      timed(() => ended.connect()),
      timed(() => ended.connect({ role: 'replica' })),
      timed(() => ended.transaction(async () => 1)),
      timed(() => ended.session(() => ended.query('SELECT 1'))),
      timed(() => ended.ready()),
      timed(() => ended.addNode(pgc.replicaUrls[0]!)),
      timed(() => ended.removeNode('x')),
    ])
    for (const call of calls) {
      expect(call.error).toBeInstanceOf(ClusterEndedError)
      expect((call.error as ClusterEndedError).code).toBe('PGSPLIT_ENDED')
      expect((call.error as Error).message).toMatch(/ended with end\(\)/)
      expect(call.ms).toBeLessThan(1_000)
    }
    const viaCallback = await new Promise<Error | undefined>((resolve) =>
      ended.query('SELECT 1', (e) => resolve(e)),
    )
    expect(viaCallback).toBeInstanceOf(ClusterEndedError)
    // end() again is harmless, in both forms.
    await ended.end()
    await new Promise<void>((resolve, reject) => ended.end((err) => (err ? reject(err) : resolve())))
    expect(ended.totalCount).toBe(0)
  })

  it('after end() the library holds no connection on any server', async () => {
    await db.end()
    for (const db2 of open) await db2.end()
    expect(db.totalCount).toBe(0)
    await expectNoLibraryConnections(
      pgc.nodes.map((n) => n.url),
      APP,
      5_000,
    )
    expect(processErrors.unhandledRejections).toEqual([])
    expect(processErrors.uncaughtExceptions).toEqual([])
  })
})
