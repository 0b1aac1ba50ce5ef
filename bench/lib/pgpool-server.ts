import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, openSync } from 'node:fs'
import { chown, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { findFreePorts } from '../../src/testing/ports.js'
import { serverOsUser, spawnIdentity, toolEnv } from '../../src/testing/process-utils.js'
import type { TestCluster } from '../../src/testing/types.js'

/** A pgpool-II process in front of a test cluster, started by {@link startPgpool}. */
export interface PgpoolServer {
  readonly port: number
  readonly pid: number
  /** `postgres://...@127.0.0.1:port/app`: clients connect here as to a server. */
  readonly url: string
  readonly version: string
  /** `SHOW pool_nodes` as pgpool sees the backends. */
  poolNodes(): Promise<Record<string, string>[]>
  stop(): Promise<void>
}

const CANDIDATES = ['/usr/sbin/pgpool', '/usr/bin/pgpool', '/usr/local/bin/pgpool', '/usr/local/sbin/pgpool']

/** Path of the pgpool binary, or null when pgpool-II is not installed. */
export function findPgpool(): string | null {
  return CANDIDATES.find((p) => existsSync(p)) ?? null
}

function quote(value: string | number): string {
  return typeof value === 'number' ? String(value) : `'${value.replaceAll("'", "''")}'`
}

/**
 * Starts pgpool-II in streaming-replication mode with load balancing over `cluster`: node 0 (the
 * primary) has weight 0, so reads go to the replicas, as pgsplit sends them. Frontends
 * authenticate with SCRAM against pgpool's pool_passwd (the cluster's user and password);
 * pgpool uses the same password towards the servers. Runs as the `postgres` OS user when this
 * process is root.
 */
export async function startPgpool(
  cluster: TestCluster,
  options: { numInitChildren?: number; user?: string; password?: string; database?: string } = {},
): Promise<PgpoolServer> {
  const bin = findPgpool()
  if (bin === null) throw new Error('pgpool-II is not installed (apt-get install pgpool2)')
  const user = options.user ?? 'postgres'
  const password = options.password ?? 'postgres'
  const database = options.database ?? 'app'
  const osUser = serverOsUser()
  const dir = await mkdtemp(join(tmpdir(), 'pgsplit-pgpool-'))
  const [port, pcpPort] = (await findFreePorts(2)) as [number, number]
  const settings: Record<string, string | number> = {
    backend_clustering_mode: 'streaming_replication',
    listen_addresses: '127.0.0.1',
    port,
    unix_socket_directories: dir,
    pcp_listen_addresses: '',
    pcp_port: pcpPort,
    pcp_socket_dir: dir,
    pid_file_name: join(dir, 'pgpool.pid'),
    logdir: dir,
    log_destination: 'stderr',
    log_min_messages: 'warning',
    enable_pool_hba: 'on',
    pool_passwd: join(dir, 'pool_passwd'),
    num_init_children: options.numInitChildren ?? 32,
    max_pool: 4,
    load_balance_mode: 'on',
    // Lag-aware as pgsplit's default maxLag (16 MiB): replicas further behind take no reads.
    sr_check_period: 1,
    sr_check_user: user,
    sr_check_password: '',
    sr_check_database: database,
    delay_threshold: 16 * 1024 * 1024,
    health_check_period: 1,
    health_check_timeout: 5,
    health_check_user: user,
    health_check_password: '',
    health_check_database: database,
    failover_on_backend_error: 'off',
    use_watchdog: 'off',
    memory_cache_enabled: 'off',
  }
  cluster.nodes.forEach((node, i) => {
    settings[`backend_hostname${i}`] = node.host
    settings[`backend_port${i}`] = node.port
    settings[`backend_weight${i}`] = node.role === 'primary' ? 0 : 1
    settings[`backend_flag${i}`] = 'ALLOW_TO_FAILOVER'
    settings[`backend_application_name${i}`] = node.name
  })
  const conf = Object.entries(settings)
    .map(([k, v]) => `${k} = ${typeof v === 'number' || /^(on|off)$/.test(v) ? v : quote(v)}`)
    .join('\n')
  const files: Record<string, string> = {
    'pgpool.conf': `${conf}\n`,
    'pool_hba.conf': `local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n`,
    // A clear-text entry (TEXT prefix): pgpool authenticates frontends and backends with it.
    pool_passwd: `${user}:TEXT${password}\n`,
    'pcp.conf': '',
  }
  for (const [name, text] of Object.entries(files)) {
    await writeFile(join(dir, name), text, { mode: 0o600 })
    if (osUser) await chown(join(dir, name), osUser.uid, osUser.gid)
  }
  if (osUser) await chown(dir, osUser.uid, osUser.gid)
  const logFile = join(dir, 'pgpool.log')
  const out = openSync(logFile, 'a')
  if (osUser) await chown(logFile, osUser.uid, osUser.gid)
  const proc: ChildProcess = spawn(
    bin,
    [
      '-n',
      '-D',
      '-f',
      join(dir, 'pgpool.conf'),
      '-a',
      join(dir, 'pool_hba.conf'),
      '-F',
      join(dir, 'pcp.conf'),
    ],
    { cwd: '/', env: toolEnv(osUser), stdio: ['ignore', out, out], ...spawnIdentity(osUser) },
  )
  let exited = false
  proc.on('exit', () => {
    exited = true
  })
  const url = `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${port}/${encodeURIComponent(database)}`
  const query = async (sql: string): Promise<Record<string, string>[]> => {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 })
    client.on('error', () => {})
    try {
      await client.connect()
      return (await client.query(sql)).rows
    } finally {
      await client.end().catch(() => {})
    }
  }
  const stop = async (): Promise<void> => {
    if (!exited) {
      proc.kill('SIGINT') // fast shutdown: ends the children too
      const deadline = Date.now() + 10_000
      while (!exited && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
      if (!exited) proc.kill('SIGKILL')
    }
    await rm(dir, { recursive: true, force: true })
  }
  // Up when it answers and sees every backend up (status 'up', replicas with a role).
  const deadline = Date.now() + 30_000
  let last = ''
  for (;;) {
    if (exited) {
      const log = await readFile(logFile, 'utf8').catch(() => '')
      await stop()
      throw new Error(`pgpool exited at start:\n${log.slice(-2000)}`)
    }
    try {
      const nodes = await query('SHOW pool_nodes')
      last = JSON.stringify(nodes)
      if (nodes.length === cluster.nodes.length && nodes.every((n) => n.status === 'up')) break
    } catch (err) {
      last = (err as Error).message
    }
    if (Date.now() > deadline) {
      const log = await readFile(logFile, 'utf8').catch(() => '')
      await stop()
      throw new Error(`pgpool did not come up within 30 s (${last}):\n${log.slice(-2000)}`)
    }
    await new Promise((r) => setTimeout(r, 200))
  }
  const versionRows = await query('SHOW pool_version').catch(() => [])
  return {
    port,
    pid: proc.pid ?? 0,
    url,
    version: Object.values(versionRows[0] ?? {})[0] ?? 'unknown',
    poolNodes: () => query('SHOW pool_nodes'),
    stop,
  }
}
