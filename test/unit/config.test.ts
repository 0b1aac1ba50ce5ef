import { afterEach, describe, expect, it } from 'vitest'
import { DEFAULTS, normalizeConfig } from '../../src/config.js'
import { type Cluster, type ClusterConfig, ConfigError, createCluster, redact } from '../../src/index.js'

// Bad input fails at createCluster, at once, with a ConfigError that names the field and says what
// is wrong with its value, and never echoes a password. Nothing listens on the ports used here:
// the valid configs below are created and ended without ever reaching a server.

const SECRET = 'Sup3r-S3cret-pw!'
const ENC = encodeURIComponent(SECRET)
const P = `postgres://app:${ENC}@127.0.0.1:1/app`
const R1 = `postgres://app:${ENC}@127.0.0.1:2/app`
const R2 = `postgres://app:${ENC}@127.0.0.1:3/app`

const created: Cluster[] = []
afterEach(async () => {
  await Promise.all(created.splice(0).map((db) => db.end()))
})

function create(config: unknown): Cluster {
  const db = createCluster(config as ClusterConfig)
  created.push(db)
  return db
}

function configError(config: unknown): ConfigError {
  let thrown: unknown
  try {
    create(config)
  } catch (err) {
    thrown = err
  }
  expect(thrown, 'createCluster should throw').toBeInstanceOf(ConfigError)
  return thrown as ConfigError
}

/** [what, config, field, a regexp the message must match (the value's problem)] */
const BAD: [string, unknown, string, RegExp][] = [
  ['config is not an object', null, 'config', /must be an object, got null/],
  ['config is an array', [P], 'config', /must be an object, got an array/],
  ['no nodes at all', {}, 'primary', /is required/],
  ['nodes is empty', { nodes: [] }, 'nodes', /non-empty array/],
  ['nodes is not an array', { nodes: P }, 'nodes', /non-empty array/],
  ['primary is not a URL', { primary: 'not a url' }, 'primary', /not a valid connection URL/],
  ['URL with a broken host', { primary: `postgres://app:${ENC}@[bad/app` }, 'primary', /not a valid/],
  ['empty URL', { primary: '' }, 'primary', /empty connection string/],
  ['wrong scheme', { primary: `mysql://app:${ENC}@127.0.0.1/app` }, 'primary', /scheme "mysql:"/],
  ['http scheme for a replica', { primary: P, replicas: ['http://x/app'] }, 'replicas[0]', /scheme "http:"/],
  ['port 0 in a URL', { primary: `postgres://app:${ENC}@127.0.0.1:0/app` }, 'primary', /invalid port/],
  [
    'port out of range in a URL',
    { primary: P, replicas: [`postgres://app:${ENC}@h:99999/app`] },
    'replicas[0]',
    /not a valid connection URL|invalid port/,
  ],
  [
    'port out of range in an object',
    { primary: { host: '127.0.0.1', port: 70_000, password: SECRET } },
    'primary.port',
    /integer port 1-65535, got 70000/,
  ],
  ['object without host', { primary: { port: 5432, password: SECRET } }, 'primary.host', /is required/],
  ['node is a number', { primary: 42 }, 'primary', /URL or a pg config object, got 42/],
  ['node url is not a string', { primary: { url: 5 } }, 'primary.url', /must be a string, got 5/],
  ['duplicate nodes', { primary: P, replicas: [R1, P] }, 'replicas[1]', /duplicates node .*127\.0\.0\.1:1/],
  ['duplicate nodes in nodes[]', { nodes: [P, R1, R1] }, 'nodes[2]', /duplicates node/],
  [
    'duplicate names',
    { primary: { url: P, name: 'a' }, replicas: [{ url: R1, name: 'a' }] },
    'replicas[0].name',
    /duplicates the name "a"/,
  ],
  ['empty node name', { primary: { url: P, name: ' ' } }, 'primary.name', /non-empty string/],
  ['primary and nodes together', { primary: P, nodes: [R1] }, 'nodes', /cannot be combined/],
  ['replicas and nodes together', { replicas: [R1], nodes: [P] }, 'nodes', /cannot be combined/],
  ['unknown top-level key', { primary: P, replica: [R1] }, 'replica', /not a known option/],
  ['replicas not an array', { primary: P, replicas: R1 }, 'replicas', /must be an array/],
  [
    'negative node weight',
    { primary: P, replicas: [{ url: R1, weight: -1 }] },
    'replicas[0].weight',
    /number >= 0, got -1/,
  ],
  [
    'NaN node weight',
    { primary: P, replicas: [{ url: R1, weight: Number.NaN }] },
    'replicas[0].weight',
    /NaN/,
  ],
  ['negative maxLag.bytes', { primary: P, maxLag: { bytes: -1 } }, 'maxLag.bytes', /number >= 0, got -1/],
  ['non-numeric maxLag.ms', { primary: P, maxLag: { ms: '5000' } }, 'maxLag.ms', /got "5000"/],
  ['NaN maxLag.ms', { primary: P, maxLag: { ms: Number.NaN } }, 'maxLag.ms', /got NaN/],
  ['Infinity maxLag.bytes', { primary: P, maxLag: { bytes: Infinity } }, 'maxLag.bytes', /finite/],
  ['unknown maxLag key', { primary: P, maxLag: { rows: 5 } }, 'maxLag.rows', /not a known option/],
  [
    'negative per-node maxLag',
    { primary: P, replicas: [{ url: R1, maxLag: { bytes: -1 } }] },
    'replicas[0].maxLag.bytes',
    /got -1/,
  ],
  ['unknown strategy', { primary: P, readStrategy: 'fastest' }, 'readStrategy', /one of .*got "fastest"/],
  ['strategy is a number', { primary: P, readStrategy: 5 }, 'readStrategy', /got 5/],
  [
    'healthCheck.timeoutMs 0',
    { primary: P, healthCheck: { timeoutMs: 0 } },
    'healthCheck.timeoutMs',
    /positive integer, got 0/,
  ],
  [
    'healthCheck.intervalMs Infinity',
    { primary: P, healthCheck: { intervalMs: Infinity } },
    'healthCheck.intervalMs',
    /positive integer, got Infinity/,
  ],
  [
    'healthCheck.failuresBeforeDown 1.5',
    { primary: P, healthCheck: { failuresBeforeDown: 1.5 } },
    'healthCheck.failuresBeforeDown',
    /got 1.5/,
  ],
  [
    'unknown healthCheck key',
    { primary: P, healthCheck: { interval: 5 } },
    'healthCheck.interval',
    /not a known option/,
  ],
  [
    'heartbeat table name injection',
    { primary: P, healthCheck: { heartbeat: { table: 'hb; DROP TABLE users' } } },
    'healthCheck.heartbeat.table',
    /plain .*table name, got "hb; DROP TABLE users"/,
  ],
  [
    'heartbeat is a string',
    { primary: P, healthCheck: { heartbeat: 'yes' } },
    'healthCheck.heartbeat',
    /boolean or \{ table \}/,
  ],
  ['failover.timeoutMs 0', { primary: P, failover: { timeoutMs: 0 } }, 'failover.timeoutMs', /got 0/],
  [
    'failover.pollIntervalMs negative',
    { primary: P, failover: { pollIntervalMs: -1 } },
    'failover.pollIntervalMs',
    /got -1/,
  ],
  ['unknown failover key', { primary: P, failover: { retries: 3 } }, 'failover.retries', /not a known/],
  ['pool.max 0', { primary: P, pool: { max: 0 } }, 'pool.max', /positive integer, got 0/],
  ['per-node max 0', { primary: { url: P, max: 0 } }, 'primary.max', /positive integer, got 0/],
  [
    'pool.connectionTimeoutMillis 0 (would wait forever)',
    { primary: P, pool: { connectionTimeoutMillis: 0 } },
    'pool.connectionTimeoutMillis',
    /got 0/,
  ],
  ['pool.query_timeout negative', { primary: P, pool: { query_timeout: -1 } }, 'pool.query_timeout', /-1/],
  [
    'pool.statement_timeout as text',
    { primary: P, pool: { statement_timeout: '1s' } },
    'pool.statement_timeout',
    /got "1s"/,
  ],
  ['pool is not an object', { primary: P, pool: 'big' }, 'pool', /object of pg.Pool options/],
  ['pool names a host', { primary: P, pool: { host: 'x' } }, 'pool.host', /belongs to a node/],
  [
    'sticky windowMs 0',
    { primary: P, consistency: { mode: 'sticky', windowMs: 0 } },
    'consistency.windowMs',
    /positive integer, got 0/,
  ],
  ['unknown consistency', { primary: P, consistency: 'strong' }, 'consistency', /got "strong"/],
  [
    'unknown onNoReplica',
    { primary: P, onNoReplica: 'wait' },
    'onNoReplica',
    /'primary', 'error', got "wait"/,
  ],
  ['negative causalWaitMs', { primary: P, causalWaitMs: -5 }, 'causalWaitMs', /got -5/],
  [
    'unknown readOnlyTransactions',
    { primary: P, readOnlyTransactions: 'any' },
    'readOnlyTransactions',
    /got "any"/,
  ],
  [
    'writeFunctions not an array',
    { primary: P, writeFunctions: 'f' },
    'writeFunctions',
    /array of non-empty/,
  ],
  ['classifierCacheSize text', { primary: P, classifierCacheSize: 'big' }, 'classifierCacheSize', /"big"/],
  // The value itself is a URL with a password: the message shows it redacted.
  ['a URL where an array belongs', { primary: P, replicas: R1 }, 'replicas', /got "postgres:\/\/app:\*\*\*@/],
  [
    'a URL as the strategy',
    { primary: P, readStrategy: R2 },
    'readStrategy',
    /got "postgres:\/\/app:\*\*\*@/,
  ],
  [
    'a libpq string instead of a URL',
    { primary: `host=127.0.0.1 password=${SECRET}` },
    'primary',
    /not a valid connection URL: "host=127.0.0.1 password=\*\*\*"/,
  ],
]

describe('createCluster rejects bad configurations with a ConfigError', () => {
  it('has at least 25 cases', () => {
    expect(BAD.length).toBeGreaterThanOrEqual(25)
  })

  it.each(BAD)('%s', (_what, config, field, problem) => {
    const err = configError(config)
    expect(err.field).toBe(field)
    expect(err.code).toBe('PGSPLIT_CONFIG')
    expect(err.message).toContain(field)
    expect(err.message).toMatch(problem)
    // Neither the raw nor the URL-encoded password, in the message or the stack.
    for (const text of [err.message, String(err.stack), JSON.stringify(err)]) {
      expect(text).not.toContain(SECRET)
      expect(text).not.toContain(ENC)
    }
  })
})

describe('valid configurations', () => {
  it('normalize with the documented defaults', () => {
    const config = normalizeConfig({ primary: P, replicas: [R1, R2] })
    expect(config.nodes.map((n) => [n.name, n.declaredRole, n.weight])).toEqual([
      ['127.0.0.1:1', 'primary', 1],
      ['127.0.0.1:2', 'replica', 1],
      ['127.0.0.1:3', 'replica', 1],
    ])
    expect(config.readStrategy).toBe('round-robin')
    expect(config.maxLag).toEqual({ bytes: 16 * 1024 * 1024, ms: 5_000 })
    expect(config.healthCheck).toEqual({
      intervalMs: 1_000,
      timeoutMs: 1_000,
      failuresBeforeDown: 2,
      successesBeforeUp: 2,
      maxBackoffMs: 5_000,
      heartbeat: false,
    })
    expect(config.onNoReplica).toBe('primary')
    expect(config.consistency).toBe('eventual')
    expect(config.causalWaitMs).toBe(100)
    expect(config.failover).toEqual({ timeoutMs: 30_000, pollIntervalMs: 100, writeTimeoutMs: 20_000 })
    expect(config.readOnlyTransactions).toBe('primary')
    expect(config.writeFunctions).toEqual([])
    expect(config.classifierCacheSize).toBe(5_000)
    // Every wait is bounded by default (pg's own defaults wait forever).
    const pool = config.nodes[0]!.poolConfig
    expect(pool.connectionTimeoutMillis).toBe(DEFAULTS.pool.connectionTimeoutMillis)
    expect(pool.query_timeout).toBe(DEFAULTS.pool.query_timeout)
    expect(pool.keepAlive).toBe(true)
    expect(pool.max).toBe(10)
    expect(pool.host).toBe('127.0.0.1')
    expect(pool.port).toBe(1)
    expect(pool.database).toBe('app')
    expect(pool.user).toBe('app')
    // The password is there for pg, but not enumerable: not in JSON, spreads or console.log.
    expect(pool.password).toBe(SECRET)
    expect(Object.keys(pool)).not.toContain('password')
    expect(Object.keys(pool)).not.toContain('connectionString')
    expect(JSON.stringify(config)).not.toContain(SECRET)
    expect(JSON.stringify(config)).not.toContain(ENC)
  })

  it('keeps explicit values, merges shared and per-node pool options, and fills the rest', () => {
    const config = normalizeConfig({
      nodes: [
        { host: '127.0.0.1', port: 4, password: SECRET, user: 'u', database: 'd', name: 'a', max: 3 },
        { url: R1, weight: 0, maxLag: { bytes: 10 } },
      ],
      pool: { max: 5, idleTimeoutMillis: 1_000 },
      readStrategy: 'least-lag',
      maxLag: { ms: 100 },
      healthCheck: { intervalMs: 200, heartbeat: true },
      onNoReplica: 'error',
      consistency: { mode: 'sticky', windowMs: 500 },
      causalWaitMs: 0,
      failover: { timeoutMs: 2_000 },
      writeFunctions: [' Audit_Log '],
    })
    expect(config.nodes.map((n) => [n.name, n.declaredRole, n.weight, n.maxLag])).toEqual([
      ['a', 'unknown', 1, undefined],
      ['127.0.0.1:2', 'unknown', 0, { bytes: 10, ms: undefined }],
    ])
    expect(config.nodes[0]!.poolConfig.max).toBe(3)
    expect(config.nodes[1]!.poolConfig.max).toBe(5)
    expect(config.nodes[0]!.poolConfig.idleTimeoutMillis).toBe(1_000)
    expect(config.nodes[0]!.poolConfig.connectionTimeoutMillis).toBe(5_000)
    expect(config.readStrategy).toBe('least-lag')
    // A partial maxLag replaces the default: only the bound given applies.
    expect(config.maxLag).toEqual({ bytes: undefined, ms: 100 })
    expect(config.healthCheck).toMatchObject({
      intervalMs: 200,
      timeoutMs: 1_000,
      heartbeat: { table: 'pgsplit_heartbeat' },
    })
    expect(config.onNoReplica).toBe('error')
    expect(config.consistency).toEqual({ mode: 'sticky', windowMs: 500 })
    expect(config.causalWaitMs).toBe(0)
    expect(config.failover).toEqual({ timeoutMs: 2_000, pollIntervalMs: 100, writeTimeoutMs: 20_000 })
    expect(config.writeFunctions).toEqual(['audit_log'])
    expect(JSON.stringify(config)).not.toContain(SECRET)
  })

  it('accept a function as the read strategy', () => {
    const pickFirst = (c: readonly { name: string }[]) => c[0]
    expect(normalizeConfig({ primary: P, readStrategy: pickFirst as never }).readStrategy).toBe(pickFirst)
  })

  it('a cluster built from them shows names, roles and no password', () => {
    const db = create({ primary: P, replicas: [{ url: R1, name: 'r1' }, R2] })
    const topology = db.topology()
    expect(topology.nodes.map((n) => [n.name, n.host, n.port, n.database, n.role])).toEqual([
      ['127.0.0.1:1', '127.0.0.1', 1, 'app', 'primary'],
      ['r1', '127.0.0.1', 2, 'app', 'replica'],
      ['127.0.0.1:3', '127.0.0.1', 3, 'app', 'replica'],
    ])
    expect(JSON.stringify(topology)).not.toContain(SECRET)
  })
})

describe('redact', () => {
  it.each([
    [`postgres://app:${SECRET}@h:5432/db`, 'postgres://app:***@h:5432/db'],
    [`postgresql://app:${ENC}@h/db?sslmode=require`, 'postgresql://app:***@h/db?sslmode=require'],
    [
      `error connecting to postgres://u:${ENC}@10.0.0.1/db: refused`,
      'error connecting to postgres://u:***@10.0.0.1/db: refused',
    ],
    [`host=h user=u password=${SECRET} dbname=d`, 'host=h user=u password=*** dbname=d'],
    [`host=h password='a b\\'c' dbname=d`, 'host=h password=*** dbname=d'],
    ['postgres://app@h/db', 'postgres://app@h/db'],
    ['no secrets here', 'no secrets here'],
  ])('%s', (input, expected) => {
    expect(redact(input)).toBe(expected)
  })
})
