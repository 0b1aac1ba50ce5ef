import type { PoolConfig } from 'pg'
import {
  boolean,
  describe,
  duration,
  fail,
  finite,
  integer,
  isPlainObject,
  knownKeys,
  object,
  oneOf,
  string,
} from './config-checks.js'
import { ConfigError } from './errors.js'
import { addressKey, type NodeAddress, parseConnectionString, redact } from './pools/connection-string.js'
import {
  ADDRESS_KEYS,
  checkPoolOptions,
  flattenPoolOptions,
  POOL_OPTION_NAMES,
} from './pools/pool-options.js'

/** Options pg adds after this version of pgsplit: handed to pg as they are, unchecked. */
export interface PassthroughOptions {
  extra?: Record<string, unknown>
}

/** HMAC-SHA256 signing of the tokens `lastWriteToken()` hands out. */
export interface TokensConfig {
  /** At least one secret of 16+ characters. The first signs, every one verifies (rotation). */
  secrets: string[]
  /** Refuse tokens without a signature. Default false. */
  requireSigned?: boolean
}

/** `pg.Pool` options shared by every node (a node's own object overrides them). */
export type PoolOptions = Omit<PoolConfig, 'connectionString' | 'host' | 'port' | 'database'> &
  PassthroughOptions

/** One node given as an object: pg `PoolConfig` (or `url`) plus pgsplit's per-node settings. */
export interface NodeConfig extends PoolConfig, PassthroughOptions {
  /** Connection URL; an alternative to `connectionString`/`host`/`port`. */
  url?: string
  /** Name in `topology()` and events. Default `host:port`. */
  name?: string
  /** Share of reads for the `'weighted'` strategy (and a tie-breaker for the others). Default 1. */
  weight?: number
  /** Overrides the cluster's `maxLag` for this replica. */
  maxLag?: MaxLag
}

/** A node: a `postgres://` URL or a {@link NodeConfig}. */
export type NodeInput = string | NodeConfig

/** Replicas beyond either bound take no reads. */
export interface MaxLag {
  bytes?: number
  ms?: number
}

/** What a read strategy sees of an eligible replica. */
export interface ReadCandidate {
  readonly name: string
  readonly host: string
  readonly port: number
  readonly lagBytes: number | null
  readonly lagMs: number | null
  readonly inFlight: number
  readonly weight: number
}

/** A custom strategy: return one of the candidates (never called with an empty list). */
export type ReadStrategyFunction = (candidates: readonly ReadCandidate[]) => ReadCandidate | undefined

export type ReadStrategyName = 'round-robin' | 'random' | 'least-lag' | 'least-busy' | 'weighted'
export type ReadStrategy = ReadStrategyName | ReadStrategyFunction

export type ConsistencyMode = 'eventual' | 'causal' | { mode: 'sticky'; windowMs: number }

export interface HealthCheckConfig {
  /** Probe period per node. Default 1000. */
  intervalMs?: number
  /** Bound of one probe (connect + query). Default 1000. */
  timeoutMs?: number
  /** Consecutive failed probes before a replica is down. Default 2. */
  failuresBeforeDown?: number
  /** Consecutive good probes before a down replica is up again. Default 2. */
  successesBeforeUp?: number
  /** Longest gap between probes of a down node (backoff cap). Default 5000. */
  maxBackoffMs?: number
  /** Exact time lag from a heartbeat row the monitor writes on the primary. Default false. */
  heartbeat?: boolean | { table?: string }
}

export interface ClusterConfig {
  /** The primary. With `replicas`; excludes `nodes`. */
  primary?: NodeInput
  replicas?: NodeInput[]
  /**
   * Role-less list: the primary is found with `pg_is_in_recovery()`. Excludes `primary`/`replicas`.
   * Or an async function returning the list (DNS SRV, Kubernetes Endpoints, CloudNativePG's
   * services), called again every `discovery.intervalMs` and when the primary is lost.
   */
  nodes?: NodeInput[] | (() => Promise<NodeInput[]>)
  /** With `nodes` as a function: how often it is called again. Default 5000. */
  discovery?: { intervalMs?: number }
  /** `pg.Pool` options for every node. */
  pool?: PoolOptions
  /** How a read picks among eligible replicas. Default `'round-robin'`. */
  readStrategy?: ReadStrategy
  /** Default `{ bytes: 16 MiB, ms: 5000 }`. */
  maxLag?: MaxLag
  healthCheck?: HealthCheckConfig
  /** What a read does when no replica is eligible. Default `'primary'`. */
  onNoReplica?: 'primary' | 'error'
  /** Default `'eventual'`. */
  consistency?: ConsistencyMode
  /** Causal reads: how long to wait on a replica for a token before using the primary. Default 100. */
  causalWaitMs?: number
  failover?: {
    /** How long writes wait for a new primary. Default 30000. */
    timeoutMs?: number
    /** Discovery poll period while no primary is known. Default 100. */
    pollIntervalMs?: number
    /**
     * Client-side bound of each write sent through `db.query` (the pool's `query_timeout` when
     * that is lower). Keep it below your HA manager's failover time (Patroni's `ttl`, 30 s by
     * default), so a frozen primary cannot acknowledge a write after its replacement was elected.
     * Default 20000.
     */
    writeTimeoutMs?: number
  }
  /** Where `transaction(fn, { readOnly: true })` runs. Default `'primary'`. */
  readOnlyTransactions?: 'primary' | 'replica'
  /** User functions that write: statements calling them go to the primary. */
  writeFunctions?: string[]
  /** Bound of the per-SQL-text classification cache; 0 turns the cache off. Default 5000. */
  classifierCacheSize?: number
  /** Signed read-your-writes tokens: HMAC secrets (the first signs, all verify), each >= 16 characters. */
  tokens?: TokensConfig
  /**
   * Follow Patroni: its REST API's `GET /cluster` says who is leader (the only node writes go
   * to), which members exist and which take no reads. The first node of `nodes`/`primary` gives
   * the connection settings of members pgsplit does not know yet.
   */
  patroni?: PatroniConfig
}

/** Patroni as the topology source (`createCluster({ nodes, patroni })`). */
export interface PatroniConfig {
  /** REST API base URLs of the members, e.g. `http://10.0.0.1:8008`. */
  urls: string[]
  /** Basic auth of the REST API (`restapi.authentication`). */
  username?: string
  password?: string
  /** Poll period of `GET /cluster`. Default 100. */
  intervalMs?: number
  /** Bound of one REST call. Default 1000. */
  timeoutMs?: number
}

/** `patroni` with its defaults; `password` and `template` are non-enumerable (never in JSON). */
export interface NormalizedPatroni {
  urls: string[]
  username?: string
  password?: string
  intervalMs: number
  timeoutMs: number
  /** The first node as the user gave it: the connection template for members pgsplit does not know. */
  template: NodeInput
}

export type DeclaredRole = 'primary' | 'replica' | 'unknown'

export interface NormalizedNode {
  name: string
  address: NodeAddress
  /** The server's identity as known without DNS ({@link addressKey}): equal keys, same server. */
  addressKey: string
  /** Ready for `new pg.Pool(...)`; its password is non-enumerable. */
  poolConfig: PoolConfig
  weight: number
  maxLag: MaxLag | undefined
  declaredRole: DeclaredRole
}

export interface NormalizedConfig {
  nodes: NormalizedNode[]
  pool: PoolOptions
  readStrategy: ReadStrategy
  maxLag: MaxLag
  healthCheck: Required<Omit<HealthCheckConfig, 'heartbeat'>> & { heartbeat: false | { table: string } }
  onNoReplica: 'primary' | 'error'
  consistency: ConsistencyMode
  causalWaitMs: number
  failover: { timeoutMs: number; pollIntervalMs: number; writeTimeoutMs: number }
  readOnlyTransactions: 'primary' | 'replica'
  writeFunctions: string[]
  classifierCacheSize: number
  /** `nodes` given as a function (then `nodes` above is empty until it is called). */
  nodeSource: (() => Promise<NodeInput[]>) | undefined
  discovery: { intervalMs: number }
  tokens: { secrets: string[]; requireSigned: boolean } | undefined
  patroni: NormalizedPatroni | undefined
}

export const DEFAULTS = {
  readStrategy: 'round-robin',
  maxLag: { bytes: 16 * 1024 * 1024, ms: 5_000 },
  healthCheck: {
    intervalMs: 1_000,
    timeoutMs: 1_000,
    failuresBeforeDown: 2,
    successesBeforeUp: 2,
    maxBackoffMs: 5_000,
  },
  onNoReplica: 'primary',
  consistency: 'eventual',
  causalWaitMs: 100,
  failover: { timeoutMs: 30_000, pollIntervalMs: 100, writeTimeoutMs: 20_000 },
  readOnlyTransactions: 'primary',
  classifierCacheSize: 5_000,
  discovery: { intervalMs: 5_000 },
  /** Patroni's REST API answers in a few ms: a fast poll follows a leader change within ~100 ms. */
  patroni: { intervalMs: 100, timeoutMs: 1_000 },
  /** pg defaults wait forever; pgsplit bounds every wait. */
  pool: { connectionTimeoutMillis: 5_000, query_timeout: 60_000, keepAlive: true, max: 10 },
} as const

const MINUTE = 60_000
const HOUR = 60 * MINUTE

/**
 * The accepted range of every numeric option (durations in ms). Upper bounds are far above any
 * sensible setting and always within what Node's timers hold (2^31-1 ms): a longer delay would
 * silently fire after 1 ms.
 */
export const LIMITS = {
  'healthCheck.intervalMs': { min: 10, max: HOUR },
  'healthCheck.timeoutMs': { min: 10, max: 10 * MINUTE },
  'healthCheck.maxBackoffMs': { min: 10, max: HOUR },
  'healthCheck.failuresBeforeDown': { min: 1, max: 1_000 },
  'healthCheck.successesBeforeUp': { min: 1, max: 1_000 },
  'failover.timeoutMs': { min: 1, max: HOUR },
  'failover.pollIntervalMs': { min: 10, max: MINUTE },
  'failover.writeTimeoutMs': { min: 1, max: HOUR },
  causalWaitMs: { min: 0, max: MINUTE },
  'consistency.windowMs': { min: 1, max: HOUR },
  'maxLag.bytes': { min: 0, max: Number.MAX_SAFE_INTEGER },
  'maxLag.ms': { min: 0, max: 24 * HOUR },
  weight: { min: 0, max: 1_000_000 },
  classifierCacheSize: { min: 0, max: 10_000_000 },
  'discovery.intervalMs': { min: 100, max: 24 * HOUR },
  'patroni.intervalMs': { min: 100, max: HOUR },
  'patroni.timeoutMs': { min: 10, max: MINUTE },
} as const

const STRATEGIES: readonly ReadStrategyName[] = [
  'round-robin',
  'random',
  'least-lag',
  'least-busy',
  'weighted',
]
const TOP_LEVEL_KEYS = [
  'primary',
  'replicas',
  'nodes',
  'discovery',
  'pool',
  'readStrategy',
  'maxLag',
  'healthCheck',
  'onNoReplica',
  'consistency',
  'causalWaitMs',
  'failover',
  'readOnlyTransactions',
  'writeFunctions',
  'classifierCacheSize',
  'tokens',
  'patroni',
]
/** Keys that exist in exactly one nested object: given at the top level, they are misplaced. */
const NESTED_ONLY: Record<string, string> = {
  intervalMs: 'healthCheck.intervalMs',
  failuresBeforeDown: 'healthCheck.failuresBeforeDown',
  successesBeforeUp: 'healthCheck.successesBeforeUp',
  maxBackoffMs: 'healthCheck.maxBackoffMs',
  heartbeat: 'healthCheck.heartbeat',
  pollIntervalMs: 'failover.pollIntervalMs',
  writeTimeoutMs: 'failover.writeTimeoutMs',
  windowMs: "consistency: { mode: 'sticky', windowMs }",
  secrets: 'tokens.secrets',
}
/** A node object's own keys, besides pg options and its address. */
const NODE_ONLY_KEYS = ['url', 'name', 'weight', 'maxLag']
const NODE_KEYS = [...NODE_ONLY_KEYS, ...ADDRESS_KEYS]
/** What a connection URL decides on its own in pg. */
const URL_PARTS = ['host', 'port', 'database', 'user', 'password'] as const

function normalizeMaxLag(field: string, value: unknown, fallback: MaxLag | undefined): MaxLag | undefined {
  if (value === undefined) return fallback
  const lag = object(field, value, ['bytes', 'ms'], 'an object { bytes?, ms? }')
  const bytes = finite(`${field}.bytes`, lag.bytes, LIMITS['maxLag.bytes'], undefined)
  const ms = duration(`${field}.ms`, lag.ms, LIMITS['maxLag.ms'], undefined)
  if (bytes === undefined && ms === undefined) {
    // {} would silently turn the lag bound off.
    throw new ConfigError(field, 'must give at least one bound, bytes or ms (omit maxLag for the default)', {
      expected: '{ bytes?, ms? } with at least one of them',
    })
  }
  return { bytes, ms }
}

function normalizeNode(
  field: string,
  input: unknown,
  role: DeclaredRole,
  shared: PoolOptions,
): NormalizedNode {
  let own: Record<string, unknown>
  let url: string | undefined
  if (typeof input === 'string') {
    own = {}
    url = input
  } else if (isPlainObject(input)) {
    own = input
    checkPoolOptions(field, own, NODE_KEYS)
    if (own.url !== undefined && own.connectionString !== undefined) {
      throw new ConfigError(
        `${field}.connectionString`,
        'cannot be given with url: they are the same option',
        {
          expected: 'url or connectionString, not both',
        },
      )
    }
    for (const key of ['url', 'connectionString'] as const) {
      if (own[key] !== undefined && typeof own[key] !== 'string')
        fail(`${field}.${key}`, 'a postgres:// URL string', own[key])
    }
    url = (own.url as string | undefined) ?? (own.connectionString as string | undefined)
    if (url !== undefined) {
      // Measured: with a connection string pg takes host, port, database, user and password from
      // the URL alone (a missing one falls back to PG* variables), whatever the object says.
      const urlKey = own.url !== undefined ? 'url' : 'connectionString'
      for (const key of URL_PARTS) {
        if (own[key] !== undefined) {
          throw new ConfigError(
            `${field}.${key}`,
            `cannot be combined with ${urlKey}: pg would take the URL's ${key} and ignore this one; put it in the URL, or give the node as { host, port, database, user, password } without a URL`,
            { expected: `the ${key} inside the URL` },
          )
        }
      }
    }
  } else {
    throw new ConfigError(
      field,
      `must be a postgres:// URL or a pg config object, got ${describe(input, field)}`,
      { expected: 'a postgres:// URL or a pg config object' },
    )
  }
  const urlField =
    typeof input === 'string' ? field : `${field}.${own.url !== undefined ? 'url' : 'connectionString'}`

  if (own.host !== undefined) string(`${field}.host`, own.host, { nonEmpty: true, maxLength: 1_000 })
  if (own.port !== undefined) integer(`${field}.port`, own.port, { min: 1, max: 65_535 }, undefined)
  if (own.database !== undefined)
    string(`${field}.database`, own.database, { nonEmpty: true, maxLength: 1_000 })

  let address: NodeAddress
  let password: unknown
  if (url !== undefined) {
    const { password: fromUrl, ...parsed } = parseConnectionString(url, urlField)
    password = fromUrl
    address = parsed
  } else {
    if (own.host === undefined) {
      throw new ConfigError(`${field}.host`, 'is required when no url/connectionString is given', {
        expected: 'a host name, an IP address or a socket directory',
      })
    }
    password = own.password
    address = {
      host: own.host as string,
      port: (own.port as number | undefined) ?? 5432,
      database: own.database as string | undefined,
      user: own.user as string | undefined,
    }
  }

  const weight = finite(`${field}.weight`, own.weight, LIMITS.weight, 1)
  const name = string(`${field}.name`, own.name, { nonEmpty: true, maxLength: 200 })
  const poolOverrides: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(own)) {
    if (!NODE_KEYS.includes(key) && key !== 'password') poolOverrides[key] = value
  }

  const merged: Record<string, unknown> = {
    ...DEFAULTS.pool,
    ...flattenPoolOptions(shared as Record<string, unknown>),
    ...flattenPoolOptions(poolOverrides),
  }
  if (typeof merged.min === 'number' && typeof merged.max === 'number' && merged.min > merged.max) {
    const minField = own.min !== undefined ? `${field}.min` : 'pool.min'
    throw new ConfigError(minField, `must be at most max (${merged.max}), got ${merged.min}`, {
      expected: `an integer from 0 to ${merged.max}`,
    })
  }
  const poolConfig: PoolConfig = { ...merged, host: address.host, port: address.port }
  if (address.database !== undefined) poolConfig.database = address.database
  if (address.user !== undefined) poolConfig.user = address.user
  // pg-pool's trick: keep the secret out of JSON.stringify, console.log and spreads.
  if (password !== undefined) {
    Object.defineProperty(poolConfig, 'password', { value: password, enumerable: false, writable: true })
  }
  if (url !== undefined) {
    // pg parses the URL itself (sslmode, options, ...): the address above is what it will use.
    Object.defineProperty(poolConfig, 'connectionString', { value: url, enumerable: false, writable: true })
  }
  return {
    name: name ?? `${address.host}:${address.port}`,
    address,
    addressKey: addressKey(address.host, address.port),
    poolConfig,
    weight,
    maxLag: normalizeMaxLag(`${field}.maxLag`, own.maxLag, undefined),
    declaredRole: role,
  }
}

function normalizeConsistency(field: string, value: unknown): ConsistencyMode {
  if (value === undefined) return DEFAULTS.consistency
  if (value === 'eventual' || value === 'causal') return value
  const expected = "'eventual', 'causal' or { mode: 'sticky', windowMs }"
  if (!isPlainObject(value)) {
    const hint = value === 'sticky' ? " ({ mode: 'sticky', windowMs } needs its window)" : ''
    throw new ConfigError(field, `must be ${expected}, got ${describe(value)}${hint}`, { expected })
  }
  knownKeys(field, value, ['mode', 'windowMs'])
  if (value.mode !== 'sticky') {
    oneOf(`${field}.mode`, value.mode, ['sticky'], undefined)
    throw new ConfigError(`${field}.mode`, `must be 'sticky' in an object (or give ${expected})`, {
      expected,
    })
  }
  if (value.windowMs === undefined) {
    // A 0 ms window would send a read right after a write to a replica: no silent default.
    throw new ConfigError(
      `${field}.windowMs`,
      "is required with mode 'sticky': how long reads stay on the primary after a write",
      {
        expected: `a duration from 1 to ${LIMITS['consistency.windowMs'].max} ms`,
      },
    )
  }
  return {
    mode: 'sticky',
    windowMs: duration(`${field}.windowMs`, value.windowMs, LIMITS['consistency.windowMs'], 0),
  }
}

/** Validates a per-call timeout (`ready({ timeoutMs })`), within the bounds of `failover.timeoutMs`. */
export function validateTimeout(field: string, value: unknown, fallback: number): number {
  return duration(field, value, LIMITS['failover.timeoutMs'], fallback)
}

/** Validates a consistency override given per call or per scope. */
export function validateConsistency(value: unknown, field = 'consistency'): ConsistencyMode {
  return normalizeConsistency(field, value)
}

/** The config path of node `i` of a list: `nodes[i]`, or `primary` / `replicas[i - 1]`. */
type FieldOf = (i: number) => string

/** Refuses two nodes that are the same server ({@link addressKey}) or share a name. */
function checkDuplicates(nodes: readonly NormalizedNode[], fieldOf: FieldOf): void {
  const byKey = new Map<string, NormalizedNode>()
  const byName = new Set<string>()
  nodes.forEach((node, i) => {
    const other = byKey.get(node.addressKey)
    if (other !== undefined) {
      const same = `${other.address.host}:${other.address.port}`
      const here = `${node.address.host}:${node.address.port}`
      throw new ConfigError(
        fieldOf(i),
        `duplicates node ${other.name}: ${here === same ? `both are ${here}` : `${here} and ${same} are the same server`}`,
        { expected: 'each server once' },
      )
    }
    byKey.set(node.addressKey, node)
    if (byName.has(node.name)) {
      throw new ConfigError(`${fieldOf(i)}.name`, `duplicates the name ${JSON.stringify(node.name)}`, {
        expected: 'a name no other node has',
      })
    }
    byName.add(node.name)
  })
}

function normalizeNodeArray(field: string, value: unknown, shared: PoolOptions): NormalizedNode[] {
  if (!Array.isArray(value) || value.length === 0) {
    fail(field, 'a non-empty array of URLs or pg config objects', value)
  }
  const nodes = value.map((n, i) => normalizeNode(`${field}[${i}]`, n, 'unknown', shared))
  checkDuplicates(nodes, (i) => `${field}[${i}]`)
  return nodes
}

/**
 * Validates a node list returned by `nodes()` (a function) at run time, like the static list:
 * each node, and no server or name twice.
 */
export function normalizeNodeList(value: unknown, shared: PoolOptions, field = 'nodes()'): NormalizedNode[] {
  return normalizeNodeArray(field, value, shared)
}

function normalizeHealthCheck(value: unknown): NormalizedConfig['healthCheck'] {
  const hc = object('healthCheck', value, [
    'intervalMs',
    'timeoutMs',
    'failuresBeforeDown',
    'successesBeforeUp',
    'maxBackoffMs',
    'heartbeat',
  ])
  const d = DEFAULTS.healthCheck
  let heartbeat: false | { table: string } = false
  if (hc.heartbeat === true) heartbeat = { table: 'pgsplit_heartbeat' }
  else if (isPlainObject(hc.heartbeat)) {
    knownKeys('healthCheck.heartbeat', hc.heartbeat, ['table'])
    const table = hc.heartbeat.table ?? 'pgsplit_heartbeat'
    if (
      typeof table !== 'string' ||
      !/^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$/.test(table)
    ) {
      fail('healthCheck.heartbeat.table', 'a plain (optionally schema-qualified) table name', table)
    }
    heartbeat = { table }
  } else if (hc.heartbeat !== undefined && hc.heartbeat !== false) {
    fail('healthCheck.heartbeat', 'a boolean or { table }', hc.heartbeat)
  }
  const f = (key: keyof typeof d) => `healthCheck.${key}` as const
  return {
    intervalMs: duration(f('intervalMs'), hc.intervalMs, LIMITS[f('intervalMs')], d.intervalMs),
    timeoutMs: duration(f('timeoutMs'), hc.timeoutMs, LIMITS[f('timeoutMs')], d.timeoutMs),
    failuresBeforeDown: integer(
      f('failuresBeforeDown'),
      hc.failuresBeforeDown,
      LIMITS[f('failuresBeforeDown')],
      d.failuresBeforeDown,
    ),
    successesBeforeUp: integer(
      f('successesBeforeUp'),
      hc.successesBeforeUp,
      LIMITS[f('successesBeforeUp')],
      d.successesBeforeUp,
    ),
    maxBackoffMs: duration(f('maxBackoffMs'), hc.maxBackoffMs, LIMITS[f('maxBackoffMs')], d.maxBackoffMs),
    heartbeat,
  }
}

function normalizeTokens(value: unknown): NormalizedConfig['tokens'] {
  if (value === undefined) return undefined
  const tokens = object(
    'tokens',
    value,
    ['secrets', 'requireSigned'],
    'an object { secrets, requireSigned? }',
  )
  if (!Array.isArray(tokens.secrets) || tokens.secrets.length === 0) {
    fail('tokens.secrets', 'a non-empty array of secrets (the first signs, all verify)', tokens.secrets)
  }
  const secrets = tokens.secrets.map((secret: unknown, i) => {
    if (typeof secret !== 'string' || secret.length < 16 || secret.length > 4_096) {
      fail(`tokens.secrets[${i}]`, 'a string of 16 to 4096 characters', secret)
    }
    return secret
  })
  return { secrets, requireSigned: boolean('tokens.requireSigned', tokens.requireSigned, false) }
}

function normalizePatroni(value: unknown, template: unknown): NormalizedConfig['patroni'] {
  if (value === undefined) return undefined
  const p = object('patroni', value, ['urls', 'username', 'password', 'intervalMs', 'timeoutMs'])
  if (!Array.isArray(p.urls) || p.urls.length === 0) {
    fail('patroni.urls', 'a non-empty array of http(s):// URLs of Patroni REST APIs', p.urls)
  }
  const urls = p.urls.map((u: unknown, i) => {
    const field = `patroni.urls[${i}]`
    if (typeof u !== 'string') fail(field, 'an http(s):// URL', u)
    let parsed: URL
    try {
      parsed = new URL(u)
    } catch {
      return fail(field, 'an http(s):// URL', u)
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') fail(field, 'an http(s):// URL', u)
    return u
  })
  const username = string('patroni.username', p.username, { nonEmpty: true, maxLength: 1_000 })
  const password = string('patroni.password', p.password, { maxLength: 10_000 })
  if (password !== undefined && username === undefined) {
    throw new ConfigError('patroni.password', 'needs patroni.username (HTTP basic auth sends both)', {
      expected: 'patroni.username with it',
    })
  }
  const d = DEFAULTS.patroni
  const out: NormalizedPatroni = {
    urls,
    intervalMs: duration('patroni.intervalMs', p.intervalMs, LIMITS['patroni.intervalMs'], d.intervalMs),
    timeoutMs: duration('patroni.timeoutMs', p.timeoutMs, LIMITS['patroni.timeoutMs'], d.timeoutMs),
    template: template as NodeInput,
  }
  if (username !== undefined) out.username = username
  // The REST password and the template (it may hold the database password) stay out of JSON.
  if (password !== undefined)
    Object.defineProperty(out, 'password', { value: password, enumerable: false, writable: true })
  Object.defineProperty(out, 'template', { enumerable: false })
  return out
}

function normalizeWriteFunctions(value: unknown): string[] {
  if (value === undefined) return []
  if (!Array.isArray(value)) fail('writeFunctions', 'an array of function names', value)
  return value.map((f: unknown, i) => {
    const field = `writeFunctions[${i}]`
    if (
      typeof f !== 'string' ||
      !/^\s*("?[A-Za-z_][A-Za-z0-9_$]*"?\.)?"?[A-Za-z_][A-Za-z0-9_$]*"?\s*$/.test(f)
    ) {
      fail(field, "a function name, bare or schema-qualified ('audit_log', 'app.audit_log')", f)
    }
    return f.trim().toLowerCase()
  })
}

/**
 * Validates the user's config and fills in defaults. Throws a {@link ConfigError} naming the
 * field path and what was expected; never echoes a password.
 */
export function normalizeConfig(config: ClusterConfig): NormalizedConfig {
  if (!isPlainObject(config)) fail('config', 'an object', config)
  for (const key of Object.keys(config)) {
    // A pg option or a probe setting at the top level: say where it belongs.
    const home = POOL_OPTION_NAMES.includes(key)
      ? `pool.${key}`
      : (NESTED_ONLY[key] ?? (NODE_ONLY_KEYS.includes(key) ? `a node object's ${key}` : undefined))
    if (home !== undefined && !TOP_LEVEL_KEYS.includes(key)) {
      throw new ConfigError(key, `is not a top-level option (did you mean ${home}?)`, { expected: home })
    }
  }
  knownKeys('', config, TOP_LEVEL_KEYS)
  const raw = config as Record<string, unknown>
  const pool = raw.pool === undefined ? {} : raw.pool
  if (!isPlainObject(pool)) fail('pool', 'an object of pg.Pool options', pool)
  for (const key of ADDRESS_KEYS) {
    if (pool[key] !== undefined) {
      throw new ConfigError(`pool.${key}`, 'belongs to a node, not to the shared pool options', {
        expected: 'the address in each node',
      })
    }
  }
  checkPoolOptions('pool', pool)

  let nodes: NormalizedNode[] = []
  let nodeSource: NormalizedConfig['nodeSource']
  if (raw.nodes !== undefined) {
    if (raw.primary !== undefined || raw.replicas !== undefined) {
      throw new ConfigError(
        'nodes',
        'cannot be combined with primary/replicas: give either nodes or primary (+ replicas)',
        {
          expected: 'nodes, or primary (+ replicas)',
        },
      )
    }
    if (typeof raw.nodes === 'function') {
      nodeSource = raw.nodes as () => Promise<NodeInput[]>
      if (raw.patroni !== undefined) {
        throw new ConfigError(
          'nodes',
          'cannot be a function together with patroni: Patroni lists the members',
          {
            expected: 'nodes: [...] (the fallback and the connection template) with patroni',
          },
        )
      }
    } else nodes = normalizeNodeArray('nodes', raw.nodes, pool)
  } else {
    if (raw.primary === undefined) {
      throw new ConfigError(
        'primary',
        'is required (or give nodes: [...] and let pgsplit find the primary)',
        {
          expected: 'a postgres:// URL or a pg config object',
        },
      )
    }
    nodes.push(normalizeNode('primary', raw.primary, 'primary', pool))
    if (raw.replicas !== undefined) {
      if (!Array.isArray(raw.replicas))
        fail('replicas', 'an array of URLs or pg config objects', raw.replicas)
      raw.replicas.forEach((r, i) => {
        nodes.push(normalizeNode(`replicas[${i}]`, r, 'replica', pool))
      })
    }
    checkDuplicates(nodes, (i) => (i === 0 ? 'primary' : `replicas[${i - 1}]`))
  }
  const discovery = object('discovery', raw.discovery, ['intervalMs'])
  if (raw.discovery !== undefined && nodeSource === undefined) {
    throw new ConfigError('discovery', 'only applies when nodes is a function (() => Promise<NodeInput[]>)', {
      expected: 'nodes: async () => [...] with it',
    })
  }

  let readStrategy: ReadStrategy = DEFAULTS.readStrategy
  if (typeof raw.readStrategy === 'function') readStrategy = raw.readStrategy as ReadStrategyFunction
  else readStrategy = oneOf('readStrategy', raw.readStrategy, STRATEGIES, DEFAULTS.readStrategy)

  const failover = object('failover', raw.failover, ['timeoutMs', 'pollIntervalMs', 'writeTimeoutMs'])

  return {
    nodes,
    pool,
    readStrategy,
    maxLag: normalizeMaxLag('maxLag', raw.maxLag, { ...DEFAULTS.maxLag }) ?? {},
    healthCheck: normalizeHealthCheck(raw.healthCheck),
    onNoReplica: oneOf('onNoReplica', raw.onNoReplica, ['primary', 'error'], DEFAULTS.onNoReplica),
    consistency: normalizeConsistency('consistency', raw.consistency),
    causalWaitMs: duration('causalWaitMs', raw.causalWaitMs, LIMITS.causalWaitMs, DEFAULTS.causalWaitMs),
    failover: {
      timeoutMs: duration(
        'failover.timeoutMs',
        failover.timeoutMs,
        LIMITS['failover.timeoutMs'],
        DEFAULTS.failover.timeoutMs,
      ),
      pollIntervalMs: duration(
        'failover.pollIntervalMs',
        failover.pollIntervalMs,
        LIMITS['failover.pollIntervalMs'],
        DEFAULTS.failover.pollIntervalMs,
      ),
      writeTimeoutMs: duration(
        'failover.writeTimeoutMs',
        failover.writeTimeoutMs,
        LIMITS['failover.writeTimeoutMs'],
        DEFAULTS.failover.writeTimeoutMs,
      ),
    },
    readOnlyTransactions: oneOf(
      'readOnlyTransactions',
      raw.readOnlyTransactions,
      ['primary', 'replica'],
      DEFAULTS.readOnlyTransactions,
    ),
    writeFunctions: normalizeWriteFunctions(raw.writeFunctions),
    classifierCacheSize: integer(
      'classifierCacheSize',
      raw.classifierCacheSize,
      LIMITS.classifierCacheSize,
      DEFAULTS.classifierCacheSize,
    ),
    nodeSource,
    discovery: {
      intervalMs: duration(
        'discovery.intervalMs',
        discovery.intervalMs,
        LIMITS['discovery.intervalMs'],
        DEFAULTS.discovery.intervalMs,
      ),
    },
    tokens: normalizeTokens(raw.tokens),
    // The raw first node: validated above (it is nodes[0] or primary), a template for new members.
    patroni: normalizePatroni(raw.patroni, Array.isArray(raw.nodes) ? raw.nodes[0] : raw.primary),
  }
}

/** Normalizes one node added at run time with `db.addNode()`. */
export function normalizeAddedNode(input: NodeInput, shared: PoolOptions, field = 'addNode'): NormalizedNode {
  return normalizeNode(field, input, 'unknown', shared)
}

export { addressKey, redact }
