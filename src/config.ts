import type { PoolConfig } from 'pg'
import { ConfigError } from './errors.js'
import { type NodeAddress, parseConnectionString, redact } from './pools/connection-string.js'

/** `pg.Pool` options shared by every node (a node's own object overrides them). */
export type PoolOptions = Omit<PoolConfig, 'connectionString' | 'host' | 'port' | 'database'>

/** One node given as an object: pg `PoolConfig` (or `url`) plus pgsplit's per-node settings. */
export interface NodeConfig extends PoolConfig {
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
   * May be an async function returning the list (DNS SRV, Kubernetes Endpoints, CloudNativePG's
   * services): re-read every `discovery.intervalMs` and when the primary is lost.
   */
  nodes?: NodeInput[] | (() => Promise<NodeInput[]>)
  /** `nodes` as a function: how often it is re-read. */
  discovery?: { intervalMs?: number }
  /**
   * Follow Patroni: its REST API's `GET /cluster` says who is leader (the only node writes go
   * to), which members exist and which take no reads. The first node of `nodes`/`primary` gives
   * the connection settings of members pgsplit does not know yet.
   */
  patroni?: PatroniConfig
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
  }
  /** Where `transaction(fn, { readOnly: true })` runs. Default `'primary'`. */
  readOnlyTransactions?: 'primary' | 'replica'
  /** User functions that write: statements calling them go to the primary. */
  writeFunctions?: string[]
  /** Bound of the per-SQL-text classification cache. Default 5000. */
  classifierCacheSize?: number
}

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

export interface NormalizedPatroni {
  urls: string[]
  auth: { username: string; password: string | undefined } | undefined
  intervalMs: number
  timeoutMs: number
  /** The first node as the user gave it: the connection template for new members. */
  template: NodeInput
}

export type DeclaredRole = 'primary' | 'replica' | 'unknown'

export interface NormalizedNode {
  name: string
  address: NodeAddress
  /** Ready for `new pg.Pool(...)`; its password is non-enumerable. */
  poolConfig: PoolConfig
  weight: number
  maxLag: MaxLag | undefined
  declaredRole: DeclaredRole
}

export interface NormalizedConfig {
  nodes: NormalizedNode[]
  /** `nodes` given as a function. */
  nodesFunction: (() => Promise<NodeInput[]>) | null
  discovery: { intervalMs: number }
  patroni: NormalizedPatroni | null
  pool: PoolOptions
  readStrategy: ReadStrategy
  maxLag: MaxLag
  healthCheck: Required<Omit<HealthCheckConfig, 'heartbeat'>> & { heartbeat: false | { table: string } }
  onNoReplica: 'primary' | 'error'
  consistency: ConsistencyMode
  causalWaitMs: number
  failover: { timeoutMs: number; pollIntervalMs: number }
  readOnlyTransactions: 'primary' | 'replica'
  writeFunctions: string[]
  classifierCacheSize: number
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
  failover: { timeoutMs: 30_000, pollIntervalMs: 100 },
  readOnlyTransactions: 'primary',
  classifierCacheSize: 5_000,
  /** pg defaults wait forever; pgsplit bounds every wait. */
  pool: { connectionTimeoutMillis: 5_000, query_timeout: 60_000, keepAlive: true, max: 10 },
} as const

const STRATEGIES: readonly string[] = ['round-robin', 'random', 'least-lag', 'least-busy', 'weighted']
const TOP_LEVEL_KEYS = new Set([
  'primary',
  'replicas',
  'nodes',
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
  'discovery',
  'patroni',
])
const NODE_ONLY_KEYS = new Set(['url', 'name', 'weight', 'maxLag'])

function describe(value: unknown): string {
  // A wrong value may still be a connection string: never echo its password.
  if (typeof value === 'string') return JSON.stringify(redact(value))
  if (typeof value === 'number' || typeof value === 'boolean' || value === null || value === undefined) {
    return String(value)
  }
  if (Array.isArray(value)) return 'an array'
  return typeof value
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function positiveInteger(field: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
    throw new ConfigError(field, `must be a positive integer, got ${describe(value)}`)
  }
  return value
}

function nonNegativeNumber(field: string, value: unknown, fallback: number | undefined): number | undefined {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new ConfigError(field, `must be a finite number >= 0, got ${describe(value)}`)
  }
  return value
}

function oneOf<T extends string>(field: string, value: unknown, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback
  if (typeof value !== 'string' || !allowed.includes(value as T)) {
    throw new ConfigError(
      field,
      `must be one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${describe(value)}`,
    )
  }
  return value as T
}

function normalizeMaxLag(field: string, value: unknown, fallback: MaxLag | undefined): MaxLag | undefined {
  if (value === undefined) return fallback
  if (!isPlainObject(value))
    throw new ConfigError(field, `must be an object { bytes?, ms? }, got ${describe(value)}`)
  for (const key of Object.keys(value)) {
    if (key !== 'bytes' && key !== 'ms') throw new ConfigError(`${field}.${key}`, 'is not a known option')
  }
  return {
    bytes: nonNegativeNumber(`${field}.bytes`, value.bytes, undefined),
    ms: nonNegativeNumber(`${field}.ms`, value.ms, undefined),
  }
}

function validatePoolOptions(field: string, pool: Record<string, unknown>): void {
  if (pool.max !== undefined) positiveInteger(`${field}.max`, pool.max, 1)
  if (pool.min !== undefined) nonNegativeNumber(`${field}.min`, pool.min, 0)
  for (const key of ['connectionTimeoutMillis', 'query_timeout', 'statement_timeout', 'idleTimeoutMillis']) {
    if (pool[key] !== undefined && pool[key] !== false) {
      positiveInteger(`${field}.${key}`, pool[key], 1)
    }
  }
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
    if (own.url !== undefined && typeof own.url !== 'string') {
      throw new ConfigError(`${field}.url`, `must be a string, got ${describe(own.url)}`)
    }
    url = (own.url as string | undefined) ?? (own.connectionString as string | undefined)
  } else {
    throw new ConfigError(field, `must be a postgres:// URL or a pg config object, got ${describe(input)}`)
  }

  let address: NodeAddress
  let password: unknown
  if (url !== undefined) {
    const parsed = parseConnectionString(url, field)
    password = own.password ?? parsed.password
    address = {
      host: typeof own.host === 'string' ? own.host : parsed.host,
      port: own.port !== undefined ? Number(own.port) : parsed.port,
      database: typeof own.database === 'string' ? own.database : parsed.database,
      user: typeof own.user === 'string' ? own.user : parsed.user,
    }
  } else {
    if (typeof own.host !== 'string' || own.host === '') {
      throw new ConfigError(
        `${field}.host`,
        `is required when no url/connectionString is given, got ${describe(own.host)}`,
      )
    }
    const port = own.port === undefined ? 5432 : own.port
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
      throw new ConfigError(`${field}.port`, `must be an integer port 1-65535, got ${describe(own.port)}`)
    }
    password = own.password
    address = {
      host: own.host,
      port,
      database: typeof own.database === 'string' ? own.database : undefined,
      user: typeof own.user === 'string' ? own.user : undefined,
    }
  }
  if (!Number.isInteger(address.port) || address.port < 1 || address.port > 65535) {
    throw new ConfigError(`${field}.port`, `must be an integer port 1-65535, got ${describe(own.port)}`)
  }

  const weight = own.weight === undefined ? 1 : own.weight
  if (typeof weight !== 'number' || !Number.isFinite(weight) || weight < 0) {
    throw new ConfigError(`${field}.weight`, `must be a finite number >= 0, got ${describe(own.weight)}`)
  }
  if (own.name !== undefined && (typeof own.name !== 'string' || own.name.trim() === '')) {
    throw new ConfigError(`${field}.name`, `must be a non-empty string, got ${describe(own.name)}`)
  }
  const poolOverrides: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(own)) {
    if (!NODE_ONLY_KEYS.has(key) && key !== 'password' && key !== 'connectionString')
      poolOverrides[key] = value
  }
  validatePoolOptions(field, poolOverrides)

  const poolConfig: PoolConfig = {
    ...DEFAULTS.pool,
    ...shared,
    ...poolOverrides,
    host: address.host,
    port: address.port,
  }
  if (url !== undefined) {
    // pg parses the URL itself (sslmode, options, ...); explicit fields above still win.
    poolConfig.connectionString = url
  }
  if (address.database !== undefined) poolConfig.database = address.database
  if (address.user !== undefined) poolConfig.user = address.user
  // pg-pool's trick: keep the secret out of JSON.stringify, console.log and spreads.
  if (password !== undefined) {
    Object.defineProperty(poolConfig, 'password', { value: password, enumerable: false, writable: true })
  }
  if (url !== undefined) {
    Object.defineProperty(poolConfig, 'connectionString', { value: url, enumerable: false, writable: true })
  }
  return {
    name: typeof own.name === 'string' ? own.name : `${address.host}:${address.port}`,
    address,
    poolConfig,
    weight,
    maxLag: normalizeMaxLag(`${field}.maxLag`, own.maxLag, undefined),
    declaredRole: role,
  }
}

function normalizeConsistency(field: string, value: unknown): ConsistencyMode {
  if (value === undefined) return DEFAULTS.consistency
  if (value === 'eventual' || value === 'causal') return value
  if (isPlainObject(value) && value.mode === 'sticky') {
    return { mode: 'sticky', windowMs: positiveInteger(`${field}.windowMs`, value.windowMs, 0) }
  }
  throw new ConfigError(
    field,
    `must be 'eventual', 'causal' or { mode: 'sticky', windowMs }, got ${describe(value)}`,
  )
}

/** Validates a consistency override given per call or per scope. */
export function validateConsistency(value: unknown, field = 'consistency'): ConsistencyMode {
  return normalizeConsistency(field, value)
}

/**
 * Validates the user's config and fills in defaults. Throws a {@link ConfigError} naming the
 * field and what is wrong with its value; never echoes a password.
 */
export function normalizeConfig(config: ClusterConfig): NormalizedConfig {
  if (!isPlainObject(config)) throw new ConfigError('config', `must be an object, got ${describe(config)}`)
  for (const key of Object.keys(config)) {
    if (!TOP_LEVEL_KEYS.has(key)) throw new ConfigError(key, 'is not a known option')
  }
  const raw = config as Record<string, unknown>
  const pool = raw.pool === undefined ? {} : raw.pool
  if (!isPlainObject(pool))
    throw new ConfigError('pool', `must be an object of pg.Pool options, got ${describe(pool)}`)
  for (const key of ['connectionString', 'host', 'port', 'database']) {
    if (pool[key] !== undefined)
      throw new ConfigError(`pool.${key}`, 'belongs to a node, not to the shared pool options')
  }
  validatePoolOptions('pool', pool)

  const nodes: NormalizedNode[] = []
  const nodesFunction = typeof raw.nodes === 'function' ? (raw.nodes as () => Promise<NodeInput[]>) : null
  if (nodesFunction !== null) {
    if (raw.primary !== undefined || raw.replicas !== undefined) {
      throw new ConfigError('nodes', 'cannot be combined with primary/replicas')
    }
    if (raw.patroni !== undefined) {
      throw new ConfigError('nodes', 'cannot be a function together with patroni: Patroni lists the members')
    }
  } else if (raw.nodes !== undefined) {
    if (raw.primary !== undefined || raw.replicas !== undefined) {
      throw new ConfigError(
        'nodes',
        'cannot be combined with primary/replicas: give either nodes or primary (+ replicas)',
      )
    }
    if (!Array.isArray(raw.nodes) || raw.nodes.length === 0) {
      throw new ConfigError(
        'nodes',
        `must be a non-empty array of URLs or pg config objects, got ${describe(raw.nodes)}`,
      )
    }
    raw.nodes.forEach((n, i) => {
      nodes.push(normalizeNode(`nodes[${i}]`, n, 'unknown', pool))
    })
  } else {
    if (raw.primary === undefined) {
      throw new ConfigError('primary', 'is required (or give nodes: [...] and let pgsplit find the primary)')
    }
    nodes.push(normalizeNode('primary', raw.primary, 'primary', pool))
    if (raw.replicas !== undefined) {
      if (!Array.isArray(raw.replicas)) {
        throw new ConfigError(
          'replicas',
          `must be an array of URLs or pg config objects, got ${describe(raw.replicas)}`,
        )
      }
      raw.replicas.forEach((r, i) => {
        nodes.push(normalizeNode(`replicas[${i}]`, r, 'replica', pool))
      })
    }
  }
  const seenAddress = new Map<string, string>()
  const seenName = new Set<string>()
  // The config path of node i, as the user wrote it: nodes[i], or primary / replicas[i - 1].
  const fieldOf = (i: number): string =>
    raw.nodes !== undefined ? `nodes[${i}]` : i === 0 ? 'primary' : `replicas[${i - 1}]`
  nodes.forEach((node, i) => {
    const key = `${node.address.host}:${node.address.port}/${node.address.database ?? ''}`
    const other = seenAddress.get(key)
    if (other !== undefined) {
      throw new ConfigError(fieldOf(i), `duplicates node ${other}: both are ${key}`)
    }
    seenAddress.set(key, node.name)
    if (seenName.has(node.name))
      throw new ConfigError(`${fieldOf(i)}.name`, `duplicates the name ${JSON.stringify(node.name)}`)
    seenName.add(node.name)
  })

  const patroni = normalizePatroni(raw.patroni, raw)
  const disc = raw.discovery === undefined ? {} : raw.discovery
  if (!isPlainObject(disc)) throw new ConfigError('discovery', `must be an object, got ${describe(disc)}`)
  for (const key of Object.keys(disc)) {
    if (key !== 'intervalMs') throw new ConfigError(`discovery.${key}`, 'is not a known option')
  }
  const discovery = { intervalMs: positiveInteger('discovery.intervalMs', disc.intervalMs, 5_000) }

  let readStrategy: ReadStrategy = DEFAULTS.readStrategy
  if (typeof raw.readStrategy === 'function') readStrategy = raw.readStrategy as ReadStrategyFunction
  else
    readStrategy = oneOf(
      'readStrategy',
      raw.readStrategy,
      STRATEGIES as ReadStrategyName[],
      DEFAULTS.readStrategy,
    )

  const hc = raw.healthCheck === undefined ? {} : raw.healthCheck
  if (!isPlainObject(hc)) throw new ConfigError('healthCheck', `must be an object, got ${describe(hc)}`)
  for (const key of Object.keys(hc)) {
    if (
      ![
        'intervalMs',
        'timeoutMs',
        'failuresBeforeDown',
        'successesBeforeUp',
        'maxBackoffMs',
        'heartbeat',
      ].includes(key)
    ) {
      throw new ConfigError(`healthCheck.${key}`, 'is not a known option')
    }
  }
  const d = DEFAULTS.healthCheck
  let heartbeat: false | { table: string } = false
  if (hc.heartbeat === true) heartbeat = { table: 'pgsplit_heartbeat' }
  else if (isPlainObject(hc.heartbeat)) {
    const table = hc.heartbeat.table ?? 'pgsplit_heartbeat'
    if (typeof table !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$/.test(table)) {
      throw new ConfigError(
        'healthCheck.heartbeat.table',
        `must be a plain (optionally schema-qualified) table name, got ${describe(table)}`,
      )
    }
    heartbeat = { table }
  } else if (hc.heartbeat !== undefined && hc.heartbeat !== false) {
    throw new ConfigError(
      'healthCheck.heartbeat',
      `must be a boolean or { table }, got ${describe(hc.heartbeat)}`,
    )
  }
  const healthCheck: NormalizedConfig['healthCheck'] = {
    intervalMs: positiveInteger('healthCheck.intervalMs', hc.intervalMs, d.intervalMs),
    timeoutMs: positiveInteger('healthCheck.timeoutMs', hc.timeoutMs, d.timeoutMs),
    failuresBeforeDown: positiveInteger(
      'healthCheck.failuresBeforeDown',
      hc.failuresBeforeDown,
      d.failuresBeforeDown,
    ),
    successesBeforeUp: positiveInteger(
      'healthCheck.successesBeforeUp',
      hc.successesBeforeUp,
      d.successesBeforeUp,
    ),
    maxBackoffMs: positiveInteger('healthCheck.maxBackoffMs', hc.maxBackoffMs, d.maxBackoffMs),
    heartbeat,
  }

  const failover = raw.failover === undefined ? {} : raw.failover
  if (!isPlainObject(failover))
    throw new ConfigError('failover', `must be an object, got ${describe(failover)}`)
  for (const key of Object.keys(failover)) {
    if (key !== 'timeoutMs' && key !== 'pollIntervalMs')
      throw new ConfigError(`failover.${key}`, 'is not a known option')
  }

  let writeFunctions: string[] = []
  if (raw.writeFunctions !== undefined) {
    if (
      !Array.isArray(raw.writeFunctions) ||
      raw.writeFunctions.some((f) => typeof f !== 'string' || f.trim() === '')
    ) {
      throw new ConfigError('writeFunctions', 'must be an array of non-empty function names')
    }
    writeFunctions = raw.writeFunctions.map((f: string) => f.trim().toLowerCase())
  }

  return {
    nodes,
    nodesFunction,
    discovery,
    patroni,
    pool,
    readStrategy,
    maxLag: normalizeMaxLag('maxLag', raw.maxLag, { ...DEFAULTS.maxLag }) ?? {},
    healthCheck,
    onNoReplica: oneOf('onNoReplica', raw.onNoReplica, ['primary', 'error'], DEFAULTS.onNoReplica),
    consistency: normalizeConsistency('consistency', raw.consistency),
    causalWaitMs:
      nonNegativeNumber('causalWaitMs', raw.causalWaitMs, DEFAULTS.causalWaitMs) ?? DEFAULTS.causalWaitMs,
    failover: {
      timeoutMs: positiveInteger('failover.timeoutMs', failover.timeoutMs, DEFAULTS.failover.timeoutMs),
      pollIntervalMs: positiveInteger(
        'failover.pollIntervalMs',
        failover.pollIntervalMs,
        DEFAULTS.failover.pollIntervalMs,
      ),
    },
    readOnlyTransactions: oneOf(
      'readOnlyTransactions',
      raw.readOnlyTransactions,
      ['primary', 'replica'],
      DEFAULTS.readOnlyTransactions,
    ),
    writeFunctions,
    classifierCacheSize: positiveInteger(
      'classifierCacheSize',
      raw.classifierCacheSize,
      DEFAULTS.classifierCacheSize,
    ),
  }
}

function normalizePatroni(value: unknown, raw: Record<string, unknown>): NormalizedPatroni | null {
  if (value === undefined) return null
  if (!isPlainObject(value))
    throw new ConfigError('patroni', `must be an object { urls, ... }, got ${describe(value)}`)
  for (const key of Object.keys(value)) {
    if (!['urls', 'username', 'password', 'intervalMs', 'timeoutMs'].includes(key)) {
      throw new ConfigError(`patroni.${key}`, 'is not a known option')
    }
  }
  const urls = value.urls
  if (!Array.isArray(urls) || urls.length === 0) {
    throw new ConfigError('patroni.urls', `must be a non-empty array of http(s) URLs, got ${describe(urls)}`)
  }
  urls.forEach((u, i) => {
    let ok = false
    try {
      ok = typeof u === 'string' && /^https?:$/.test(new URL(u).protocol)
    } catch {
      ok = false
    }
    if (!ok) throw new ConfigError(`patroni.urls[${i}]`, `must be an http(s) URL, got ${describe(u)}`)
  })
  for (const key of ['username', 'password'] as const) {
    if (value[key] !== undefined && typeof value[key] !== 'string') {
      // Never echo what might be a password.
      throw new ConfigError(`patroni.${key}`, 'must be a string')
    }
  }
  if (value.password !== undefined && value.username === undefined) {
    throw new ConfigError('patroni.password', 'needs patroni.username')
  }
  const template = Array.isArray(raw.nodes) ? raw.nodes[0] : raw.primary
  if (template === undefined) {
    throw new ConfigError(
      'patroni',
      'needs nodes (or primary): the first node gives the user, password, database and TLS of the members Patroni lists, and the nodes are the fallback when no REST endpoint answers',
    )
  }
  const auth =
    value.username === undefined
      ? undefined
      : { username: value.username as string, password: value.password as string | undefined }
  // The REST password stays out of JSON and inspection, like the node passwords.
  if (auth !== undefined) Object.defineProperty(auth, 'password', { enumerable: false })
  return {
    urls: urls as string[],
    auth,
    intervalMs: positiveInteger('patroni.intervalMs', value.intervalMs, 100),
    timeoutMs: positiveInteger('patroni.timeoutMs', value.timeoutMs, 1_000),
    template: template as NodeInput,
  }
}

/** Normalizes one node added at run time with `db.addNode()`. */
export function normalizeAddedNode(input: NodeInput, shared: PoolOptions, field = 'addNode'): NormalizedNode {
  return normalizeNode(field, input, 'unknown', shared)
}

export { redact }
