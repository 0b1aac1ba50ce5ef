import { afterEach, describe, expect, it } from 'vitest'
import { addressKey, DEFAULTS, LIMITS, normalizeConfig, normalizeNodeList } from '../../src/config.js'
import { type Cluster, type ClusterConfig, ConfigError, createCluster, redact } from '../../src/index.js'
import { StatementClassifier } from '../../src/router/classify.js'

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

const PEM = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n'
const url = (port: number, query = '') => `postgres://app:${ENC}@127.0.0.1:${port}/app${query}`
const obj = (port: number, extra: Record<string, unknown> = {}) => ({
  host: '127.0.0.1',
  port,
  password: SECRET,
  ...extra,
})
const TOO_LONG = 2 ** 31 // one past Node's timer limit: a timer would fire after 1 ms

/** [what, config, field, a regexp the message must match (the value's problem)] */
const BAD: [string, unknown, string, RegExp][] = [
  // --- the shape of the config ---
  ['config is not an object', null, 'config', /must be an object, got null/],
  ['config is an array', [P], 'config', /must be an object, got an array/],
  ['no nodes at all', {}, 'primary', /is required/],
  ['nodes is empty', { nodes: [] }, 'nodes', /non-empty array/],
  ['nodes is not an array', { nodes: P }, 'nodes', /non-empty array/],
  ['primary and nodes together', { primary: P, nodes: [R1] }, 'nodes', /cannot be combined/],
  ['replicas and nodes together', { replicas: [R1], nodes: [P] }, 'nodes', /cannot be combined/],
  [
    'unknown top-level key, did you mean',
    { primary: P, replica: [R1] },
    'replica',
    /not a known option \(did you mean replicas\?\)/,
  ],
  [
    'misspelt readStrategy',
    { primary: P, readstrategy: 'random' },
    'readstrategy',
    /did you mean readStrategy\?/,
  ],
  [
    'misspelt classifierCacheSize',
    { primary: P, classifierCache: 0 },
    'classifierCache',
    /did you mean classifierCacheSize\?/,
  ],
  [
    'a pg option at the top level',
    { primary: P, max: 5 },
    'max',
    /not a top-level option \(did you mean pool.max\?\)/,
  ],
  [
    'a probe setting at the top level',
    { primary: P, intervalMs: 500 },
    'intervalMs',
    /did you mean healthCheck.intervalMs\?/,
  ],
  ['a node setting at the top level', { primary: P, weight: 2 }, 'weight', /a node object's weight/],
  ['replicas not an array', { primary: P, replicas: R1 }, 'replicas', /must be an array/],
  [
    'discovery without a node function',
    { nodes: [P], discovery: { intervalMs: 1_000 } },
    'discovery',
    /only applies when nodes is a function/,
  ],
  [
    'discovery.intervalMs too small',
    { nodes: async () => [P], discovery: { intervalMs: 5 } },
    'discovery.intervalMs',
    /from 100 to/,
  ],
  [
    'discovery unknown key',
    { nodes: async () => [P], discovery: { interval: 5 } },
    'discovery.interval',
    /did you mean intervalMs\?/,
  ],
  // --- URLs ---
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
    '%ZZ in the password',
    { primary: `postgres://app:${ENC}%ZZ@127.0.0.1:1/app` },
    'primary',
    /malformed %-escape in its password/,
  ],
  [
    '%ZZ in the database',
    { primary: `postgres://app:${ENC}@127.0.0.1:1/ap%ZZp` },
    'primary',
    /malformed %-escape in its database/,
  ],
  [
    '% at the end of the user',
    { primary: `postgres://ap%:${ENC}@127.0.0.1:1/app` },
    'primary',
    /malformed %-escape in its user name/,
  ],
  [
    '%ZZ in a node object url',
    { nodes: [{ url: `postgres://app:p%ZZ${ENC}@127.0.0.1:1/app` }] },
    'nodes[0].url',
    /malformed %-escape in its password/,
  ],
  [
    'sslmode=bogus',
    { primary: url(1, '?sslmode=bogus') },
    'primary?sslmode',
    /must be one of disable, prefer, require, verify-ca, verify-full, no-verify, got "bogus"/,
  ],
  [
    'sslmode=allow (pg has none)',
    { primary: P, replicas: [url(2, '?sslmode=allow')] },
    'replicas[0]?sslmode',
    /allow is not supported by pg/,
  ],
  ['ssl=yes in the URL', { primary: url(1, '?ssl=yes') }, 'primary?ssl', /must be true, 1, 0 or no-verify/],
  [
    'sslnegotiation=fast',
    { primary: url(1, '?sslnegotiation=fast') },
    'primary?sslnegotiation',
    /postgres or direct/,
  ],
  [
    'sslrootcert file missing',
    { primary: url(1, '?sslmode=verify-full&sslrootcert=/nonexistent/ca.crt') },
    'primary?sslrootcert',
    /cannot be read/,
  ],
  [
    'connect_timeout (ignored by pg)',
    { primary: url(1, '?connect_timeout=10') },
    'primary?connect_timeout',
    /pool\.connectionTimeoutMillis/,
  ],
  [
    'target_session_attrs (ignored by pg)',
    { nodes: [url(1, '?target_session_attrs=read-write')] },
    'nodes[0]?target_session_attrs',
    /finds the primary itself/,
  ],
  [
    'unknown URL parameter',
    { primary: url(1, '?applicationname=x') },
    'primary?applicationname',
    /not a URL parameter pg reads/,
  ],
  [
    'URL parameter twice',
    { primary: url(1, '?sslmode=disable&sslmode=require') },
    'primary?sslmode',
    /given twice/,
  ],
  [
    'URL statement_timeout as text',
    { primary: url(1, '?statement_timeout=1s') },
    'primary?statement_timeout',
    /whole milliseconds/,
  ],
  [
    'URL port parameter out of range',
    { primary: `postgres://app:${ENC}@127.0.0.1/app?port=70000` },
    'primary?port',
    /integer port 1-65535/,
  ],
  [
    'a libpq string instead of a URL',
    { primary: `host=127.0.0.1 password=${SECRET}` },
    'primary',
    /not a valid connection URL: "host=127.0.0.1 password=\*\*\*"/,
  ],
  // --- node objects ---
  [
    'port out of range in an object',
    { primary: obj(70_000) },
    'primary.port',
    /integer from 1 to 65535, got 70000/,
  ],
  [
    'port as a string',
    { primary: obj(1, { port: '5432' }) },
    'primary.port',
    /integer from 1 to 65535, got "5432"/,
  ],
  ['object without host', { primary: { port: 5432, password: SECRET } }, 'primary.host', /is required/],
  ['empty host', { primary: { host: '', password: SECRET } }, 'primary.host', /non-empty string/],
  ['node is a number', { primary: 42 }, 'primary', /URL or a pg config object, got 42/],
  [
    'node url is not a string',
    { primary: { url: 5 } },
    'primary.url',
    /must be a postgres:\/\/ URL string, got 5/,
  ],
  [
    'url and connectionString both',
    { primary: { url: P, connectionString: P } },
    'primary.connectionString',
    /cannot be given with url/,
  ],
  [
    'url with a separate password (pg ignores it)',
    { primary: { url: 'postgres://app@127.0.0.1:1/app', password: SECRET } },
    'primary.password',
    /pg would take the URL's password/,
  ],
  [
    'url with a separate host',
    { nodes: [{ url: P, host: '10.0.0.1' }] },
    'nodes[0].host',
    /cannot be combined with url/,
  ],
  [
    'connectionString with a separate user',
    { primary: { connectionString: P, user: 'other' } },
    'primary.user',
    /cannot be combined with connectionString/,
  ],
  [
    'node key typo wieght',
    { primary: P, replicas: [{ url: R1, wieght: 2 }] },
    'replicas[0].wieght',
    /did you mean weight\?/,
  ],
  [
    'node key typo maxlag',
    { primary: P, replicas: [{ url: R1, maxlag: { ms: 1 } }] },
    'replicas[0].maxlag',
    /did you mean maxLag\?/,
  ],
  [
    'node key typo hots',
    { nodes: [obj(1), { hots: '127.0.0.1', port: 2 }] },
    'nodes[1].hots',
    /did you mean host\?/,
  ],
  [
    'password is a number',
    { primary: obj(1, { password: 123456 }) },
    'primary.password',
    /string or a function.*got a number/,
  ],
  ['empty node name', { primary: { url: P, name: ' ' } }, 'primary.name', /non-empty string/],
  ['node name is a number', { primary: { url: P, name: 7 } }, 'primary.name', /string.*got 7/],
  [
    'negative node weight',
    { primary: P, replicas: [{ url: R1, weight: -1 }] },
    'replicas[0].weight',
    /from 0 to 1000000, got -1/,
  ],
  [
    'NaN node weight',
    { primary: P, replicas: [{ url: R1, weight: Number.NaN }] },
    'replicas[0].weight',
    /NaN/,
  ],
  ['node weight as a string', { nodes: [{ url: P, weight: '2' }] }, 'nodes[0].weight', /got "2"/],
  // --- duplicates, by server identity ---
  ['duplicate nodes', { primary: P, replicas: [R1, P] }, 'replicas[1]', /duplicates node .*127\.0\.0\.1:1/],
  ['duplicate nodes in nodes[]', { nodes: [P, R1, R1] }, 'nodes[2]', /duplicates node/],
  [
    'localhost and 127.0.0.1',
    { primary: `postgres://app:${ENC}@localhost:1/app`, replicas: [P] },
    'replicas[0]',
    /127\.0\.0\.1:1 and localhost:1 are the same server/,
  ],
  [
    '::1 and localhost',
    { nodes: [`postgres://app:${ENC}@localhost:7/app`, `postgres://app:${ENC}@[::1]:7/app`] },
    'nodes[1]',
    /same server/,
  ],
  [
    'default port written and omitted',
    { nodes: [`postgres://app:${ENC}@db.example/app`, `postgres://app:${ENC}@db.example:5432/app`] },
    'nodes[1]',
    /duplicates node/,
  ],
  [
    'host names are case-insensitive',
    { nodes: [obj(9, { host: 'DB.example' }), obj(9, { host: 'db.example.' })] },
    'nodes[1]',
    /same server/,
  ],
  [
    'same server, another database',
    { nodes: [url(1), `postgres://app:${ENC}@127.0.0.1:1/other`] },
    'nodes[1]',
    /duplicates node/,
  ],
  [
    'duplicate names',
    { primary: { url: P, name: 'a' }, replicas: [{ url: R1, name: 'a' }] },
    'replicas[0].name',
    /duplicates the name "a"/,
  ],
  // --- lag bounds ---
  ['negative maxLag.bytes', { primary: P, maxLag: { bytes: -1 } }, 'maxLag.bytes', /from 0 to .*got -1/],
  ['non-numeric maxLag.ms', { primary: P, maxLag: { ms: '5000' } }, 'maxLag.ms', /got "5000"/],
  ['NaN maxLag.ms', { primary: P, maxLag: { ms: Number.NaN } }, 'maxLag.ms', /got NaN/],
  ['Infinity maxLag.bytes', { primary: P, maxLag: { bytes: Infinity } }, 'maxLag.bytes', /finite/],
  ['maxLag {} (no bound at all)', { primary: P, maxLag: {} }, 'maxLag', /at least one bound/],
  [
    'per-node maxLag {}',
    { primary: P, replicas: [{ url: R1, maxLag: {} }] },
    'replicas[0].maxLag',
    /at least one bound/,
  ],
  ['unknown maxLag key', { primary: P, maxLag: { rows: 5 } }, 'maxLag.rows', /not a known option/],
  ['maxLag key typo', { primary: P, maxLag: { byte: 5 } }, 'maxLag.byte', /did you mean bytes\?/],
  [
    'negative per-node maxLag',
    { primary: P, replicas: [{ url: R1, maxLag: { bytes: -1 } }] },
    'replicas[0].maxLag.bytes',
    /got -1/,
  ],
  [
    'nested maxLag.ms path',
    { nodes: [P, R1, { url: R2, maxLag: { ms: -5 } }] },
    'nodes[2].maxLag.ms',
    /got -5/,
  ],
  // --- enumerations ---
  ['unknown strategy', { primary: P, readStrategy: 'fastest' }, 'readStrategy', /one of .*got "fastest"/],
  ['strategy typo', { primary: P, readStrategy: 'least_lag' }, 'readStrategy', /did you mean 'least-lag'\?/],
  ['strategy is a number', { primary: P, readStrategy: 5 }, 'readStrategy', /got 5/],
  [
    'unknown onNoReplica',
    { primary: P, onNoReplica: 'wait' },
    'onNoReplica',
    /'primary', 'error', got "wait"/,
  ],
  [
    'unknown readOnlyTransactions',
    { primary: P, readOnlyTransactions: 'any' },
    'readOnlyTransactions',
    /got "any"/,
  ],
  ['unknown consistency', { primary: P, consistency: 'strong' }, 'consistency', /got "strong"/],
  ["'sticky' as a string", { primary: P, consistency: 'sticky' }, 'consistency', /needs its window/],
  [
    'sticky without windowMs',
    { primary: P, consistency: { mode: 'sticky' } },
    'consistency.windowMs',
    /is required with mode 'sticky'/,
  ],
  [
    'sticky windowMs 0',
    { primary: P, consistency: { mode: 'sticky', windowMs: 0 } },
    'consistency.windowMs',
    /from 1 to 3600000/,
  ],
  [
    'sticky windowMs too long',
    { primary: P, consistency: { mode: 'sticky', windowMs: TOO_LONG } },
    'consistency.windowMs',
    /got 2147483648/,
  ],
  [
    'consistency object with another mode',
    { primary: P, consistency: { mode: 'causal' } },
    'consistency.mode',
    /'sticky'/,
  ],
  [
    'consistency object key typo',
    { primary: P, consistency: { mode: 'sticky', windowMS: 100 } },
    'consistency.windowMS',
    /did you mean windowMs\?/,
  ],
  // --- health checks ---
  [
    'healthCheck.timeoutMs 0',
    { primary: P, healthCheck: { timeoutMs: 0 } },
    'healthCheck.timeoutMs',
    /from 10 to 600000 \(10 min\), got 0/,
  ],
  [
    'healthCheck.intervalMs Infinity',
    { primary: P, healthCheck: { intervalMs: Infinity } },
    'healthCheck.intervalMs',
    /got Infinity/,
  ],
  [
    'healthCheck.intervalMs beyond a timer',
    { primary: P, healthCheck: { intervalMs: TOO_LONG } },
    'healthCheck.intervalMs',
    /from 10 to 3600000 \(1 h\), got 2147483648/,
  ],
  [
    'healthCheck.timeoutMs beyond a timer',
    { primary: P, healthCheck: { timeoutMs: TOO_LONG } },
    'healthCheck.timeoutMs',
    /got 2147483648/,
  ],
  [
    'healthCheck.maxBackoffMs 1e10',
    { primary: P, healthCheck: { maxBackoffMs: 1e10 } },
    'healthCheck.maxBackoffMs',
    /got 10000000000/,
  ],
  [
    'healthCheck.failuresBeforeDown 1.5',
    { primary: P, healthCheck: { failuresBeforeDown: 1.5 } },
    'healthCheck.failuresBeforeDown',
    /got 1.5/,
  ],
  [
    'healthCheck.successesBeforeUp 0',
    { primary: P, healthCheck: { successesBeforeUp: 0 } },
    'healthCheck.successesBeforeUp',
    /from 1 to 1000, got 0/,
  ],
  [
    'unknown healthCheck key',
    { primary: P, healthCheck: { interval: 5 } },
    'healthCheck.interval',
    /did you mean intervalMs\?/,
  ],
  ['healthCheck is a number', { primary: P, healthCheck: 5 }, 'healthCheck', /an object with/],
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
  [
    'heartbeat key typo',
    { primary: P, healthCheck: { heartbeat: { tabel: 'hb' } } },
    'healthCheck.heartbeat.tabel',
    /did you mean table\?/,
  ],
  // --- failover and causal waits ---
  ['failover.timeoutMs 0', { primary: P, failover: { timeoutMs: 0 } }, 'failover.timeoutMs', /got 0/],
  [
    'failover.timeoutMs 2^31 (ready() would reject after 1 ms)',
    { primary: P, failover: { timeoutMs: TOO_LONG } },
    'failover.timeoutMs',
    /from 1 to 3600000 \(1 h\), got 2147483648/,
  ],
  [
    'failover.pollIntervalMs negative',
    { primary: P, failover: { pollIntervalMs: -1 } },
    'failover.pollIntervalMs',
    /got -1/,
  ],
  [
    'failover.writeTimeoutMs as text',
    { primary: P, failover: { writeTimeoutMs: '5s' } },
    'failover.writeTimeoutMs',
    /got "5s"/,
  ],
  ['unknown failover key', { primary: P, failover: { retries: 3 } }, 'failover.retries', /not a known/],
  [
    'failover key typo',
    { primary: P, failover: { timeout: 3 } },
    'failover.timeout',
    /did you mean timeoutMs\?/,
  ],
  ['negative causalWaitMs', { primary: P, causalWaitMs: -5 }, 'causalWaitMs', /got -5/],
  [
    'causalWaitMs 1e10',
    { primary: P, causalWaitMs: 1e10 },
    'causalWaitMs',
    /from 0 to 60000 \(1 min\), got 10000000000/,
  ],
  ['causalWaitMs fractional', { primary: P, causalWaitMs: 1.5 }, 'causalWaitMs', /whole milliseconds/],
  // --- pool options (shared and per node) ---
  ['pool.max 0', { primary: P, pool: { max: 0 } }, 'pool.max', /from 1 to 10000, got 0/],
  ['per-node max 0', { primary: { url: P, max: 0 } }, 'primary.max', /got 0/],
  [
    'pool.min above pool.max',
    { primary: P, pool: { min: 20, max: 5 } },
    'pool.min',
    /at most max \(5\), got 20/,
  ],
  [
    'node min above the shared max',
    { primary: P, replicas: [{ url: R1, min: 11 }] },
    'replicas[0].min',
    /at most max \(10\)/,
  ],
  ['pool.maxx', { primary: P, pool: { maxx: 5 } }, 'pool.maxx', /did you mean max\?/],
  [
    'pool.querytimeout',
    { primary: P, pool: { querytimeout: 5 } },
    'pool.querytimeout',
    /did you mean query_timeout\?/,
  ],
  [
    'pool.connectionTimeoutMs',
    { primary: P, pool: { connectionTimeoutMs: 5 } },
    'pool.connectionTimeoutMs',
    /did you mean connectionTimeoutMillis\?/,
  ],
  [
    'pool.poolSize (old pg-pool name)',
    { primary: P, pool: { poolSize: 5 } },
    'pool.poolSize',
    /did you mean max\?/,
  ],
  [
    'per-node option typo',
    { nodes: [{ url: P, idleTimeoutMilis: 5 }] },
    'nodes[0].idleTimeoutMilis',
    /did you mean idleTimeoutMillis\?/,
  ],
  [
    'pool.connectionTimeoutMillis 0 (would wait forever)',
    { primary: P, pool: { connectionTimeoutMillis: 0 } },
    'pool.connectionTimeoutMillis',
    /wait forever/,
  ],
  [
    'pool.connectionTimeoutMillis false',
    { primary: P, pool: { connectionTimeoutMillis: false } },
    'pool.connectionTimeoutMillis',
    /wait forever/,
  ],
  [
    'pool.connectionTimeoutMillis 2^31',
    { primary: P, pool: { connectionTimeoutMillis: TOO_LONG } },
    'pool.connectionTimeoutMillis',
    /from 1 to 600000/,
  ],
  ['pool.query_timeout negative', { primary: P, pool: { query_timeout: -1 } }, 'pool.query_timeout', /-1/],
  [
    'pool.query_timeout 0',
    { primary: P, pool: { query_timeout: 0 } },
    'pool.query_timeout',
    /no timeout in pg/,
  ],
  [
    'pool.query_timeout 2^31 (a 50 ms query failed after 19 ms)',
    { primary: P, pool: { query_timeout: TOO_LONG } },
    'pool.query_timeout',
    /from 1 to 86400000 \(24 h\), got 2147483648/,
  ],
  [
    'pool.statement_timeout as text',
    { primary: P, pool: { statement_timeout: '1s' } },
    'pool.statement_timeout',
    /got "1s"/,
  ],
  [
    'pool.lock_timeout beyond int4',
    { primary: P, pool: { lock_timeout: TOO_LONG } },
    'pool.lock_timeout',
    /2147483647/,
  ],
  [
    'pool.idleTimeoutMillis 2^31',
    { primary: P, pool: { idleTimeoutMillis: TOO_LONG } },
    'pool.idleTimeoutMillis',
    /got 2147483648/,
  ],
  [
    'pool.maxLifetimeSeconds negative',
    { primary: P, pool: { maxLifetimeSeconds: -1 } },
    'pool.maxLifetimeSeconds',
    /from 0 to 86400/,
  ],
  ['pool.maxUses 0', { primary: P, pool: { maxUses: 0 } }, 'pool.maxUses', /got 0/],
  [
    'pool.keepAlive as text',
    { primary: P, pool: { keepAlive: 'yes' } },
    'pool.keepAlive',
    /true or false, got "yes"/,
  ],
  [
    'pool.allowExitOnIdle 1',
    { primary: P, pool: { allowExitOnIdle: 1 } },
    'pool.allowExitOnIdle',
    /true or false/,
  ],
  [
    'pool.application_name with NUL',
    { primary: P, pool: { application_name: 'a\0b' } },
    'pool.application_name',
    /without NUL/,
  ],
  ['pool.types without getTypeParser', { primary: P, pool: { types: {} } }, 'pool.types', /getTypeParser/],
  ['pool.log not a function', { primary: P, pool: { log: true } }, 'pool.log', /a function, got true/],
  ['pool is not an object', { primary: P, pool: 'big' }, 'pool', /object of pg.Pool options/],
  ['pool names a host', { primary: P, pool: { host: 'x' } }, 'pool.host', /belongs to a node/],
  [
    'pool names a connectionString',
    { primary: P, pool: { connectionString: P } },
    'pool.connectionString',
    /belongs to a node/,
  ],
  ['pool.extra not an object', { primary: P, pool: { extra: 5 } }, 'pool.extra', /passed to pg unchecked/],
  [
    'pool.extra hides a known option',
    { primary: P, pool: { extra: { max: 500 } } },
    'pool.extra.max',
    /give it as pool.max so that it is checked/,
  ],
  // --- TLS ---
  [
    "pool.ssl 'yes'",
    { primary: P, pool: { ssl: 'yes' } },
    'pool.ssl',
    /true, false or an object of tls.connect options .*, got "yes"/,
  ],
  ["per-node ssl 'true'", { nodes: [{ url: P, ssl: 'true' }] }, 'nodes[0].ssl', /got "true"/],
  [
    'ssl.rejectUnauthorised (British spelling)',
    { primary: P, pool: { ssl: { rejectUnauthorised: false } } },
    'pool.ssl.rejectUnauthorised',
    /did you mean rejectUnauthorized\?/,
  ],
  [
    'ssl.rejectUnauthorized as text',
    { primary: P, pool: { ssl: { rejectUnauthorized: 'false' } } },
    'pool.ssl.rejectUnauthorized',
    /true or false, got "false"/,
  ],
  [
    'ssl.ca is a file name',
    { primary: P, pool: { ssl: { ca: '/etc/ssl/ca.crt' } } },
    'pool.ssl.ca',
    /PEM contents, not a file name/,
  ],
  [
    'ssl.ca array with a number',
    { primary: P, pool: { ssl: { ca: [PEM, 5] } } },
    'pool.ssl.ca[1]',
    /PEM string or Buffer/,
  ],
  [
    'ssl.minVersion unknown',
    { primary: P, pool: { ssl: { minVersion: 'TLSv1.4' } } },
    'pool.ssl.minVersion',
    /'TLSv1.3'/,
  ],
  [
    'sslnegotiation bogus',
    { primary: P, pool: { sslnegotiation: 'fast' } },
    'pool.sslnegotiation',
    /'postgres', 'direct'/,
  ],
  // --- write functions, classifier cache ---
  [
    'writeFunctions not an array',
    { primary: P, writeFunctions: 'f' },
    'writeFunctions',
    /array of function names/,
  ],
  [
    'writeFunctions with SQL in it',
    { primary: P, writeFunctions: ['ok_fn', 'f(); DROP TABLE x'] },
    'writeFunctions[1]',
    /a function name/,
  ],
  [
    'writeFunctions with an empty name',
    { primary: P, writeFunctions: [''] },
    'writeFunctions[0]',
    /a function name/,
  ],
  ['classifierCacheSize text', { primary: P, classifierCacheSize: 'big' }, 'classifierCacheSize', /"big"/],
  [
    'classifierCacheSize negative',
    { primary: P, classifierCacheSize: -1 },
    'classifierCacheSize',
    /from 0 to 10000000/,
  ],
  // --- tokens, Patroni ---
  ['tokens without secrets', { primary: P, tokens: {} }, 'tokens.secrets', /non-empty array of secrets/],
  ['tokens.secrets empty', { primary: P, tokens: { secrets: [] } }, 'tokens.secrets', /non-empty array/],
  [
    'a short token secret',
    { primary: P, tokens: { secrets: [`${SECRET}${SECRET}`, SECRET.slice(0, 8)] } },
    'tokens.secrets[1]',
    /16 to 4096 characters, got a string of 8 characters/,
  ],
  [
    'a token secret that is a number',
    { primary: P, tokens: { secrets: [1234] } },
    'tokens.secrets[0]',
    /got a number/,
  ],
  [
    'tokens.requireSigned as text',
    { primary: P, tokens: { secrets: [`${SECRET}${SECRET}`], requireSigned: 'yes' } },
    'tokens.requireSigned',
    /true or false/,
  ],
  [
    'tokens key typo',
    { primary: P, tokens: { secret: [SECRET] } },
    'tokens.secret',
    /did you mean secrets\?/,
  ],
  [
    'patroni without urls',
    { primary: P, patroni: { password: SECRET } },
    'patroni.urls',
    /non-empty array of http/,
  ],
  [
    'patroni url not http',
    { primary: P, patroni: { urls: [P] } },
    'patroni.urls[0]',
    /http\(s\):\/\/ URL, got "postgres:\/\/app:\*\*\*@/,
  ],
  [
    'patroni url with credentials, broken',
    { primary: P, patroni: { urls: [`http://u:${SECRET}@[x`] } },
    'patroni.urls[0]',
    /http\(s\):\/\/ URL/,
  ],
  [
    'patroni.password a number',
    { primary: P, patroni: { urls: ['http://127.0.0.1:8008'], password: 1234 } },
    'patroni.password',
    /got a number/,
  ],
  [
    'patroni.intervalMs beyond a timer',
    { primary: P, patroni: { urls: ['http://127.0.0.1:8008'], intervalMs: TOO_LONG } },
    'patroni.intervalMs',
    /got 2147483648/,
  ],
  [
    'patroni key typo',
    { primary: P, patroni: { urls: ['http://127.0.0.1:8008'], user: 'x', password: SECRET } },
    'patroni.user',
    /did you mean username\?/,
  ],
  // --- the value itself is a URL with a password: the message shows it redacted ---
  ['a URL where an array belongs', { primary: P, replicas: R1 }, 'replicas', /got "postgres:\/\/app:\*\*\*@/],
  [
    'a URL as the strategy',
    { primary: P, readStrategy: R2 },
    'readStrategy',
    /got "postgres:\/\/app:\*\*\*@/,
  ],
  ['a URL as the password', { primary: obj(1, { password: [P] }) }, 'primary.password', /got an array/],
]

describe('createCluster rejects bad configurations with a ConfigError', () => {
  it('has at least 100 cases', () => {
    expect(BAD.length).toBeGreaterThanOrEqual(100)
  })

  it.each(BAD)('%s', (_what, config, field, problem) => {
    const err = configError(config)
    expect(err.field).toBe(field)
    expect(err.code).toBe('PGSPLIT_CONFIG')
    expect(err.message).toContain(field)
    expect(err.message).toMatch(problem)
    // What would have been accepted, as a separate field for programs.
    expect(typeof err.expected === 'string' && err.expected.length > 0, `expected of ${err.message}`).toBe(
      true,
    )
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

describe('valid configurations at the edges', () => {
  it('accepts every bound at its limit, and the limits are within what a timer holds', () => {
    for (const [field, { max }] of Object.entries(LIMITS)) {
      if (/Ms$|ms$/.test(field)) expect(max, field).toBeLessThanOrEqual(2 ** 31 - 1)
    }
    const config = normalizeConfig({
      primary: P,
      pool: { connectionTimeoutMillis: 600_000, query_timeout: 86_400_000, statement_timeout: 2 ** 31 - 1 },
      healthCheck: { intervalMs: 3_600_000, timeoutMs: 600_000, maxBackoffMs: 3_600_000 },
      failover: { timeoutMs: 3_600_000, pollIntervalMs: 60_000, writeTimeoutMs: 3_600_000 },
      causalWaitMs: 60_000,
      consistency: { mode: 'sticky', windowMs: 3_600_000 },
      maxLag: { ms: 0 },
    })
    expect(config.healthCheck.intervalMs).toBe(3_600_000)
    expect(config.failover.writeTimeoutMs).toBe(3_600_000)
    expect(config.nodes[0]!.poolConfig.query_timeout).toBe(86_400_000)
    expect(config.maxLag).toEqual({ bytes: undefined, ms: 0 })
  })

  it('a wrong secret is described by its type and length, never shown', () => {
    for (const [config, field] of [
      [{ primary: P, tokens: { secrets: ['too-short-sekrit'.slice(0, 12)] } }, 'tokens.secrets[0]'],
      [
        { primary: P, patroni: { urls: ['http://127.0.0.1:8008'], password: 'x'.repeat(20_000) } },
        'patroni.password',
      ],
      [{ primary: { host: '127.0.0.1', password: ['too-short-sekrit'] } }, 'primary.password'],
    ] as const) {
      const err = configError(config)
      expect(err.field).toBe(field)
      expect(err.message).not.toMatch(/too-short|xxxxxxxx/)
    }
  })

  it('classifierCacheSize 0 turns the cache off', () => {
    const config = normalizeConfig({ primary: P, classifierCacheSize: 0 })
    expect(config.classifierCacheSize).toBe(0)
    const classifier = new StatementClassifier({ cacheSize: config.classifierCacheSize })
    expect(classifier.classify('SELECT 1').kind).toBe('read')
    classifier.markWrite('SELECT my_fn()')
    expect(classifier.cacheSize).toBe(0)
    // Without a cache nothing is learnt either (documented): the text is classified afresh.
    expect(classifier.classify('SELECT my_fn()').kind).toBe('read')
  })

  it('passes pool.extra to pg unchecked, and query_timeout: undefined removes the bound knowingly', () => {
    const config = normalizeConfig({
      primary: { url: P, extra: { futureOption: 'x' } },
      pool: { extra: { anotherOne: 2 }, query_timeout: undefined },
    })
    const pool = config.nodes[0]!.poolConfig as Record<string, unknown>
    expect(pool.futureOption).toBe('x')
    expect(pool.anotherOne).toBe(2)
    expect(pool.extra).toBeUndefined()
    expect('query_timeout' in pool && pool.query_timeout === undefined).toBe(true)
  })

  it('accepts the URL parameters pg reads', () => {
    for (const query of [
      '?sslmode=disable',
      '?sslmode=verify-full',
      '?sslmode=no-verify',
      '?ssl=true',
      '?ssl=0',
      '?application_name=app&options=-c%20search_path%3Dx',
      '?statement_timeout=1000&lock_timeout=500',
      '?sslnegotiation=postgres',
    ]) {
      expect(() => normalizeConfig({ primary: url(1, query) }), query).not.toThrow()
    }
  })

  it('accepts the ssl settings pg accepts', () => {
    for (const ssl of [
      true,
      false,
      { rejectUnauthorized: false },
      { ca: PEM, servername: 'db' },
      { ca: [PEM] },
    ]) {
      expect(() => normalizeConfig({ primary: P, pool: { ssl } }), JSON.stringify(ssl)).not.toThrow()
    }
  })

  it('tells loopback forms apart from other addresses only where they differ', () => {
    expect(addressKey('localhost', 5432)).toBe(addressKey('127.0.0.1', 5432))
    expect(addressKey('[::1]', 5432)).toBe(addressKey('LOCALHOST', 5432))
    expect(addressKey('0:0:0:0:0:0:0:1', 5432)).toBe(addressKey('localhost', 5432))
    expect(addressKey('localhost', 5432)).not.toBe(addressKey('localhost', 5433))
    expect(addressKey('127.0.0.2', 5432)).not.toBe(addressKey('127.0.0.1', 5432))
    expect(addressKey('db1.example', 5432)).not.toBe(addressKey('db2.example', 5432))
    // The same ports on loopback under different spellings, in different orders, are fine.
    expect(() =>
      normalizeConfig({
        nodes: [`postgres://localhost:1/a`, `postgres://127.0.0.1:2/a`, `postgres://[::1]:3/a`],
      }),
    ).not.toThrow()
  })

  it('accepts nodes as an async function, with discovery and tokens; patroni; no secret in JSON', async () => {
    const list = async () => [P, R1]
    const config = normalizeConfig({
      nodes: list,
      discovery: { intervalMs: 5_000 },
      tokens: { secrets: [`${SECRET}-signing-key`], requireSigned: true },
    })
    expect(config.nodes).toEqual([])
    expect(config.nodeSource).toBe(list)
    expect(config.discovery).toEqual({ intervalMs: 5_000 })
    expect(config.tokens).toEqual({ secrets: [`${SECRET}-signing-key`], requireSigned: true })
    // Patroni lists the members: it takes a static list (fallback and connection template).
    const patroni = normalizeConfig({
      nodes: [P],
      patroni: { urls: ['http://127.0.0.1:8008'], username: 'admin', password: SECRET, timeoutMs: 1_000 },
    }).patroni
    expect(patroni?.password).toBe(SECRET)
    expect(JSON.stringify(patroni)).not.toContain(SECRET)
    // What the function returns is checked the same way, at run time.
    expect(normalizeNodeList(await list(), config.pool).map((n) => n.name)).toEqual([
      '127.0.0.1:1',
      '127.0.0.1:2',
    ])
    expect(() => normalizeNodeList([P, `postgres://app:${ENC}@localhost:1/app`], config.pool)).toThrow(
      /nodes\(\)\[1\] duplicates node/,
    )
    expect(() => normalizeNodeList('nope', config.pool)).toThrow(ConfigError)
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
