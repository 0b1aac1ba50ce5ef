import {
  boolean,
  duration,
  fail,
  func,
  integer,
  isPlainObject,
  knownKeys,
  MAX_SERVER_MS,
  oneOf,
  string,
} from '../config-checks.js'
import { ConfigError } from '../errors.js'

type Check = (field: string, value: unknown) => void

const HOUR = 3_600_000
const DAY = 24 * HOUR

/** A server-side timeout (sent to PostgreSQL, int4 ms): `false` or 0 leaves the server's setting. */
const serverTimeout: Check = (field, value) => {
  if (value === false || value === 0) return
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > MAX_SERVER_MS)
    fail(field, `false or whole milliseconds from 1 to ${MAX_SERVER_MS}`, value)
}

/** tls.connect() and tls.createSecureContext() options: what pg passes on for `ssl: {...}`. */
const TLS_OPTIONS = [
  'ca',
  'cert',
  'key',
  'pfx',
  'passphrase',
  'crl',
  'rejectUnauthorized',
  'servername',
  'checkServerIdentity',
  'minVersion',
  'maxVersion',
  'ciphers',
  'sigalgs',
  'ecdhCurve',
  'dhparam',
  'honorCipherOrder',
  'secureOptions',
  'secureProtocol',
  'secureContext',
  'session',
  'minDHSize',
  'ALPNProtocols',
  'privateKeyEngine',
  'privateKeyIdentifier',
  'clientCertEngine',
  'sessionIdContext',
  'ticketKeys',
  'sessionTimeout',
  'enableTrace',
  'highWaterMark',
  'pskCallback',
  'allowPartialTrustChain',
]

/** A PEM value: a string, Buffer, or an array of them; a file path given as the value is a mistake. */
function pem(field: string, value: unknown): void {
  const items = Array.isArray(value) ? value : [value]
  for (const [i, item] of items.entries()) {
    const path = Array.isArray(value) ? `${field}[${i}]` : field
    if (Buffer.isBuffer(item) || item instanceof Uint8Array) continue
    if (isPlainObject(item)) continue // { pem, passphrase } for key/pfx
    if (typeof item !== 'string') fail(path, 'a PEM string or Buffer (or an array of them)', item)
    if (!item.includes('-----BEGIN')) {
      throw new ConfigError(
        path,
        `must be the PEM contents, not a file name: got a string without '-----BEGIN' (read the file: fs.readFileSync(path, 'utf8'), or use the URL parameter sslrootcert=/path)`,
        { expected: 'PEM contents' },
      )
    }
  }
}

const checkSsl: Check = (field, value) => {
  if (typeof value === 'boolean') return
  if (!isPlainObject(value)) {
    fail(field, 'true, false or an object of tls.connect options ({ ca, rejectUnauthorized, ... })', value)
  }
  knownKeys(field, value, TLS_OPTIONS)
  for (const key of ['ca', 'cert', 'key', 'pfx', 'crl'] as const) {
    if (value[key] !== undefined) pem(`${field}.${key}`, value[key])
  }
  boolean(`${field}.rejectUnauthorized`, value.rejectUnauthorized, undefined)
  string(`${field}.servername`, value.servername, { nonEmpty: true })
  string(`${field}.passphrase`, value.passphrase)
  func(`${field}.checkServerIdentity`, value.checkServerIdentity)
  for (const key of ['minVersion', 'maxVersion'] as const) {
    oneOf(`${field}.${key}`, value[key], ['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3'], undefined)
  }
}

const bool: Check = (field, value) => {
  boolean(field, value, undefined)
}
const fn: Check = func

/**
 * Every `pg.Pool` and `pg.Client` option pg documents (and its types declare), with its check.
 * `host`, `port`, `database` and `connectionString` belong to nodes; they are checked there.
 */
export const POOL_OPTION_CHECKS: Record<string, Check> = {
  // pg-pool
  max: (f, v) => integer(f, v, { min: 1, max: 10_000 }, undefined),
  min: (f, v) => integer(f, v, { min: 0, max: 10_000 }, undefined),
  idleTimeoutMillis: (f, v) => {
    // 0 (or null) keeps idle clients open forever: that is a resource, not a wait.
    if (v !== 0 && v !== null) duration(f, v, { min: 1, max: DAY }, undefined)
  },
  connectionTimeoutMillis: (f, v) => {
    // pg reads 0 (and false) as "wait forever"; pgsplit bounds every wait.
    if (v === 0 || v === false) {
      throw new ConfigError(
        f,
        `must be a bound: ${String(v)} means wait forever in pg; give 1 to 600000 ms`,
        {
          expected: 'a duration from 1 to 600000 ms',
        },
      )
    }
    duration(f, v, { min: 1, max: 10 * 60_000 }, undefined)
  },
  allowExitOnIdle: bool,
  maxUses: (f, v) => {
    if (v !== Number.POSITIVE_INFINITY) integer(f, v, { min: 1, max: Number.MAX_SAFE_INTEGER }, undefined)
  },
  maxLifetimeSeconds: (f, v) => integer(f, v, { min: 0, max: DAY / 1_000 }, undefined),
  log: fn,
  Promise: fn,
  Client: fn,
  onConnect: fn,
  verify: fn,
  // pg.Client
  user: (f, v) => string(f, v, { nonEmpty: true, maxLength: 1_000 }),
  password: (f, v) => {
    if (v !== undefined && typeof v !== 'string' && typeof v !== 'function')
      fail(f, 'a string or a function returning one', v)
  },
  ssl: checkSsl,
  sslnegotiation: (f, v) => oneOf(f, v, ['postgres', 'direct'], undefined),
  enableChannelBinding: bool,
  keepAlive: bool,
  keepAliveInitialDelayMillis: (f, v) => duration(f, v, { min: 0, max: HOUR }, undefined),
  query_timeout: (f, v) => {
    if (v === 0 || v === false) {
      throw new ConfigError(
        f,
        `must be a bound: ${String(v)} means no timeout in pg; give 1 to 86400000 ms (or undefined to remove the bound knowingly)`,
        { expected: 'a duration from 1 to 86400000 ms' },
      )
    }
    duration(f, v, { min: 1, max: DAY }, undefined)
  },
  statement_timeout: serverTimeout,
  lock_timeout: serverTimeout,
  idle_in_transaction_session_timeout: serverTimeout,
  application_name: (f, v) => string(f, v, { maxLength: 1_000 }),
  fallback_application_name: (f, v) => string(f, v, { maxLength: 1_000 }),
  options: (f, v) => string(f, v, { maxLength: 10_000 }),
  client_encoding: (f, v) => string(f, v, { nonEmpty: true, maxLength: 100 }),
  types: (f, v) => {
    if (v !== undefined && (!isPlainObject(v) || typeof v.getTypeParser !== 'function'))
      fail(f, 'an object with getTypeParser() (pg.types or a TypeOverrides)', v)
  },
  stream: fn,
  binary: bool,
  pipeline: bool,
  /** pgsplit's explicit passthrough: options pg adds later, given to pg unchecked. */
  extra: (f, v) => {
    if (v !== undefined && !isPlainObject(v)) fail(f, 'an object of options passed to pg unchecked', v)
  },
}

export const POOL_OPTION_NAMES = Object.keys(POOL_OPTION_CHECKS)

/** Keys that name a node's address: on nodes only, never in the shared `pool`. */
export const ADDRESS_KEYS = ['connectionString', 'host', 'port', 'database'] as const

/** What the older pg-pool and other drivers call these options. */
const ALIASES: Record<string, string> = {
  poolSize: 'max',
  maxConnections: 'max',
  connectionLimit: 'max',
  connectTimeout: 'connectionTimeoutMillis',
  connect_timeout: 'connectionTimeoutMillis',
  idleTimeout: 'idleTimeoutMillis',
  queryTimeout: 'query_timeout',
  statementTimeout: 'statement_timeout',
  applicationName: 'application_name',
  dbname: 'database',
  username: 'user',
  sslmode: 'ssl (or ?sslmode= in the URL)',
}

/**
 * Checks pg options given in `pool` or on a node object. `extraKeys` are the node's own keys
 * (url, name, ...), which are not pg options.
 */
export function checkPoolOptions(
  field: string,
  options: Record<string, unknown>,
  extraKeys: readonly string[] = [],
): void {
  for (const [key, value] of Object.entries(options)) {
    const check = POOL_OPTION_CHECKS[key]
    if (check !== undefined) {
      if (value !== undefined) check(`${field}.${key}`, value)
      continue
    }
    if (extraKeys.includes(key)) continue
    const alias = ALIASES[key]
    if (alias !== undefined) {
      throw new ConfigError(`${field}.${key}`, `is not a pg option (did you mean ${alias}?)`, {
        expected: alias,
      })
    }
    knownKeys(
      field,
      { [key]: value },
      [...POOL_OPTION_NAMES, ...extraKeys],
      '; options pg adds later go in extra: {...}',
    )
  }
  const extra = options.extra
  if (isPlainObject(extra)) {
    for (const key of Object.keys(extra)) {
      if (POOL_OPTION_CHECKS[key] !== undefined || extraKeys.includes(key)) {
        throw new ConfigError(
          `${field}.extra.${key}`,
          `is a known option: give it as ${field}.${key} so that it is checked`,
          { expected: `${field}.${key}` },
        )
      }
    }
  }
}

/** The pg config of a node: `extra` flattened in, `undefined` values (a knowing "none") kept. */
export function flattenPoolOptions(options: Record<string, unknown>): Record<string, unknown> {
  const { extra, ...rest } = options
  return isPlainObject(extra) ? { ...extra, ...rest } : rest
}
