import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { chown, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { findFreePort } from '../../src/testing/ports.js'
import {
  fileTail,
  processState,
  serverOsUser,
  signalProcess,
  toolEnv,
} from '../../src/testing/process-utils.js'
import type { TestCluster } from '../../src/testing/types.js'

/** Where Debian's `pgbouncer` package puts the binary. */
export const PGBOUNCER_BIN = process.env.PGSPLIT_PGBOUNCER ?? '/usr/sbin/pgbouncer'

/** Why PgBouncer tests and benchmarks cannot run here, or undefined when they can. */
export function pgbouncerUnavailableReason(): string | undefined {
  return existsSync(PGBOUNCER_BIN)
    ? undefined
    : `${PGBOUNCER_BIN} not found (apt-get install -y pgbouncer, or set PGSPLIT_PGBOUNCER)`
}

/** One PgBouncer in front of one server. */
export interface Bouncer {
  /** Port of the server behind it. */
  readonly serverPort: number
  readonly port: number
  /** `postgres://user:password@127.0.0.1:port/database`, through the bouncer. */
  readonly url: string
  readonly pid: number
  readonly logFile: string
}

export interface Bouncers {
  /** In the order of `cluster.nodes`. */
  readonly list: readonly Bouncer[]
  /** The bouncer in front of the server on `serverPort`. */
  of(serverPort: number): Bouncer
  stop(): Promise<void>
}

export interface BouncerOptions {
  /** Server connections per (database, user) pool of each bouncer. Default 20. */
  poolSize?: number
  /** Bound of each start. Default 20 s. */
  timeoutMs?: number
}

/**
 * Starts one PgBouncer (`pool_mode = transaction`) per node of `cluster`, each on 127.0.0.1 and
 * a free port, as the `postgres` OS user when this process is root (PgBouncer refuses root), with
 * SCRAM to the client and to the server from a plain-text auth_file (the cluster's own password).
 * Returns once each one answers a query through it; `stop()` ends them by PID.
 */
export async function startBouncers(cluster: TestCluster, opts: BouncerOptions = {}): Promise<Bouncers> {
  const timeoutMs = opts.timeoutMs ?? 20_000
  const started: { proc: ChildProcess; dir: string; bouncer: Bouncer }[] = []
  const stop = async (): Promise<void> => {
    await Promise.all(started.map((s) => stopOne(s.proc, s.dir)))
    started.length = 0
  }
  try {
    for (const node of cluster.nodes) {
      started.push(await startOne(node.url, node.port, opts.poolSize ?? 20, timeoutMs))
    }
  } catch (err) {
    await stop()
    throw err
  }
  const list = started.map((s) => s.bouncer)
  return {
    list,
    of(serverPort) {
      const b = list.find((x) => x.serverPort === serverPort)
      if (b === undefined) throw new Error(`no PgBouncer in front of port ${serverPort}`)
      return b
    },
    stop,
  }
}

async function startOne(
  serverUrl: string,
  serverPort: number,
  poolSize: number,
  timeoutMs: number,
): Promise<{ proc: ChildProcess; dir: string; bouncer: Bouncer }> {
  const u = new URL(serverUrl)
  const user = decodeURIComponent(u.username)
  const password = decodeURIComponent(u.password)
  const user0 = serverOsUser()
  const dir = await mkdtemp(join(tmpdir(), 'pgsplit-pgbouncer-'))
  const port = await findFreePort()
  const logFile = join(dir, 'pgbouncer.log')
  const q = (s: string): string => `"${s.replaceAll('"', '""')}"`
  await writeFile(join(dir, 'userlist.txt'), `${q(user)} ${q(password)}\n`, { mode: 0o600 })
  await writeFile(
    join(dir, 'pgbouncer.ini'),
    [
      '[databases]',
      `* = host=127.0.0.1 port=${serverPort}`,
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      'unix_socket_dir =',
      'auth_type = scram-sha-256',
      `auth_file = ${join(dir, 'userlist.txt')}`,
      `admin_users = ${user}`,
      'pool_mode = transaction',
      `default_pool_size = ${poolSize}`,
      'max_client_conn = 1000',
      // A dead server answers at once instead of every caller waiting (the defaults are 15 s / 120 s).
      'server_login_retry = 1',
      'query_wait_timeout = 10',
      'server_connect_timeout = 3',
      `logfile = ${logFile}`,
      '',
    ].join('\n'),
    { mode: 0o600 },
  )
  if (user0) {
    for (const f of ['', 'userlist.txt', 'pgbouncer.ini']) await chown(join(dir, f), user0.uid, user0.gid)
  }
  const proc = spawn(PGBOUNCER_BIN, [join(dir, 'pgbouncer.ini')], {
    cwd: '/',
    env: toolEnv(user0),
    stdio: 'ignore',
    ...(user0 ? { uid: user0.uid, gid: user0.gid } : {}),
  })
  proc.on('error', () => undefined)
  const pid = proc.pid
  const url = new URL(serverUrl)
  url.port = String(port)
  const bouncer: Bouncer = { serverPort, port, url: url.toString(), pid: pid ?? -1, logFile }
  const handle = { proc, dir, bouncer }
  try {
    if (pid === undefined) throw new Error(`could not start ${PGBOUNCER_BIN}`)
    const deadline = Date.now() + timeoutMs
    let last = ''
    for (let i = 0; i < 10_000; i++) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        throw new Error(
          `pgbouncer exited (${proc.exitCode ?? proc.signalCode}):\n${await fileTail(logFile, 10)}`,
        )
      }
      const c = new pg.Client({ connectionString: bouncer.url, connectionTimeoutMillis: 1_000 })
      c.on('error', () => undefined)
      try {
        await c.connect()
        await c.query('SELECT 1')
        return handle
      } catch (err) {
        last = (err as Error).message
      } finally {
        await c.end().catch(() => undefined)
      }
      if (Date.now() > deadline) {
        throw new Error(`pgbouncer on ${port} did not answer within ${timeoutMs} ms (last: ${last})`)
      }
      await new Promise((r) => setTimeout(r, 50))
    }
    throw new Error('unreachable')
  } catch (err) {
    await stopOne(proc, dir)
    throw err
  }
}

/** SIGTERM (immediate shutdown in 1.18), then SIGKILL after 5 s; removes its directory. */
async function stopOne(proc: ChildProcess, dir: string): Promise<void> {
  const pid = proc.pid
  if (pid !== undefined && proc.exitCode === null && proc.signalCode === null) {
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()))
    signalProcess(pid, 'SIGTERM')
    const killed = await Promise.race([
      exited.then(() => false),
      new Promise<boolean>((r) => setTimeout(() => r(true), 5_000)),
    ])
    if (killed) {
      signalProcess(pid, 'SIGKILL')
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000))])
    }
    if ((await processState(pid)) === 'alive') throw new Error(`pgbouncer ${pid} did not stop`)
  }
  await rm(dir, { recursive: true, force: true })
}
