import { type ChildProcess, spawn } from 'node:child_process'
import { closeSync, existsSync, openSync, readFileSync, rmSync } from 'node:fs'
import { chmod, chown, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import {
  getPatroniCluster,
  type PatroniAuth,
  type PatroniClusterState,
  type PatroniMember,
  type PatroniTags,
  postPatroni,
} from '../health/patroni-rest.js'
import { TestClusterError } from './errors.js'
import { createDatabase, type NodeTarget, setReplayPaused } from './node-operations.js'
import { queryRows } from './pg-admin.js'
import { findPgBinaries } from './pg-binaries.js'
import { findFreePorts } from './ports.js'
import {
  childPids,
  fileTail,
  type OsUser,
  processState,
  serverOsUser,
  signalProcess,
  spawnIdentity,
  toolEnv,
} from './process-utils.js'
import type { StartClusterOptions, TestNode } from './types.js'
import { remaining, StopWaiting, waitFor } from './wait.js'

const HOST = '127.0.0.1'
/** Debian's names; the setup script installs them (`apt-get install patroni etcd-server`). */
export const INSTALL_PATRONI_COMMAND = 'apt-get install -y patroni etcd-server'

/** Options of `startCluster({ backend: 'patroni' })`. */
export interface PatroniClusterOptions
  extends Omit<StartClusterOptions, 'backend' | 'synchronous' | 'image' | 'replicas'> {
  backend: 'patroni'
  /** Members besides the first leader. Default 2. */
  replicas?: number
  /** Patroni's `synchronous_mode: true` (one synchronous standby, chosen by Patroni). Default false. */
  synchronous?: boolean
  /** Basic auth of every member's REST API (off by default). */
  restAuth?: { username: string; password: string }
  /** Tags of member i at start (`nofailover`, `noloadbalance`, ...). */
  tags?: Record<number, PatroniTags>
}

export type PatroniRole = 'leader' | 'replica' | 'stopped'

/** A member of the Patroni test cluster. */
export interface PatroniTestNode extends TestNode {
  /** `http://127.0.0.1:P` of this member's Patroni REST API. */
  readonly restUrl: string
}

/** The handle `startCluster({ backend: 'patroni' })` returns: etcd plus Patroni members. */
export interface PatroniTestCluster {
  readonly backend: 'patroni'
  /** Patroni's synchronous_mode is on. */
  readonly synchronous: boolean
  /** URL of the member Patroni held as leader at the last look. */
  readonly primaryUrl: string
  /** URLs of the running replicas at the last look. */
  readonly replicaUrls: string[]
  readonly nodes: readonly PatroniTestNode[]
  /** REST API base URLs of every member (for `createCluster({ patroni: { urls } })`). */
  readonly restUrls: string[]
  /** `http://127.0.0.1:P` of etcd. */
  readonly etcdUrl: string
  /** `GET /cluster` from the first member that answers. */
  clusterState(): Promise<PatroniClusterState>
  /** Index of the member Patroni holds as leader now, or undefined. */
  leader(): Promise<number | undefined>
  /** Waits until a leader other than `not` (any when undefined) runs and accepts writes; its index. */
  waitForLeader(opts?: { not?: number; timeoutMs?: number }): Promise<number>
  /** SIGKILL of member i's postmaster (Patroni restarts it); returns when it is gone. */
  kill(i: number): Promise<void>
  /** SIGKILL of member i's Patroni (the postmaster keeps running); returns when it is gone. */
  killManager(i: number): Promise<void>
  /** Stops member i's Patroni, which stops its server and leaves the cluster. */
  stop(i: number): Promise<void>
  /** Starts member i's Patroni again; returns when the member runs (as leader or streaming). */
  start(i: number): Promise<void>
  /** SIGSTOP of member i's postmaster and all its children, SIGCONT after `ms`; resolves after it. */
  freeze(i: number, ms: number): Promise<void>
  /** Patroni switchover away from the leader (to `to`, else Patroni's choice); returns when the new leader takes writes. */
  switchover(to?: number): Promise<number>
  /** Patroni failover to member `to`; returns when it takes writes. */
  failover(to: number): Promise<void>
  /** Same as `failover(i)`: Patroni does the promotion. */
  promote(i: number): Promise<void>
  /** Rewrites member i's tags and reloads its Patroni; returns when `/cluster` shows them. */
  setTags(i: number, tags: PatroniTags): Promise<void>
  pauseReplay(i: number): Promise<void>
  resumeReplay(i: number): Promise<void>
  /** A new Patroni member (a replica); returns when it streams. */
  addReplica(): Promise<PatroniTestNode>
  /**
   * Patroni re-creates member i's data directory from the leader (`POST /reinitialize`), as an
   * operator does for a replica left in `start failed` after a rewind; returns when it streams.
   */
  reinit(i: number): Promise<void>
  /** Stops every process (members, etcd) and removes every file. Safe to call twice. */
  destroy(): Promise<void>
}

interface Member {
  readonly index: number
  readonly name: string
  readonly pgPort: number
  readonly restPort: number
  readonly dataDir: string
  readonly configFile: string
  readonly logFile: string
  tags: PatroniTags
  proc: ChildProcess | undefined
  role: PatroniRole
}

interface Resolved {
  readonly replicas: number
  readonly synchronous: boolean
  readonly database: string
  readonly user: string
  readonly password: string
  readonly settings: Readonly<Record<string, string | number | boolean>>
  readonly timeoutMs: number
  readonly log: (line: string) => void
  readonly restAuth: PatroniAuth | undefined
  readonly tags: Record<number, PatroniTags>
}

function resolve(opts: PatroniClusterOptions): Resolved {
  const replicas = opts.replicas ?? 2
  if (!Number.isInteger(replicas) || replicas < 0 || replicas > 8) {
    throw new TypeError(`pgsplit/testing: replicas must be an integer 0-8, got ${String(opts.replicas)}`)
  }
  if (opts.synchronous !== undefined && typeof opts.synchronous !== 'boolean') {
    throw new TypeError(
      `pgsplit/testing: synchronous must be a boolean on the patroni backend (Patroni picks the synchronous standby), got ${String(opts.synchronous)}`,
    )
  }
  const timeoutMs = opts.timeoutMs ?? 60_000
  if (!(timeoutMs > 0))
    throw new TypeError(`pgsplit/testing: timeoutMs must be > 0, got ${String(opts.timeoutMs)}`)
  const password = opts.password ?? 'postgres'
  const user = opts.user ?? 'postgres'
  const database = opts.database ?? 'app'
  if (password === '' || user === '' || database === '') {
    throw new TypeError('pgsplit/testing: user, password and database must not be empty')
  }
  return {
    replicas,
    synchronous: opts.synchronous ?? false,
    database,
    user,
    password,
    settings: opts.settings ?? {},
    timeoutMs,
    log: opts.log ?? (() => {}),
    restAuth: opts.restAuth,
    tags: opts.tags ?? {},
  }
}

/** Whether `patroni` and `etcd` are installed; the error names the command that installs them. */
export function assertPatroniInstalled(): void {
  const missing = ['/usr/bin/patroni', '/usr/bin/etcd'].filter((p) => !existsSync(p))
  if (missing.length > 0) {
    throw new TestClusterError(
      `pgsplit/testing: the patroni backend needs Patroni and etcd (missing: ${missing.join(', ')}). ` +
        `Install them with \`${INSTALL_PATRONI_COMMAND}\` (Debian/Ubuntu; scripts/setup.sh does it).`,
    )
  }
}

/** etcd and 1 + `replicas` Patroni members on 127.0.0.1; see {@link PatroniTestCluster}. */
export async function startPatroniCluster(opts: PatroniClusterOptions): Promise<PatroniTestCluster> {
  const options = resolve(opts)
  assertPatroniInstalled()
  const bins = await findPgBinaries()
  const cluster = new PatroniCluster(options, bins.binDir, serverOsUser())
  try {
    await cluster.init()
  } catch (err) {
    await cluster.destroy().catch(() => {})
    throw err
  }
  return cluster
}

class PatroniCluster implements PatroniTestCluster {
  readonly backend = 'patroni' as const
  readonly #opts: Resolved
  readonly #binDir: string
  readonly #osUser: OsUser | undefined
  readonly #members: Member[] = []
  readonly #frozen = new Set<number>()
  #baseDir = ''
  #etcdPort = 0
  #etcdPeerPort = 0
  #etcd: ChildProcess | undefined
  #destroyed: Promise<void> | undefined

  constructor(opts: Resolved, binDir: string, osUser: OsUser | undefined) {
    this.#opts = opts
    this.#binDir = binDir
    this.#osUser = osUser
  }

  get synchronous(): boolean {
    return this.#opts.synchronous
  }

  get etcdUrl(): string {
    return `http://${HOST}:${this.#etcdPort}`
  }

  get restUrls(): string[] {
    return this.#members.map((m) => this.#restUrl(m))
  }

  get nodes(): readonly PatroniTestNode[] {
    return this.#members.map((m) => this.#snapshot(m))
  }

  get primaryUrl(): string {
    const leader = this.#members.find((m) => m.role === 'leader')
    if (!leader) throw new TestClusterError('pgsplit/testing: no member was leader at the last look')
    return this.#url(leader)
  }

  get replicaUrls(): string[] {
    return this.#members.filter((m) => m.role === 'replica').map((m) => this.#url(m))
  }

  // --- start-up -----------------------------------------------------------------------------

  async init(): Promise<void> {
    const t0 = Date.now()
    live.add(this)
    installExitHandler()
    this.#baseDir = await mkdtemp(join(tmpdir(), 'pgsplit-patroni-'))
    await this.#prepareBaseDir()
    const [etcdPort, peerPort] = await findFreePorts(2, HOST)
    this.#etcdPort = etcdPort!
    this.#etcdPeerPort = peerPort!
    await this.#startEtcd()
    const first = await this.#addMember()
    await this.#spawnPatroni(first)
    const deadline = this.#deadline()
    await this.#waitMember(first, deadline, 'leader')
    await createDatabase(this.#target(first), this.#opts.database, this.#opts.timeoutMs)
    this.#opts.log(`pgsplit/testing: patroni leader ${first.name} up (${Date.now() - t0} ms)`)
    const others: Member[] = []
    for (let i = 0; i < this.#opts.replicas; i++) others.push(await this.#addMember())
    await Promise.all(others.map((m) => this.#spawnPatroni(m)))
    await Promise.all(others.map((m) => this.#waitMember(m, deadline, 'replica')))
    if (this.#opts.synchronous && others.length > 0) await this.#waitSyncStandby(deadline)
    await this.#refresh()
    this.#opts.log(
      `pgsplit/testing: patroni cluster of ${this.#members.length} members up in ${Date.now() - t0} ms (${this.#baseDir})`,
    )
  }

  async #prepareBaseDir(): Promise<void> {
    if (!this.#osUser) return
    await chown(this.#baseDir, this.#osUser.uid, this.#osUser.gid)
    // The postgres user must reach the base directory through every parent.
    for (let dir = dirname(this.#baseDir); ; dir = dirname(dir)) {
      const st = await stat(dir)
      if ((st.mode & 0o001) === 0) await chmod(dir, (st.mode & 0o7777) | 0o001)
      if (dirname(dir) === dir) break
    }
  }

  async #writeOwned(path: string, content: string): Promise<void> {
    await writeFile(path, content, { mode: 0o600 })
    if (this.#osUser) await chown(path, this.#osUser.uid, this.#osUser.gid)
  }

  async #mkdirOwned(path: string): Promise<void> {
    await mkdir(path, { recursive: true, mode: 0o700 })
    if (this.#osUser) await chown(path, this.#osUser.uid, this.#osUser.gid)
  }

  #spawn(file: string, args: string[], logFile: string): ChildProcess {
    const fd = openSync(logFile, 'a', 0o600)
    try {
      const proc = spawn(file, args, {
        cwd: '/',
        env: toolEnv(this.#osUser),
        stdio: ['ignore', fd, fd],
        ...spawnIdentity(this.#osUser),
      })
      proc.unref()
      proc.once('error', () => {})
      return proc
    } finally {
      closeSync(fd)
    }
  }

  async #startEtcd(): Promise<void> {
    const dataDir = join(this.#baseDir, 'etcd')
    await this.#mkdirOwned(dataDir)
    const client = `http://${HOST}:${this.#etcdPort}`
    const peer = `http://${HOST}:${this.#etcdPeerPort}`
    const logFile = join(this.#baseDir, 'etcd.log')
    const proc = this.#spawn(
      '/usr/bin/etcd',
      [
        '--name=etcd0',
        `--data-dir=${dataDir}`,
        `--listen-client-urls=${client}`,
        `--advertise-client-urls=${client}`,
        `--listen-peer-urls=${peer}`,
        `--initial-advertise-peer-urls=${peer}`,
        `--initial-cluster=etcd0=${peer}`,
        '--initial-cluster-state=new',
        `--initial-cluster-token=pgsplit-${this.#etcdPort}`,
        // Tests: no fsync-heavy snapshots, small heartbeat for a single-node cluster.
        '--unsafe-no-fsync',
        '--log-level=warn',
      ],
      logFile,
    )
    this.#etcd = proc
    proc.once('exit', () => {
      if (this.#etcd === proc) this.#etcd = undefined
    })
    await waitFor(
      'etcd answering /health',
      { node: 'etcd', timeoutMs: Math.min(this.#opts.timeoutMs, 30_000), details: () => tail(logFile) },
      async (note) => {
        if (this.#etcd !== proc) throw new StopWaiting('etcd exited')
        const res = await fetch(`${client}/health`, { signal: AbortSignal.timeout(1_000) })
        const body = await res.text()
        note(body)
        return /"health":\s*"true"/.test(body) ? true : undefined
      },
    )
  }

  async #addMember(): Promise<Member> {
    const index = this.#members.length
    const [pgPort, restPort] = await findFreePorts(2, HOST)
    const name = `node${index}`
    const m: Member = {
      index,
      name,
      pgPort: pgPort!,
      restPort: restPort!,
      dataDir: join(this.#baseDir, name),
      configFile: join(this.#baseDir, `${name}.yml`),
      logFile: join(this.#baseDir, `${name}.log`),
      tags: { ...(this.#opts.tags[index] ?? {}) },
      proc: undefined,
      role: 'stopped',
    }
    this.#members.push(m)
    await this.#writeConfig(m)
    return m
  }

  /** The member's Patroni configuration (JSON is YAML). */
  async #writeConfig(m: Member): Promise<void> {
    const o = this.#opts
    const socketDir = join(this.#baseDir, `sock-${m.name}`)
    if (!existsSync(socketDir)) await this.#mkdirOwned(socketDir)
    const parameters: Record<string, string | number | boolean> = {
      fsync: false,
      wal_level: 'replica',
      hot_standby: true,
      hot_standby_feedback: true,
      wal_log_hints: true,
      max_wal_senders: 20,
      max_replication_slots: 20,
      wal_keep_size: '128MB',
      max_connections: 120,
      wal_receiver_status_interval: '1s',
      wal_retrieve_retry_interval: '500ms',
      ...o.settings,
    }
    const config = {
      scope: 'pgsplit',
      namespace: `/pgsplit-${this.#etcdPort}/`,
      name: m.name,
      log: { level: 'INFO' },
      restapi: {
        listen: `${HOST}:${m.restPort}`,
        connect_address: `${HOST}:${m.restPort}`,
        ...(o.restAuth ? { authentication: o.restAuth } : {}),
      },
      ...(o.restAuth ? { ctl: { authentication: o.restAuth } } : {}),
      etcd3: { hosts: [`${HOST}:${this.#etcdPort}`] },
      bootstrap: {
        dcs: {
          ttl: 10,
          loop_wait: 2,
          retry_timeout: 5,
          maximum_lag_on_failover: 16 * 1024 * 1024,
          synchronous_mode: o.synchronous,
          postgresql: { use_pg_rewind: true, use_slots: true, parameters },
        },
        initdb: [{ encoding: 'UTF8' }, { locale: 'C' }, 'data-checksums'],
      },
      postgresql: {
        listen: `${HOST}:${m.pgPort}`,
        connect_address: `${HOST}:${m.pgPort}`,
        data_dir: m.dataDir,
        bin_dir: this.#binDir,
        pgpass: join(this.#baseDir, `pgpass-${m.name}`),
        authentication: {
          superuser: { username: o.user, password: o.password },
          replication: { username: 'replicator', password: o.password },
          rewind: { username: o.user, password: o.password },
        },
        parameters: { unix_socket_directories: socketDir },
        pg_hba: [
          'local all all trust',
          'local replication all trust',
          'host all all 127.0.0.1/32 scram-sha-256',
          'host replication all 127.0.0.1/32 scram-sha-256',
        ],
        // A spread checkpoint would hold each new replica's base backup for minutes.
        basebackup: [{ checkpoint: 'fast' }],
        // Patroni's default pg_ctl timeout is 60 s; a test wants a stuck start reported sooner.
        pg_ctl_timeout: 30,
      },
      tags: { nofailover: false, noloadbalance: false, clonefrom: false, nosync: false, ...m.tags },
    }
    await this.#writeOwned(m.configFile, `${JSON.stringify(config, null, 2)}\n`)
  }

  async #spawnPatroni(m: Member): Promise<void> {
    if (this.#destroyed) throw new TestClusterError('pgsplit/testing: the cluster was destroyed', m.name)
    if (m.proc) return
    const proc = this.#spawn('/usr/bin/patroni', [m.configFile], m.logFile)
    m.proc = proc
    proc.once('exit', () => {
      if (m.proc === proc) m.proc = undefined
    })
  }

  // --- looking ------------------------------------------------------------------------------

  #restUrl(m: Member): string {
    return `http://${HOST}:${m.restPort}`
  }

  #url(m: Member): string {
    const o = this.#opts
    return `postgres://${encodeURIComponent(o.user)}:${encodeURIComponent(o.password)}@${HOST}:${m.pgPort}/${encodeURIComponent(o.database)}`
  }

  #snapshot(m: Member): PatroniTestNode {
    const role = m.role === 'leader' ? 'primary' : m.role
    return { name: m.name, url: this.#url(m), host: HOST, port: m.pgPort, role, restUrl: this.#restUrl(m) }
  }

  #target(m: Member): NodeTarget {
    return {
      name: m.name,
      admin: { host: HOST, port: m.pgPort, user: this.#opts.user, password: this.#opts.password },
      details: () => tail(m.logFile),
    }
  }

  #deadline(): number {
    return Date.now() + this.#opts.timeoutMs
  }

  #member(i: number): Member {
    const m = this.#members[i]
    if (!m) {
      throw new TypeError(`pgsplit/testing: no member ${i} (the cluster has ${this.#members.length})`)
    }
    return m
  }

  async clusterState(): Promise<PatroniClusterState> {
    let last: unknown
    // Running members first: a stopped one only costs a refused connection, but a frozen one's REST still answers.
    const order = [...this.#members].sort(
      (a, b) => Number(b.proc !== undefined) - Number(a.proc !== undefined),
    )
    for (const m of order) {
      try {
        return await getPatroniCluster(this.#restUrl(m), { auth: this.#opts.restAuth, timeoutMs: 2_000 })
      } catch (err) {
        last = err
      }
    }
    throw new TestClusterError(
      `pgsplit/testing: no Patroni REST API answered (${last instanceof Error ? last.message : String(last)})`,
    )
  }

  /** Updates every member's role from `/cluster`. */
  async #refresh(state?: PatroniClusterState): Promise<PatroniClusterState> {
    const s = state ?? (await this.clusterState())
    for (const m of this.#members) {
      const seen = s.members.find((x) => x.name === m.name)
      m.role = !seen || !isRunning(seen) ? 'stopped' : seen.role === 'leader' ? 'leader' : 'replica'
    }
    return s
  }

  async leader(): Promise<number | undefined> {
    const s = await this.#refresh()
    const name = s.members.find((x) => x.role === 'leader')?.name
    return this.#members.find((m) => m.name === name)?.index
  }

  /** Waits until `/cluster` lists `m` running in `role` and its server answers in that role. */
  async #waitMember(m: Member, deadline: number, role: 'leader' | 'replica' | 'any'): Promise<void> {
    await waitFor(
      `running as ${role === 'any' ? 'a member' : `the ${role}`}`,
      { node: m.name, timeoutMs: remaining(deadline), intervalMs: 100, details: () => tail(m.logFile) },
      async (note) => {
        if (!m.proc) throw new StopWaiting('patroni exited')
        const state = await this.clusterState()
        const seen = state.members.find((x) => x.name === m.name)
        note(seen ? `${seen.role} ${seen.state}` : 'not listed in /cluster')
        if (!seen || !isRunning(seen)) return undefined
        const isLeader = seen.role === 'leader'
        if ((role === 'leader' && !isLeader) || (role === 'replica' && isLeader)) return undefined
        const [row] = await queryRows<{ rec: boolean; streaming: boolean }>(
          this.#target(m).admin,
          1_000,
          `SELECT pg_is_in_recovery() AS rec,
                  coalesce((SELECT status = 'streaming' FROM pg_stat_wal_receiver), false) AS streaming`,
        )
        note(`${seen.role} ${seen.state}, in recovery ${row?.rec}, streaming ${row?.streaming}`)
        if (isLeader ? row?.rec !== false : !(row?.rec && row.streaming)) return undefined
        await this.#refresh(state)
        return true
      },
    )
  }

  async #waitSyncStandby(deadline: number): Promise<void> {
    await waitFor(
      'a synchronous standby (synchronous_mode)',
      { node: 'patroni', timeoutMs: remaining(deadline), intervalMs: 100 },
      async (note) => {
        const s = await this.clusterState()
        note(s.members.map((m) => `${m.name}:${m.role}`).join(', '))
        return s.members.some((m) => m.role === 'sync_standby') ? true : undefined
      },
    )
  }

  async waitForLeader(opts: { not?: number; timeoutMs?: number } = {}): Promise<number> {
    const timeoutMs = opts.timeoutMs ?? this.#opts.timeoutMs
    // One loop: a leader seen once may lose the lock again before it takes writes (Patroni 3.0.2
    // gives it back to a resumed old leader), so both are checked on every look.
    return waitFor(
      opts.not === undefined ? 'a leader taking writes' : `a leader other than node${opts.not} taking writes`,
      { node: 'patroni', timeoutMs, intervalMs: 50 },
      async (note) => {
        const s = await this.clusterState()
        note(s.members.map((x) => `${x.name}:${x.role}:${x.state}`).join(', '))
        const leader = s.members.find((x) => x.role === 'leader' && isRunning(x))
        const m = this.#members.find((x) => x.name === leader?.name)
        if (!m || m.index === opts.not || !m.proc) return undefined
        const [row] = await queryRows<{ rec: boolean }>(
          this.#target(m).admin,
          1_000,
          'SELECT pg_is_in_recovery() AS rec',
        )
        if (row?.rec !== false) return undefined
        await this.#refresh(s)
        return m.index
      },
    )
  }

  // --- operations ---------------------------------------------------------------------------

  async #postmasterPid(m: Member): Promise<number | undefined> {
    try {
      const pid = Number.parseInt(
        (await readFile(join(m.dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0] ?? '',
        10,
      )
      return Number.isInteger(pid) && pid > 0 && (await processState(pid)) === 'alive' ? pid : undefined
    } catch {
      return undefined
    }
  }

  async #waitGone(what: string, m: Member, pids: number[], deadline: number): Promise<void> {
    await waitFor(what, { node: m.name, timeoutMs: remaining(deadline) }, async (note) => {
      for (const pid of pids) {
        if ((await processState(pid)) === 'alive') {
          note(`process ${pid} still running`)
          return undefined
        }
      }
      return true
    })
  }

  async kill(i: number): Promise<void> {
    const m = this.#member(i)
    const pid = await this.#postmasterPid(m)
    if (pid === undefined) return
    const pids = [pid, ...(await childPids(pid))]
    signalProcess(pid, 'SIGKILL')
    await this.#waitGone('exit of the postmaster after SIGKILL', m, pids, this.#deadline())
    this.#opts.log(`pgsplit/testing: ${m.name}: postmaster ${pid} killed`)
  }

  async killManager(i: number): Promise<void> {
    const m = this.#member(i)
    const proc = m.proc
    if (!proc?.pid) return
    signalProcess(proc.pid, 'SIGKILL')
    await waitFor('exit of patroni after SIGKILL', { node: m.name, timeoutMs: 10_000 }, async () =>
      m.proc === proc ? undefined : true,
    )
    this.#opts.log(`pgsplit/testing: ${m.name}: patroni ${proc.pid} killed`)
  }

  async stop(i: number): Promise<void> {
    const m = this.#member(i)
    const deadline = this.#deadline()
    this.#thaw(m)
    const proc = m.proc
    if (proc?.pid) {
      // SIGTERM: Patroni stops PostgreSQL (fast), releases the leader key and removes its member key.
      signalProcess(proc.pid, 'SIGTERM')
      await waitFor(
        'exit of patroni after SIGTERM',
        { node: m.name, timeoutMs: remaining(deadline) },
        async () => (m.proc === proc ? undefined : true),
      )
    }
    // After killManager the server runs on without its Patroni: stop it too.
    const pid = await this.#postmasterPid(m)
    if (pid !== undefined) {
      signalProcess(pid, 'SIGINT')
      await this.#waitGone('fast shutdown', m, [pid], deadline)
    }
    m.role = 'stopped'
  }

  async start(i: number): Promise<void> {
    const m = this.#member(i)
    await this.#spawnPatroni(m)
    await this.#waitMember(m, this.#deadline(), 'any')
  }

  async freeze(i: number, ms: number): Promise<void> {
    const m = this.#member(i)
    if (!(ms >= 0 && ms <= 600_000))
      throw new TypeError(`pgsplit/testing: freeze ms must be 0-600000, got ${ms}`)
    const pid = await this.#postmasterPid(m)
    if (pid === undefined)
      throw new TestClusterError('pgsplit/testing: no running postmaster to freeze', m.name)
    // The postmaster first, so it forks no new backend while the children are stopped.
    signalProcess(pid, 'SIGSTOP')
    const pids = [pid, ...(await childPids(pid))]
    for (const p of pids.slice(1)) signalProcess(p, 'SIGSTOP')
    this.#frozen.add(m.index)
    this.#frozenPids.set(m.index, pids)
    this.#opts.log(`pgsplit/testing: ${m.name}: ${pids.length} server processes frozen for ${ms} ms`)
    await new Promise<void>((r) => setTimeout(r, ms))
    this.#thaw(m)
  }

  readonly #frozenPids = new Map<number, number[]>()

  #thaw(m: Member): void {
    const pids = this.#frozenPids.get(m.index)
    if (!pids) return
    for (const p of pids.slice(1)) signalProcess(p, 'SIGCONT')
    if (pids[0] !== undefined) signalProcess(pids[0], 'SIGCONT')
    this.#frozenPids.delete(m.index)
    this.#frozen.delete(m.index)
    this.#opts.log(`pgsplit/testing: ${m.name}: server processes resumed`)
  }

  async switchover(to?: number): Promise<number> {
    const deadline = this.#deadline()
    const from = await this.leader()
    if (from === undefined) throw new TestClusterError('pgsplit/testing: switchover: no leader now')
    const leader = this.#member(from)
    const body: Record<string, string> = { leader: leader.name }
    if (to !== undefined) body.candidate = this.#member(to).name
    await this.#post(leader, '/switchover', body, deadline)
    return this.waitForLeader({ not: from, timeoutMs: remaining(deadline) })
  }

  async failover(to: number): Promise<void> {
    const deadline = this.#deadline()
    const m = this.#member(to)
    const running = this.#members.find((x) => x.proc && x.index !== to) ?? m
    await this.#post(running, '/failover', { candidate: m.name }, deadline)
    await waitFor(
      `leader ${m.name}`,
      { node: m.name, timeoutMs: remaining(deadline), intervalMs: 100 },
      async () => ((await this.leader()) === to ? true : undefined),
    )
    await this.#waitMember(m, deadline, 'leader')
  }

  promote(i: number): Promise<void> {
    return this.failover(i)
  }

  async #post(m: Member, path: string, body: unknown, deadline: number): Promise<void> {
    // Patroni answers 503 while another operation runs (say, the member just started): try again.
    await waitFor(
      `POST ${path}`,
      { node: m.name, timeoutMs: remaining(deadline), intervalMs: 250 },
      async () => {
        await postPatroni(this.#restUrl(m), path, body, {
          auth: this.#opts.restAuth,
          timeoutMs: Math.min(remaining(deadline), 30_000),
        })
        return true
      },
    )
  }

  async setTags(i: number, tags: PatroniTags): Promise<void> {
    const m = this.#member(i)
    m.tags = { ...tags }
    await this.#writeConfig(m)
    if (m.proc?.pid) signalProcess(m.proc.pid, 'SIGHUP')
    await waitFor(
      'new tags in /cluster',
      { node: m.name, timeoutMs: 30_000, intervalMs: 100 },
      async (note) => {
        const seen = (await this.clusterState()).members.find((x) => x.name === m.name)
        note(JSON.stringify(seen?.tags ?? {}))
        return seen && Object.entries(tags).every(([k, v]) => (seen.tags?.[k] ?? false) === v)
          ? true
          : undefined
      },
    )
  }

  async pauseReplay(i: number): Promise<void> {
    await setReplayPaused(this.#target(this.#member(i)), true, this.#deadline())
  }

  async resumeReplay(i: number): Promise<void> {
    await setReplayPaused(this.#target(this.#member(i)), false, this.#deadline())
  }

  async addReplica(): Promise<PatroniTestNode> {
    const m = await this.#addMember()
    await this.#spawnPatroni(m)
    await this.#waitMember(m, this.#deadline(), 'replica')
    return this.#snapshot(m)
  }

  async reinit(i: number): Promise<void> {
    const deadline = this.#deadline()
    const m = this.#member(i)
    this.#opts.log(`pgsplit/testing: ${m.name}: reinitialize`)
    await this.#post(m, '/reinitialize', { force: true }, deadline)
    await this.#waitMember(m, deadline, 'replica')
  }

  // --- tear-down ----------------------------------------------------------------------------

  destroy(): Promise<void> {
    this.#destroyed ??= this.#doDestroy()
    return this.#destroyed
  }

  async #doDestroy(): Promise<void> {
    const deadline = Date.now() + 30_000
    for (const m of this.#members) this.#thaw(m)
    // SIGKILL of every Patroni first, so none restarts a server we stop next.
    const patronis = this.#members.flatMap((m) => (m.proc?.pid ? [m.proc.pid] : []))
    for (const pid of patronis) signalProcess(pid, 'SIGKILL')
    const servers: number[] = []
    for (const m of this.#members) {
      const pid = await this.#postmasterPid(m)
      if (pid !== undefined) servers.push(pid, ...(await childPids(pid)))
    }
    for (const pid of servers.slice()) signalProcess(pid, 'SIGKILL')
    if (this.#etcd?.pid) signalProcess(this.#etcd.pid, 'SIGKILL')
    const all = [...patronis, ...servers, ...(this.#etcd?.pid ? [this.#etcd.pid] : [])]
    await waitFor(
      'exit of every process',
      { node: 'patroni', timeoutMs: remaining(deadline) },
      async (note) => {
        for (const pid of all) {
          if ((await processState(pid)) === 'alive') {
            note(`process ${pid} still running`)
            return undefined
          }
        }
        return true
      },
    ).catch(() => {})
    live.delete(this)
    if (this.#baseDir)
      await rm(this.#baseDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 })
    this.#opts.log(`pgsplit/testing: patroni cluster destroyed, ${this.#baseDir} removed`)
  }

  /** Best effort at process exit, synchronously. */
  killSync(): void {
    for (const m of this.#members) {
      for (const p of this.#frozenPids.get(m.index) ?? []) signalProcess(p, 'SIGKILL')
      if (m.proc?.pid) signalProcess(m.proc.pid, 'SIGKILL')
      try {
        const pid = Number.parseInt(
          readFileSync(join(m.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0] ?? '',
          10,
        )
        if (pid > 0) signalProcess(pid, 'SIGKILL')
      } catch {
        // No server to kill.
      }
    }
    if (this.#etcd?.pid) signalProcess(this.#etcd.pid, 'SIGKILL')
    try {
      if (this.#baseDir) rmSync(this.#baseDir, { recursive: true, force: true })
    } catch {
      // Nothing more can be done while the process exits.
    }
  }
}

function isRunning(m: PatroniMember): boolean {
  return m.state === 'running' || m.state === 'streaming'
}

async function tail(file: string): Promise<string> {
  const t = await fileTail(file, 12)
  return t ? `last lines of ${file}:\n${t}` : ''
}

const live = new Set<PatroniCluster>()
let exitHandlerInstalled = false

function installExitHandler(): void {
  if (exitHandlerInstalled) return
  exitHandlerInstalled = true
  process.on('exit', () => {
    for (const cluster of live) cluster.killSync()
  })
}
