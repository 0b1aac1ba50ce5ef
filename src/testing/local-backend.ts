import { type ChildProcess, spawn } from 'node:child_process'
import { closeSync, openSync, rmSync } from 'node:fs'
import { chmod, chown, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { ClusterHandle, type HandleNode, initialized } from './cluster-handle.js'
import { copyDataDir } from './data-dir-copy.js'
import { TestClusterError } from './errors.js'
import {
  createDatabase,
  ensureSlot,
  lowLevelBaseBackup,
  type SynchronousWait,
  setUpstream,
  waitAccepting,
  waitStreaming,
} from './node-operations.js'
import { findPgBinaries, type PgBinaries } from './pg-binaries.js'
import { findFreePort, findFreePorts } from './ports.js'
import {
  childPids,
  fileTail,
  type OsUser,
  processState,
  runTool,
  serverOsUser,
  signalProcess,
  spawnIdentity,
  toolEnv,
} from './process-utils.js'
import {
  conninfo,
  hbaConf,
  NODE_CONF_FILE,
  nodeSettings,
  pgpassLine,
  type SettingValue,
  sharedSettings,
  withAutoSettings,
} from './server-config.js'
import type { StartClusterOptions, TestCluster, TestNode } from './types.js'
import { remaining, StopWaiting, waitFor } from './wait.js'

const HOST = '127.0.0.1'

interface ResolvedOptions {
  readonly replicas: number
  /** Standbys that must confirm each commit; 0 = asynchronous. */
  readonly syncCount: number
  readonly database: string
  readonly user: string
  readonly password: string
  readonly settings: Readonly<Record<string, SettingValue>>
  readonly timeoutMs: number
  readonly log: (line: string) => void
  /** Major version asked for (`'17'`), or undefined for the system's. */
  readonly postgres: string | undefined
  /** Clone and rejoin without pg_basebackup and pg_rewind even where they exist. */
  readonly lowLevelBackup: boolean
}

/** What the harness knows of one node: a server process on 127.0.0.1. */
interface NodeState extends HandleNode {
  port: number
  readonly dataDir: string
  readonly logFile: string
  /** The running postmaster (our child process), if any. */
  proc: ChildProcess | undefined
  /** The port is final once the node has started once (its URL was handed out). */
  started: boolean
}

/** Validates `opts` and fills in the defaults. Throws a TypeError on a bad option. */
export function resolveOptions(opts: StartClusterOptions): ResolvedOptions {
  const replicas = opts.replicas ?? 2
  if (!Number.isInteger(replicas) || replicas < 0) {
    throw new TypeError(`pgsplit/testing: replicas must be an integer >= 0, got ${String(opts.replicas)}`)
  }
  const sync = opts.synchronous ?? false
  const syncCount = sync === true ? 1 : sync === false ? 0 : sync
  if (!Number.isInteger(syncCount) || syncCount < 0) {
    throw new TypeError(
      `pgsplit/testing: synchronous must be a boolean or an integer >= 0, got ${String(sync)}`,
    )
  }
  if (syncCount > replicas) {
    // Every commit would wait forever for standbys that do not exist.
    throw new TypeError(
      `pgsplit/testing: synchronous: ${syncCount} needs at least ${syncCount} replicas, got ${replicas}`,
    )
  }
  const timeoutMs = opts.timeoutMs ?? 60_000
  if (!(timeoutMs > 0))
    throw new TypeError(`pgsplit/testing: timeoutMs must be > 0, got ${String(opts.timeoutMs)}`)
  const password = opts.password ?? 'postgres'
  if (password === '') throw new TypeError('pgsplit/testing: password must not be empty')
  const user = opts.user ?? 'postgres'
  const database = opts.database ?? 'app'
  if (user === '' || database === '')
    throw new TypeError('pgsplit/testing: user and database must not be empty')
  return {
    postgres: postgresVersion(opts.postgres),
    lowLevelBackup: opts.lowLevelBackup ?? process.env.PGSPLIT_PG_LOW_LEVEL_BACKUP === '1',
    replicas,
    syncCount,
    database,
    user,
    password,
    settings: opts.settings ?? {},
    timeoutMs,
    log: opts.log ?? (() => {}),
  }
}

/**
 * The major version from the option, else from `$PGSPLIT_PG_VERSION` ('' there means none).
 * A TypeError names the option or variable when it is not a major version number.
 */
function postgresVersion(option: string | undefined): string | undefined {
  const fromEnv = process.env.PGSPLIT_PG_VERSION
  const [value, what] =
    option !== undefined ? [option, 'postgres'] : [fromEnv || undefined, 'PGSPLIT_PG_VERSION']
  if (value === undefined) return undefined
  const text = String(value).trim()
  // A major version: 10 and later are one number; older ones had no streaming of this kind.
  if (!/^\d+$/.test(text) || Number(text) < 10) {
    throw new TypeError(
      `pgsplit/testing: ${what} must be a PostgreSQL major version such as '17', got ${JSON.stringify(value)}`,
    )
  }
  return String(Number(text))
}

/**
 * Starts a primary and `replicas` streaming standbys as plain processes on 127.0.0.1, of the
 * PostgreSQL `opts.postgres` asks for (the system's, or an npm package's); see `startCluster`
 * for the options and the handle.
 */
export async function startLocalCluster(opts: StartClusterOptions): Promise<TestCluster> {
  const options = resolveOptions(opts)
  const osUser = serverOsUser()
  const binaries = await findPgBinaries({ version: options.postgres, user: osUser })
  const tools = options.lowLevelBackup
    ? 'low-level backup API, fresh copies (forced)'
    : `${binaries.paths.pg_basebackup ? 'pg_basebackup' : 'low-level backup API'}, ${binaries.paths.pg_rewind ? 'pg_rewind' : 'fresh copies'}`
  options.log(
    `pgsplit/testing: PostgreSQL ${binaries.version} from ${binaries.source} (${binaries.binDir}); replicas by ${tools}`,
  )
  const baseDir = await mkdtemp(join(tmpdir(), 'pgsplit-'))
  return initialized(new LocalCluster(options, binaries, osUser, baseDir))
}

class LocalCluster extends ClusterHandle<NodeState, ResolvedOptions> implements TestCluster {
  readonly backend = 'local' as const
  private readonly passfile: string
  /**
   * Unix sockets of every node (names differ by port). Not in the data directories: pg_rewind
   * would try to copy a socket file and fail; not /var/run/postgresql: a system server's.
   */
  private readonly socketDir: string

  constructor(
    opts: ResolvedOptions,
    private readonly bins: PgBinaries,
    private readonly osUser: OsUser | undefined,
    /** Temp directory holding every node's data directory and log. */
    readonly baseDir: string,
  ) {
    super(opts)
    this.passfile = join(baseDir, 'pgpass')
    // Socket paths are limited to ~107 bytes: with a very long TMPDIR, TCP only.
    this.socketDir = join(baseDir, 'sockets').length < 90 ? join(baseDir, 'sockets') : ''
  }

  protected isRunning(s: NodeState): boolean {
    return s.proc !== undefined
  }

  // --- start-up -----------------------------------------------------------------------------

  async init(): Promise<void> {
    const t0 = Date.now()
    live.add(this)
    installExitHandler()
    await this.prepareBaseDir()
    const ports = await findFreePorts(1 + this.opts.replicas, HOST)
    const primary = this.addState(ports[0]!, 'primary', undefined)
    await this.initdb(primary)
    await this.startNode(primary, this.deadline())
    if (this.opts.database !== 'postgres') {
      await createDatabase(this.at(primary), this.opts.database, this.opts.timeoutMs)
    }
    this.opts.log(
      `pgsplit/testing: primary ${primary.name} up on ${HOST}:${primary.port} (${Date.now() - t0} ms)`,
    )
    // Base backups and starts in parallel: each has its own slot, directory and port.
    const standbys = ports.slice(1).map((port) => this.addState(port, 'standby', 0))
    await Promise.all(standbys.map((s) => this.cloneAndStart(s, primary, this.deadline())))
    if (this.opts.syncCount > 0) await this.updateSynchronousNames(primary, quorumOf(standbys.length))
    this.opts.log(
      `pgsplit/testing: cluster of 1 primary + ${standbys.length} standbys up in ${Date.now() - t0} ms (${this.baseDir})`,
    )
  }

  private addState(port: number, kind: NodeState['kind'], upstream: number | undefined): NodeState {
    const index = this.states.length
    const name = `node${index}`
    const s: NodeState = {
      index,
      name,
      host: HOST,
      port,
      dataDir: join(this.baseDir, name),
      logFile: join(this.baseDir, `${name}.log`),
      kind,
      upstream,
      proc: undefined,
      started: false,
    }
    this.states.push(s)
    return s
  }

  private async prepareBaseDir(): Promise<void> {
    if (this.osUser) {
      // The servers run as the postgres user: it must own the base directory and reach it.
      await chown(this.baseDir, this.osUser.uid, this.osUser.gid)
      for (let dir = dirname(this.baseDir); ; dir = dirname(dir)) {
        const st = await stat(dir)
        if ((st.mode & 0o001) === 0) {
          this.opts.log(
            `pgsplit/testing: adding o+x to ${dir} so the postgres user can reach ${this.baseDir}`,
          )
          await chmod(dir, (st.mode & 0o7777) | 0o001)
        }
        if (dirname(dir) === dir) break
      }
    }
    if (this.socketDir) {
      await mkdir(this.socketDir, { mode: 0o700 })
      if (this.osUser) await chown(this.socketDir, this.osUser.uid, this.osUser.gid)
    }
    // The standbys and tools read the password from here: it never goes into a conninfo or a log.
    await this.writeServerFile(this.passfile, pgpassLine(this.opts.user, this.opts.password))
  }

  private async initdb(s: NodeState): Promise<void> {
    const pwfile = join(this.baseDir, 'pwfile')
    await this.writeServerFile(pwfile, `${this.opts.password}\n`)
    try {
      await runTool(
        this.bins.paths.initdb,
        [
          '-D',
          s.dataDir,
          '-U',
          this.opts.user,
          `--pwfile=${pwfile}`,
          '--auth-local=trust',
          '--auth-host=scram-sha-256',
          // pg_rewind needs checksums or wal_log_hints; checksums also catch corruption in tests.
          '--data-checksums',
          '--encoding=UTF8',
          '--locale=C',
          '--no-sync',
        ],
        { user: this.osUser, timeoutMs: this.opts.timeoutMs, node: s.name },
      )
    } finally {
      await rm(pwfile, { force: true })
    }
    const conf = join(s.dataDir, 'postgresql.conf')
    await this.writeServerFile(conf, (await readFile(conf, 'utf8')) + sharedSettings(this.opts.settings))
    await this.writeServerFile(join(s.dataDir, 'pg_hba.conf'), hbaConf())
  }

  /** A base backup of `from` into `s`'s directory, then starts `s` as its standby. */
  private async cloneAndStart(s: NodeState, from: NodeState, deadline: number): Promise<void> {
    const t0 = Date.now()
    await ensureSlot(this.at(from), s.name, deadline)
    await this.baseBackup(s, from, deadline)
    await this.configureStandby(s, from)
    await this.startNode(s, deadline)
    this.opts.log(
      `pgsplit/testing: standby ${s.name} streaming from ${from.name} on ${HOST}:${s.port} (${Date.now() - t0} ms)`,
    )
  }

  /**
   * `s`'s data directory (which must not exist) as a base backup of running `from`: by
   * pg_basebackup where it is there, else (and with `lowLevelBackup`) by the low-level backup
   * API and a file copy. Either way `s` then replays from the backup's start, streaming WAL
   * through its slot on `from`, which the caller made.
   */
  private async baseBackup(s: NodeState, from: NodeState, deadline: number): Promise<void> {
    const pgBasebackup = this.opts.lowLevelBackup ? undefined : this.bins.paths.pg_basebackup
    if (!pgBasebackup) {
      const files = await lowLevelBaseBackup(this.at(from), `pgsplit ${s.name}`, deadline, () =>
        copyDataDir(from.dataDir, s.dataDir, this.osUser),
      )
      await this.writeServerFile(join(s.dataDir, 'backup_label'), files.labelfile)
      if (files.spcmapfile) await this.writeServerFile(join(s.dataDir, 'tablespace_map'), files.spcmapfile)
      return
    }
    await runTool(
      pgBasebackup,
      [
        '-D',
        s.dataDir,
        '-d',
        this.conninfoFor(from, s.name),
        '-S',
        s.name,
        '-X',
        'stream',
        // A spread checkpoint would make the backup wait for minutes.
        '--checkpoint=fast',
        '--no-sync',
        '--no-password',
      ],
      { user: this.osUser, timeoutMs: remaining(deadline), node: s.name },
    )
  }

  // --- operations ---------------------------------------------------------------------------

  async kill(i: number): Promise<void> {
    const s = this.node(i)
    const deadline = this.deadline()
    const proc = s.proc
    // Only our own child: its PID cannot have been reused by another process while unreaped,
    // which a stale postmaster.pid after an earlier kill can't promise.
    const pid = proc?.pid
    if (!proc || pid === undefined) return
    const filePid = await this.postmasterPid(s)
    if (filePid !== undefined && filePid !== pid) {
      throw new TestClusterError(
        `pgsplit/testing: ${s.name}: postmaster.pid names ${filePid}, expected ${pid}`,
        s.name,
      )
    }
    // The backends outlive the postmaster for a moment; a restart must not race them.
    const children = await childPids(pid)
    signalProcess(pid, 'SIGKILL')
    await waitFor(
      'exit of the postmaster after SIGKILL',
      { node: s.name, timeoutMs: remaining(deadline) },
      async (note) => {
        if (s.proc === proc || (await processState(pid)) !== 'gone') {
          note(`postmaster ${pid} still exists`)
          return undefined
        }
        for (const child of children) {
          // A zombie holds no lock, port or shared memory: it only waits to be reaped by init.
          if ((await processState(child)) === 'alive') {
            note(`server process ${child} still running`)
            return undefined
          }
        }
        return true
      },
    )
    this.opts.log(`pgsplit/testing: ${s.name} killed (pid ${pid})`)
  }

  async addReplica(): Promise<TestNode> {
    const primary = this.primaryForNewReplica()
    const s = this.addState(await findFreePort(HOST), 'standby', primary.index)
    try {
      await this.cloneAndStart(s, primary, this.deadline())
    } catch (err) {
      // Leave no half-made node in `nodes`; its directory goes with destroy().
      await this.stopNode(s, this.deadline(), 'immediate').catch(() => {})
      // Names and upstream links are indexes: only the last node can go without renumbering.
      if (this.states.at(-1) === s) this.states.pop()
      throw err
    }
    if (this.opts.syncCount > 0) {
      const streaming = this.states.filter(
        (n) => n.proc && n.kind === 'standby' && n.upstream === primary.index,
      )
      await this.updateSynchronousNames(primary, quorumOf(streaming.length))
    }
    return this.snapshot(s)
  }

  protected async doDestroy(): Promise<void> {
    const deadline = Date.now() + Math.min(this.opts.timeoutMs, 30_000)
    await Promise.all(this.states.map((s) => this.stopNode(s, deadline, 'immediate').catch(() => {})))
    // stopNode escalates to SIGKILL itself; this covers a stop that failed some other way.
    for (const s of this.states) if (s.proc?.pid) signalProcess(s.proc.pid, 'SIGKILL')
    live.delete(this)
    await rm(this.baseDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 })
    this.opts.log(`pgsplit/testing: cluster destroyed, ${this.baseDir} removed`)
  }

  /** Best effort at process exit: SIGKILL every server and remove the files, synchronously. */
  killSync(): void {
    for (const s of this.states) if (s.proc?.pid) signalProcess(s.proc.pid, 'SIGKILL')
    try {
      rmSync(this.baseDir, { recursive: true, force: true, maxRetries: 3, retryDelay: 50 })
    } catch {
      // Nothing more can be done while the process exits.
    }
  }

  // --- building blocks ----------------------------------------------------------------------

  protected async logDetails(s: NodeState): Promise<string> {
    const tail = await fileTail(s.logFile, 12)
    return tail ? `last lines of ${s.logFile}:\n${tail}` : ''
  }

  /** Connection string from a tool or standby to `up`; the password comes from the passfile. */
  private conninfoFor(up: NodeState, applicationName: string): string {
    return conninfo({
      host: HOST,
      port: up.port,
      user: this.opts.user,
      passfile: this.passfile,
      // Names the standby in pg_stat_replication and in synchronous_standby_names.
      application_name: applicationName,
      dbname: 'postgres',
    })
  }

  /** Writes a file the server (postgres user) must own. */
  private async writeServerFile(path: string, content: string): Promise<void> {
    await writeFile(path, content, { mode: 0o600 })
    if (this.osUser) await chown(path, this.osUser.uid, this.osUser.gid)
  }

  /** standby.signal plus primary_conninfo / primary_slot_name for streaming from `up`. */
  protected async configureStandby(s: NodeState, up: NodeState): Promise<void> {
    const autoConf = join(s.dataDir, 'postgresql.auto.conf')
    const current = await readFile(autoConf, 'utf8').catch(() => '')
    await this.writeServerFile(
      autoConf,
      withAutoSettings(current, {
        primary_conninfo: this.conninfoFor(up, s.name),
        primary_slot_name: s.name,
      }),
    )
    await this.writeServerFile(join(s.dataDir, 'standby.signal'), '')
    s.kind = 'standby'
    s.upstream = up.index
  }

  private async clearSlots(s: NodeState): Promise<void> {
    const dir = join(s.dataDir, 'pg_replslot')
    const entries = await readdir(dir).catch(() => [])
    await Promise.all(entries.map((e) => rm(join(dir, e), { recursive: true, force: true })))
  }

  private async postmasterPid(s: NodeState): Promise<number | undefined> {
    try {
      const pid = Number.parseInt(
        (await readFile(join(s.dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0] ?? '',
        10,
      )
      return Number.isInteger(pid) && pid > 0 ? pid : undefined
    } catch {
      return undefined
    }
  }

  /**
   * Starts `s` with its port file rewritten; returns when it accepts connections in the expected
   * role and, for a standby whose upstream runs, when it streams from it.
   */
  protected async startNode(s: NodeState, deadline: number): Promise<void> {
    if (s.proc) return
    const t0 = Date.now()
    let logOffset = 0
    for (let attempt = 1; ; attempt++) {
      logOffset = await this.logSize(s)
      await this.writeServerFile(
        join(s.dataDir, NODE_CONF_FILE),
        nodeSettings({ name: s.name, port: s.port, socketDir: this.socketDir }),
      )
      const proc = this.spawnServer(s)
      try {
        await waitAccepting(this.at(s), s.kind, deadline, () =>
          s.proc !== proc ? 'server process exited during start-up' : undefined,
        )
        break
      } catch (err) {
        const output = await this.logSince(s, logOffset)
        // Another process took the port between our probe and the server's bind. Before the
        // first start nobody has the URL yet, so a new port is still fine.
        if (s.started || attempt >= 4 || !/could not bind|address already in use/i.test(output)) throw err
        const port = await findFreePort(HOST)
        this.opts.log(`pgsplit/testing: ${s.name}: port ${s.port} was taken, using ${port}`)
        s.port = port
      }
    }
    s.started = true
    this.opts.log(`pgsplit/testing: ${s.name} accepts connections (${s.kind}, ${Date.now() - t0} ms)`)
    const up = s.upstream === undefined ? undefined : this.states[s.upstream]
    if (s.kind === 'standby' && up?.proc) await this.waitStreaming(s, up, deadline, logOffset)
  }

  private spawnServer(s: NodeState): ChildProcess {
    if (this.destroyPromise) throw new TestClusterError('pgsplit/testing: the cluster was destroyed', s.name)
    const fd = openSync(s.logFile, 'a', 0o600)
    let proc: ChildProcess
    try {
      // Our own child (not pg_ctl's orphan): when it dies we reap it at once, so a kill -9 is
      // over in milliseconds instead of waiting for init to reap it.
      proc = spawn(this.bins.paths.postgres, ['-D', s.dataDir], {
        cwd: '/',
        env: toolEnv(this.osUser),
        stdio: ['ignore', fd, fd],
        ...spawnIdentity(this.osUser),
      })
    } finally {
      closeSync(fd)
    }
    proc.unref()
    s.proc = proc
    const gone = (): void => {
      if (s.proc === proc) s.proc = undefined
    }
    proc.once('exit', gone)
    proc.once('error', gone)
    return proc
  }

  protected async streamFrom(s: NodeState, up: NodeState, deadline: number): Promise<void> {
    const logOffset = await this.logSize(s)
    await setUpstream(this.at(s), this.conninfoFor(up, s.name), s.name, deadline)
    await this.waitStreaming(s, up, deadline, logOffset)
  }

  /**
   * pg_rewind of `s` from `up`; without pg_rewind (or with `lowLevelBackup`) a fresh base backup
   * of `up` replaces `s`'s data directory: slower, the same outcome for a test.
   */
  protected async rewind(s: NodeState, up: NodeState, deadline: number): Promise<boolean> {
    const pgRewind = this.opts.lowLevelBackup ? undefined : this.bins.paths.pg_rewind
    if (!pgRewind) {
      await rm(s.dataDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 })
      await this.baseBackup(s, up, deadline)
      this.opts.log(`pgsplit/testing: ${s.name} is a fresh copy of ${up.name} (no pg_rewind)`)
      return true
    }
    const { stdout, stderr } = await runTool(
      pgRewind,
      [`--target-pgdata=${s.dataDir}`, `--source-server=${this.conninfoFor(up, s.name)}`, '--no-sync'],
      { user: this.osUser, timeoutMs: remaining(deadline), node: s.name },
    )
    await this.clearSlots(s)
    return !/no rewind required/i.test(stdout + stderr)
  }

  /**
   * Waits until `s` streams from `up`: its WAL receiver is streaming, connected to `up`'s port
   * and on `up`'s current timeline. (pg_stat_replication on the upstream can show 'streaming'
   * for a standby that cannot follow; the receiver's side is what counts.) A standby that
   * replayed past the fork point of `up`'s timeline never will: its log says so after
   * `logOffset`, and the wait ends at once with advice instead of running into the timeout.
   */
  private async waitStreaming(
    s: NodeState,
    up: NodeState,
    deadline: number,
    logOffset: number,
  ): Promise<void> {
    await waitStreaming(this.at(s), this.at(up), deadline, {
      what: `streaming from ${up.name} (port ${up.port})`,
      upstream: { column: 'sender_port', value: up.port, label: 'sender port' },
      stopIf: () => (s.proc ? undefined : 'server process exited'),
      hopeless: async (timeline) => {
        if (/forked off current database system timeline/.test(await this.logSince(s, logOffset))) {
          throw new StopWaiting(
            `cannot follow ${up.name}: it replayed WAL past the point where ${up.name}'s timeline ${timeline} ` +
              `forked off; rejoin(${s.index}, ${up.index}) rewinds it (pg_rewind, or a fresh copy without it) and makes it follow`,
          )
        }
      },
    })
  }

  private async logSize(s: NodeState): Promise<number> {
    return (await stat(s.logFile).catch(() => undefined))?.size ?? 0
  }

  /** What the server wrote to its log after byte `offset`. */
  private async logSince(s: NodeState, offset: number): Promise<string> {
    const content = await readFile(s.logFile).catch(() => Buffer.alloc(0))
    return content.subarray(offset).toString('utf8')
  }

  /**
   * Stops `s` and waits until its postmaster is gone. 'fast' (SIGINT) ends sessions and writes
   * a shutdown checkpoint; 'immediate' (SIGQUIT) skips it, and SIGKILL follows if it hangs.
   */
  protected async stopNode(
    s: NodeState,
    deadline: number,
    mode: 'fast' | 'immediate' = 'fast',
  ): Promise<void> {
    const proc = s.proc
    if (!proc?.pid) return
    const pid = proc.pid
    signalProcess(pid, mode === 'fast' ? 'SIGINT' : 'SIGQUIT')
    const exited = async (): Promise<true | undefined> => (s.proc === proc ? undefined : true)
    if (mode === 'fast') {
      await waitFor('fast shutdown', this.waitOpts(s, deadline), exited)
      return
    }
    try {
      await waitFor(
        'immediate shutdown',
        { node: s.name, timeoutMs: Math.min(remaining(deadline), 10_000) },
        exited,
      )
    } catch {
      signalProcess(pid, 'SIGKILL')
      await waitFor('exit after SIGKILL', { node: s.name, timeoutMs: 5_000 }, exited)
    }
  }
}

/**
 * A wait for all `expected` standbys to be quorum candidates of synchronous_standby_names (each
 * one streaming with a flush position reported; 'async' until then), so pg_stat_replication is
 * settled when the caller looks. None for 0.
 */
function quorumOf(expected: number): SynchronousWait | undefined {
  return expected === 0
    ? undefined
    : { count: expected, what: `${expected} standby(s) in the synchronous quorum` }
}

// --- clean-up at process exit ---------------------------------------------------------------

const live = new Set<LocalCluster>()
let exitHandlerInstalled = false

/** One 'exit' listener for every cluster: kills servers a test suite forgot to destroy(). */
function installExitHandler(): void {
  if (exitHandlerInstalled) return
  exitHandlerInstalled = true
  process.on('exit', () => {
    for (const cluster of live) cluster.killSync()
  })
}
