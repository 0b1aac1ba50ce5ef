/**
 * The `docker` backend of `startCluster`: every node is a container of the official postgres
 * image on a network of its own, driven with testcontainers.
 *
 * Design: a node's container lives as long as the cluster. Its main process is a tiny sleep loop
 * under Docker's init (which reaps orphans), and PostgreSQL runs inside it under `pg_ctl`,
 * started and stopped with `docker exec`. So kill -9, stop, start, pg_basebackup and pg_rewind
 * all act on a data directory that stays in place, and the host port Docker mapped at creation
 * never changes (a restarted container may get another one), so the URLs handed out stay valid.
 *
 * The image: the `image` option, else `$PGSPLIT_DOCKER_IMAGE`, else `postgres:16-alpine`. It must
 * follow the official postgres image's contract (server binaries on PATH, a `postgres` user);
 * scripts/docker-images.sh builds such an image from Debian's packages where no registry answers.
 *
 * testcontainers is an optional peer dependency: it is imported on first use only.
 */

import { existsSync, readFileSync } from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import { homedir } from 'node:os'
import { join } from 'node:path'
import type { StartedNetwork, StartedTestContainer } from 'testcontainers'
import { ClusterHandle, type HandleNode, initialized } from './cluster-handle.js'
import { TestClusterError } from './errors.js'
import { resolveOptions } from './local-backend.js'
import { createDatabase, ensureSlot, setUpstream, waitAccepting, waitStreaming } from './node-operations.js'
import { lastLines } from './process-utils.js'
import {
  conninfo,
  NODE_CONF_FILE,
  nodeSettings,
  pgpassLine,
  sharedSettings,
  withAutoSettings,
} from './server-config.js'
import type { StartClusterOptions, TestCluster, TestNode } from './types.js'
import { remaining, waitFor } from './wait.js'

type Testcontainers = typeof import('testcontainers')

const DEFAULT_IMAGE = 'postgres:16-alpine'
/** testcontainers' own default; `RYUK_CONTAINER_IMAGE` overrides it, as in testcontainers. */
const DEFAULT_RYUK_IMAGE = 'testcontainers/ryuk:0.14.0'
/** Bound of pulling one image while checking (the first pull of postgres:16-alpine takes ~10-60 s). */
const PULL_TIMEOUT_MS = 300_000
/** Port of every server inside its container; each node has its own container, hence no clash. */
const PG_PORT = 5432
/** Owned by the postgres OS user; under /var/lib/postgresql, which the image gives to that user. */
const BASE = '/var/lib/postgresql/pgsplit'
const DATA = `${BASE}/data`
const LOG = `${BASE}/server.log`
const PASSFILE = `${BASE}/pgpass`
/** Not in the data directory: pg_basebackup and pg_rewind must not copy a socket file. */
const SOCKET_DIR = '/tmp'
/** The container's main process: sleeps, exits at once on `docker stop`. */
const KEEPALIVE = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"
const INSTALL_HINT = 'npm i -D testcontainers'

// --- is Docker there? ---------------------------------------------------------------------------

interface Endpoint {
  readonly label: string
  readonly socketPath?: string
  readonly host?: string
  readonly port?: number
  readonly tls?: boolean
}

/** Where a Docker-compatible engine may listen, as testcontainers would look (most common first). */
function engineEndpoints(): Endpoint[] | string {
  const dockerHost = process.env.DOCKER_HOST?.trim()
  if (dockerHost) {
    if (dockerHost.startsWith('unix://')) {
      return [{ label: dockerHost, socketPath: dockerHost.slice('unix://'.length) }]
    }
    if (dockerHost.startsWith('npipe://')) {
      return [{ label: dockerHost, socketPath: dockerHost.slice('npipe://'.length).replaceAll('/', '\\') }]
    }
    if (dockerHost.startsWith('tcp://')) {
      try {
        const u = new URL(dockerHost.replace(/^tcp:/, 'http:'))
        const tls = Boolean(process.env.DOCKER_TLS_VERIFY)
        return [{ label: dockerHost, host: u.hostname, port: Number(u.port || (tls ? 2376 : 2375)), tls }]
      } catch {
        return `DOCKER_HOST=${dockerHost} is not a valid URL`
      }
    }
    return `DOCKER_HOST=${dockerHost} uses a scheme this check does not support (unix://, tcp://, npipe://)`
  }
  const uid = typeof process.getuid === 'function' ? process.getuid() : undefined
  const candidates = [
    '/var/run/docker.sock',
    join(homedir(), '.docker', 'run', 'docker.sock'),
    join(homedir(), '.docker', 'desktop', 'docker.sock'),
    process.env.XDG_RUNTIME_DIR ? join(process.env.XDG_RUNTIME_DIR, 'docker.sock') : '',
    uid !== undefined ? `/run/user/${uid}/docker.sock` : '',
    process.env.XDG_RUNTIME_DIR ? join(process.env.XDG_RUNTIME_DIR, 'podman', 'podman.sock') : '',
  ]
  const found = [...new Set(candidates)].filter((p) => p !== '' && existsSync(p))
  if (found.length === 0) {
    return 'no Docker engine: DOCKER_HOST is unset and no socket exists (/var/run/docker.sock, ~/.docker/run/docker.sock, $XDG_RUNTIME_DIR/docker.sock)'
  }
  return found.map((socketPath) => ({ label: socketPath, socketPath }))
}

/** GET /_ping on one endpoint; true on `200`, false on anything else or after `timeoutMs`. */
function ping(endpoint: Endpoint, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    let done = false
    const finish = (ok: boolean): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      req.destroy()
      resolve(ok)
    }
    const options: https.RequestOptions = {
      method: 'GET',
      path: '/_ping',
      // No keep-alive agent: nothing may outlive the check and hold the event loop open.
      agent: false,
      headers: { Connection: 'close' },
    }
    if (endpoint.socketPath) options.socketPath = endpoint.socketPath
    else {
      options.host = endpoint.host
      options.port = endpoint.port
    }
    if (endpoint.tls) {
      const certDir = process.env.DOCKER_CERT_PATH ?? join(homedir(), '.docker')
      const read = (name: string): Buffer | undefined => {
        try {
          return readFileSync(join(certDir, name))
        } catch {
          return undefined
        }
      }
      options.ca = read('ca.pem')
      options.cert = read('cert.pem')
      options.key = read('key.pem')
    }
    let req: http.ClientRequest
    try {
      req = (endpoint.tls ? https : http).request(options, (res) => {
        res.resume()
        finish(res.statusCode === 200)
      })
    } catch {
      resolve(false)
      return
    }
    req.on('error', () => finish(false))
    const timer = setTimeout(() => finish(false), timeoutMs)
    timer.unref()
    req.end()
  })
}

let loading: Promise<Testcontainers> | undefined

/**
 * Imports testcontainers once. Missing, or unable to load on this Node version (testcontainers
 * 12.1+ needs Node >= 22.22), it fails with an error that says what to install.
 */
function loadTestcontainers(): Promise<Testcontainers> {
  loading ??= import('testcontainers').then(
    (mod: Testcontainers & { default?: Testcontainers }) =>
      // CommonJS seen from ESM: the named exports are usually detected, else they sit on default.
      typeof mod.GenericContainer === 'function' ? mod : (mod.default ?? mod),
    (err: unknown) => {
      loading = undefined
      const code = (err as { code?: unknown } | null)?.code
      const message = err instanceof Error ? err.message : String(err)
      if (
        (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') &&
        message.includes('testcontainers')
      ) {
        throw new TestClusterError(
          `pgsplit/testing: the docker backend needs the testcontainers package, which is not installed. ` +
            `Install it with \`${INSTALL_HINT}\`, or use backend: 'local'.`,
          undefined,
          { cause: err },
        )
      }
      throw new TestClusterError(
        `pgsplit/testing: the testcontainers package failed to load on Node ${process.version}: ${message}. ` +
          `testcontainers 12.1 and later need Node >= 22.22; on older Node install \`${INSTALL_HINT}@^11\`.`,
        undefined,
        { cause: err },
      )
    },
  )
  return loading
}

/** The image of the docker backend: the `image` option, else `$PGSPLIT_DOCKER_IMAGE`, else `postgres:16-alpine`. */
export function dockerImage(image?: string): string {
  return image?.trim() || process.env.PGSPLIT_DOCKER_IMAGE?.trim() || DEFAULT_IMAGE
}

const ryukDisabled = (): boolean => process.env.TESTCONTAINERS_RYUK_DISABLED === 'true'

/** What to do when `image` cannot be had: the ways out, for every message that says so. */
function wayOut(image: string): string {
  return (
    `Use an image this engine has: the \`image\` option or PGSPLIT_DOCKER_IMAGE (currently ${image}; ` +
    `\`bash scripts/docker-images.sh\` builds one from Debian's packages where no registry answers), ` +
    `or backend: 'local'.`
  )
}

/**
 * Whether the engine has `image`, pulling it when it does not (bounded); a reason when it still
 * lacks it. A registry that cannot be reached fails the pull at once ("no such host").
 */
async function imageUnavailableReason(tc: Testcontainers, image: string): Promise<string | undefined> {
  try {
    const client = await tc.getContainerRuntimeClient()
    const name = tc.ImageName.fromString(image)
    if (await client.image.exists(name)) return undefined
    const pulled = await bounded(
      client.image.pull(name).then(
        () => undefined,
        (err: unknown) => (err instanceof Error ? err.message : String(err)),
      ),
      PULL_TIMEOUT_MS,
      `pulling ${image}`,
    ).catch((err: unknown) => (err instanceof Error ? err.message : String(err)))
    if (await client.image.exists(name)) return undefined
    return `image ${image} is not on the Docker engine and cannot be pulled${pulled ? ` (${firstLine(pulled)})` : ''}`
  } catch (err) {
    return `the Docker engine could not be asked for image ${image}: ${firstLine(err instanceof Error ? err.message : String(err))}`
  }
}

/**
 * Why the docker backend cannot run here, or `undefined` when it can: a Docker-compatible engine
 * answers `GET /_ping` within `timeoutMs` (default 1.5 s), testcontainers loads, the engine has
 * the image (`dockerImage(image)`) or can pull it, and it has testcontainers' Ryuk image (or can
 * pull it) unless `TESTCONTAINERS_RYUK_DISABLED=true`.
 *
 * ```ts
 * const reason = await dockerUnavailableReason()
 * describe.skipIf(reason !== undefined)(`docker tests${reason ? ` (skipped: ${reason})` : ''}`, () => {})
 * ```
 */
export async function dockerUnavailableReason(
  timeoutMs = 1_500,
  image?: string,
): Promise<string | undefined> {
  const endpoints = engineEndpoints()
  if (typeof endpoints === 'string') return endpoints
  const answers = await Promise.all(endpoints.map((e) => ping(e, timeoutMs)))
  if (!answers.some(Boolean)) {
    return `no Docker engine answered GET /_ping within ${timeoutMs} ms at ${endpoints.map((e) => e.label).join(', ')}`
  }
  let tc: Testcontainers
  try {
    tc = await loadTestcontainers()
  } catch (err) {
    return err instanceof Error ? err.message : String(err)
  }
  const wanted = dockerImage(image)
  const missing = await imageUnavailableReason(tc, wanted)
  if (missing) return `${missing}. ${wayOut(wanted)}`
  if (!ryukDisabled()) {
    const ryuk = process.env.RYUK_CONTAINER_IMAGE?.trim() || DEFAULT_RYUK_IMAGE
    const noRyuk = await imageUnavailableReason(tc, ryuk)
    if (noRyuk) {
      return (
        `testcontainers starts its Ryuk container (${ryuk}) first, and ${noRyuk.replace(/^image /, 'that image ')}. ` +
        `Set TESTCONTAINERS_RYUK_DISABLED=true (the backend removes its containers and network in destroy()), ` +
        `or use backend: 'local'.`
      )
    }
  }
  return undefined
}

/**
 * True when the docker backend can run `image` (default: `dockerImage()`): see
 * `dockerUnavailableReason`. `startCluster({ backend: 'auto' })` uses it to choose.
 *
 * ```ts
 * const backend = (await dockerAvailable()) ? 'docker' : 'local'
 * ```
 */
export async function dockerAvailable(image?: string): Promise<boolean> {
  return (await dockerUnavailableReason(undefined, image)) === undefined
}

// --- the cluster --------------------------------------------------------------------------------

type ResolvedOptions = ReturnType<typeof resolveOptions> & { readonly image: string }

/** A node: its container; its name is also its hostname and network alias on the cluster network. */
interface DockerNode extends HandleNode {
  readonly container: StartedTestContainer
  /** As last set by the handle's operations (checked with `pg_ctl status` where it matters). */
  running: boolean
}

/**
 * Starts a primary and `opts.replicas` streaming standbys (default 2) as containers of
 * `dockerImage(opts.image)` and returns the same handle as the local backend. Needs a Docker
 * engine, the image (present or pullable) and the testcontainers package
 * (`npm i -D testcontainers`); without them it throws a TestClusterError that says which and
 * what to do.
 *
 * ```ts
 * const pg = await startDockerCluster({ replicas: 2 })
 * const db = createCluster({ primary: pg.primaryUrl, replicas: pg.replicaUrls })
 * await pg.kill(0); await pg.promote(1); await pg.repoint(2, 1)
 * await pg.destroy()
 * ```
 */
export async function startDockerCluster(opts: StartClusterOptions = {}): Promise<TestCluster> {
  const options: ResolvedOptions = { ...resolveOptions(opts), image: dockerImage(opts.image) }
  const tc = await loadTestcontainers()
  // Asked first: otherwise testcontainers fails later with a raw HTTP 500 from the engine.
  const reason = await dockerUnavailableReason(undefined, options.image)
  if (reason) {
    const hint = reason.includes("backend: 'local'")
      ? ''
      : ". Start a Docker engine (or point DOCKER_HOST at one), or use backend: 'local'"
    throw new TestClusterError(
      `pgsplit/testing: the docker backend cannot run ${options.image} here: ${reason}${hint}`,
    )
  }
  try {
    return await initialized(new DockerCluster(tc, options))
  } catch (err) {
    if (err instanceof TestClusterError) throw err
    throw new TestClusterError(
      `pgsplit/testing: the docker backend failed with image ${options.image}: ${firstLine(
        err instanceof Error ? err.message : String(err),
      )}. ${wayOut(options.image)}`,
      undefined,
      { cause: err },
    )
  }
}

function firstLine(text: string): string {
  const line = text.trim().split('\n')[0] ?? ''
  return line.length > 300 ? `${line.slice(0, 300)}...` : line
}

class DockerCluster extends ClusterHandle<DockerNode, ResolvedOptions> implements TestCluster {
  readonly backend = 'docker' as const
  private network: StartedNetwork | undefined
  /** Containers being created, so destroy() waits for them... */
  private readonly pending = new Set<Promise<StartedTestContainer>>()
  /** ...and removes every container started, set up as a node or not. */
  private readonly containers = new Set<StartedTestContainer>()
  private readonly clusterId = Math.random().toString(36).slice(2, 10)
  /** Whether the nodes' ports are published on 127.0.0.1 (the engine runs on this machine). */
  private loopback: boolean | undefined

  constructor(
    private readonly tc: Testcontainers,
    opts: ResolvedOptions,
  ) {
    super(opts)
  }

  protected isRunning(s: DockerNode): boolean {
    return s.running
  }

  // --- start-up ---------------------------------------------------------------------------------

  async init(): Promise<void> {
    const t0 = Date.now()
    this.network = await bounded(
      new this.tc.Network().start(),
      Math.max(this.opts.timeoutMs, 120_000),
      'creating the Docker network',
    )
    // Containers are cheap sleeping shells: create them all at once, the servers come after.
    const names = Array.from({ length: 1 + this.opts.replicas }, (_, i) => `node${i}`)
    const containers = await Promise.all(names.map((name) => this.createContainer(name)))
    const [primary, ...standbys] = containers.map((c, i) =>
      this.addState(names[i]!, c, i === 0 ? 'primary' : 'standby', i === 0 ? undefined : 0),
    )
    await this.initdb(primary!)
    await this.startNode(primary!, this.deadline())
    if (this.opts.database !== 'postgres') {
      await createDatabase(this.at(primary!), this.opts.database, this.opts.timeoutMs)
    }
    this.opts.log(
      `pgsplit/testing: primary ${primary!.name} up on ${primary!.host}:${primary!.port} (${Date.now() - t0} ms)`,
    )
    await Promise.all(standbys.map((s) => this.cloneAndStart(s, primary!, this.deadline())))
    if (this.opts.syncCount > 0) {
      const { syncCount } = this.opts
      await this.updateSynchronousNames(primary!, {
        count: syncCount,
        what: `${syncCount} synchronous standby(s)`,
      })
    }
    this.opts.log(
      `pgsplit/testing: docker cluster of 1 primary + ${standbys.length} standbys up in ${Date.now() - t0} ms (${this.opts.image})`,
    )
  }

  private addState(
    name: string,
    container: StartedTestContainer,
    kind: DockerNode['kind'],
    upstream: number | undefined,
  ): DockerNode {
    // Published on 127.0.0.1 (see createContainer): reach it there, whatever testcontainers
    // takes the host to be.
    const rawHost = this.loopback ? '127.0.0.1' : container.getHost()
    const s: DockerNode = {
      index: this.states.length,
      name,
      container,
      // 'localhost' may resolve to ::1 first while Docker published on IPv4 only.
      host: rawHost === 'localhost' ? '127.0.0.1' : rawHost,
      port: container.getMappedPort(PG_PORT),
      kind,
      upstream,
      running: false,
    }
    this.states.push(s)
    return s
  }

  /** A node's container: sleeping, on the cluster's network as `name`, 5432 published. */
  private async createContainer(name: string): Promise<StartedTestContainer> {
    const tc = this.tc
    const network = this.network
    if (!network || this.destroyPromise)
      throw new TestClusterError('pgsplit/testing: the cluster was destroyed')
    this.loopback ??= await publishesOnLoopback(tc)
    const local = this.loopback
    class PgNodeContainer extends tc.GenericContainer {
      constructor(image: string) {
        super(image)
        // Docker's init as PID 1 reaps the postmaster we kill -9, so its PID really goes away.
        this.hostConfig.Init = true
      }

      /** Publishes on 127.0.0.1 only when the engine is on this machine: no test server on the LAN. */
      onLoopback(): this {
        if (local)
          this.hostConfig.PortBindings = { [`${PG_PORT}/tcp`]: [{ HostIp: '127.0.0.1', HostPort: '0' }] }
        return this
      }
    }
    const starting = new PgNodeContainer(this.opts.image)
      .withNetwork(network)
      .withNetworkAliases(name)
      .withHostname(name)
      .withLabels({ 'org.pgsplit.cluster': this.clusterId, 'org.pgsplit.node': name })
      .withEntrypoint(['sh', '-c', KEEPALIVE])
      .withCommand([])
      .withExposedPorts(PG_PORT)
      .onLoopback()
      // PostgreSQL's dynamic shared memory lives in /dev/shm; Docker's default 64 MB is tight.
      .withSharedMemorySize(256 * 1024 * 1024)
      .withWaitStrategy(tc.Wait.forSuccessfulCommand('true'))
      .withStartupTimeout(this.opts.timeoutMs)
      .start()
      .then((c) => {
        this.containers.add(c)
        return c
      })
    this.pending.add(starting)
    try {
      // The first run pulls the image: give it more than one operation's bound.
      const container = await bounded(
        starting,
        Math.max(this.opts.timeoutMs, 300_000),
        `${name}: starting a container of ${this.opts.image}`,
      )
      if (this.destroyPromise) {
        await container.stop({ timeout: 0 }).catch(() => {})
        throw new TestClusterError('pgsplit/testing: the cluster was destroyed', name)
      }
      await this.exec(
        { name, container },
        'preparing the data directory',
        `mkdir -p ${BASE} && chown postgres:postgres ${BASE} && chmod 700 ${BASE}`,
        {},
        'root',
      )
      await this.writeFile({ name, container }, PASSFILE, pgpassLine(this.opts.user, this.opts.password))
      return container
    } finally {
      this.pending.delete(starting)
    }
  }

  private async initdb(s: DockerNode): Promise<void> {
    await this.exec(
      s,
      'initdb',
      `printf '%s\\n' "$PGSPLIT_PASSWORD" > ${BASE}/pwfile
trap 'rm -f ${BASE}/pwfile' EXIT
rm -rf "$PGDATA"
initdb -D "$PGDATA" -U "$PGSPLIT_USER" --pwfile=${BASE}/pwfile --auth-local=trust --auth-host=scram-sha-256 \\
  --data-checksums --encoding=UTF8 --locale=C --no-sync >/dev/null
printf '%s' "$PGSPLIT_CONF" >> "$PGDATA/postgresql.conf"
printf '%s' "$PGSPLIT_HBA" > "$PGDATA/pg_hba.conf"`,
      {
        PGSPLIT_PASSWORD: this.opts.password,
        PGSPLIT_USER: this.opts.user,
        // Other containers connect over the cluster network: listen everywhere inside the container.
        PGSPLIT_CONF: sharedSettings({ listen_addresses: '*', ...this.opts.settings }),
        PGSPLIT_HBA: DOCKER_HBA,
      },
    )
  }

  /** pg_basebackup of `from` into `s`'s container, then starts `s` as its standby. */
  private async cloneAndStart(s: DockerNode, from: DockerNode, deadline: number): Promise<void> {
    const t0 = Date.now()
    await ensureSlot(this.at(from), s.name, deadline)
    await this.exec(
      s,
      `pg_basebackup from ${from.name}`,
      `rm -rf "$PGDATA"
pg_basebackup -D "$PGDATA" -d "$PGSPLIT_SOURCE" -S "$PGSPLIT_SLOT" -X stream --checkpoint=fast --no-sync --no-password`,
      { PGSPLIT_SOURCE: this.conninfoFor(from, s.name), PGSPLIT_SLOT: s.name },
      'postgres',
      remaining(deadline),
    )
    await this.configureStandby(s, from)
    await this.startNode(s, deadline)
    this.opts.log(
      `pgsplit/testing: standby ${s.name} streaming from ${from.name} on ${s.host}:${s.port} (${Date.now() - t0} ms)`,
    )
  }

  // --- operations -------------------------------------------------------------------------------

  async kill(i: number): Promise<void> {
    const s = this.node(i)
    const deadline = this.deadline()
    const out = await this.exec(
      s,
      'kill -9 of the postmaster',
      `f="$PGDATA/postmaster.pid"
[ -f "$f" ] || { echo none; exit 0; }
pid=$(head -n 1 "$f")
if kill -9 "$pid" 2>/dev/null; then echo "killed $pid"; else echo none; fi`,
    )
    s.running = false
    if (out.trim() === 'none') return
    // The backends outlive the postmaster for a moment; a restart must not race them.
    await waitFor('exit of every server process after SIGKILL', this.waitOpts(s, deadline), async (note) => {
      const alive = (await this.exec(s, 'listing server processes', LIVE_SERVER_PROCESS)).trim()
      if (alive === 'gone') return true
      note(`server process ${alive.replace('alive ', '')} still running`)
      return undefined
    })
    this.opts.log(`pgsplit/testing: ${s.name} killed (${out.trim()})`)
  }

  async addReplica(): Promise<TestNode> {
    const primary = this.primaryForNewReplica()
    const name = `node${this.states.length}`
    const container = await this.createContainer(name)
    const s = this.addState(name, container, 'standby', primary.index)
    try {
      await this.cloneAndStart(s, primary, this.deadline())
    } catch (err) {
      // Leave no half-made node in `nodes`.
      this.states.splice(this.states.indexOf(s), 1)
      await container.stop({ timeout: 0 }).catch(() => {})
      throw err
    }
    if (this.opts.syncCount > 0) await this.updateSynchronousNames(primary)
    return this.snapshot(s)
  }

  protected async doDestroy(): Promise<void> {
    // Containers still being created are stopped as soon as they exist (createContainer checks).
    await Promise.allSettled([...this.pending])
    // Removing a container removes its data directory with it: no server survives, no file stays.
    await Promise.allSettled([...this.containers].map((c) => c.stop({ timeout: 0 })))
    for (const s of this.states) s.running = false
    if (this.network) await this.network.stop().catch(() => {})
    this.opts.log('pgsplit/testing: docker cluster destroyed (containers and network removed)')
  }

  // --- building blocks --------------------------------------------------------------------------

  protected async logDetails(s: DockerNode): Promise<string> {
    const tail = await this.exec(s, 'reading the server log', `tail -n 12 ${LOG} 2>/dev/null || true`).catch(
      () => '',
    )
    return tail.trim() ? `last lines of ${s.name}:${LOG}:\n${lastLines(tail, 12)}` : ''
  }

  /** Connection string from a tool or standby in another container to `up` (password in the passfile). */
  private conninfoFor(up: DockerNode, applicationName: string): string {
    return conninfo({
      host: up.name,
      port: PG_PORT,
      user: this.opts.user,
      passfile: PASSFILE,
      // Names the standby in pg_stat_replication and in synchronous_standby_names.
      application_name: applicationName,
      dbname: 'postgres',
    })
  }

  /**
   * Runs a shell script in `s`'s container (as the postgres OS user by default), bounded in
   * time; a non-zero exit becomes a TestClusterError carrying the end of its output.
   */
  private async exec(
    s: Pick<DockerNode, 'name' | 'container'>,
    what: string,
    script: string,
    env: Record<string, string> = {},
    user: 'postgres' | 'root' = 'postgres',
    timeoutMs = this.opts.timeoutMs,
  ): Promise<string> {
    const result = await bounded(
      s.container.exec(['sh', '-c', `set -e\n${script}`], {
        user,
        // Our own paths, whatever the image sets (PGDATA moved in the postgres 18 images).
        env: { PGDATA: DATA, PGPASSFILE: PASSFILE, ...env },
      }),
      timeoutMs,
      `${s.name}: ${what}`,
    )
    if (result.exitCode !== 0) {
      throw new TestClusterError(
        `pgsplit/testing: ${s.name}: ${what} failed (exit ${result.exitCode}):\n${lastLines(result.output, 20)}`,
        s.name,
      )
    }
    return result.stdout
  }

  /** Writes a file the server (postgres user) owns, mode 600. Content passes through the environment. */
  private async writeFile(
    s: Pick<DockerNode, 'name' | 'container'>,
    path: string,
    content: string,
  ): Promise<void> {
    await this.exec(
      s,
      `writing ${path}`,
      `printf '%s' "$PGSPLIT_CONTENT" > "$PGSPLIT_PATH"
chmod 600 "$PGSPLIT_PATH"`,
      { PGSPLIT_CONTENT: content, PGSPLIT_PATH: path },
    )
  }

  /** standby.signal plus primary_conninfo / primary_slot_name for streaming from `up`. */
  protected async configureStandby(s: DockerNode, up: DockerNode): Promise<void> {
    const autoConf = `${DATA}/postgresql.auto.conf`
    const current = await this.exec(
      s,
      'reading postgresql.auto.conf',
      `cat "${autoConf}" 2>/dev/null || true`,
    )
    await this.writeFile(
      s,
      autoConf,
      withAutoSettings(current, {
        primary_conninfo: this.conninfoFor(up, s.name),
        primary_slot_name: s.name,
      }),
    )
    await this.writeFile(s, `${DATA}/standby.signal`, '')
    s.kind = 'standby'
    s.upstream = up.index
  }

  /** Whether a live postmaster runs in `s`'s container, asked there (`live`, as for pg_ctl status). */
  private async serverIsLive(s: DockerNode): Promise<boolean> {
    const out = await this.exec(
      s,
      'pg_ctl status',
      `${SERVER_STATE_FNS}
if live; then echo yes; else echo no; fi`,
    )
    return out.trim() === 'yes'
  }

  /**
   * Starts `s` with `pg_ctl`; returns when it accepts connections from the host in the expected
   * role and, for a standby whose upstream runs, when it streams from it.
   */
  protected async startNode(s: DockerNode, deadline: number): Promise<void> {
    if (s.running && (await this.serverIsLive(s))) return
    const t0 = Date.now()
    await this.exec(
      s,
      'pg_ctl start',
      `${SERVER_STATE_FNS}
clear_stale_locks
printf '%s' "$PGSPLIT_NODE_CONF" > "$PGDATA/${NODE_CONF_FILE}"
if ! pg_ctl -D "$PGDATA" -l ${LOG} -w -t "$PGSPLIT_WAIT_S" start >/dev/null 2>&1; then
  echo "pg_ctl start failed; last lines of ${LOG}:" >&2
  tail -n 20 ${LOG} >&2
  exit 1
fi`,
      {
        PGSPLIT_NODE_CONF: nodeSettings({ name: s.name, port: PG_PORT, socketDir: SOCKET_DIR }),
        PGSPLIT_WAIT_S: String(Math.max(1, Math.ceil(remaining(deadline) / 1000))),
      },
      'postgres',
      remaining(deadline) + 5_000,
    )
    s.running = true
    // Through the mapped port, as a test would connect, and in the role the node should have.
    await waitAccepting(this.at(s), s.kind, deadline)
    this.opts.log(`pgsplit/testing: ${s.name} accepts connections (${s.kind}, ${Date.now() - t0} ms)`)
    const up = s.upstream === undefined ? undefined : this.states[s.upstream]
    if (s.kind === 'standby' && up?.running) await this.waitStreaming(s, up, deadline)
  }

  protected async streamFrom(s: DockerNode, up: DockerNode, deadline: number): Promise<void> {
    await setUpstream(this.at(s), this.conninfoFor(up, s.name), s.name, deadline)
    await this.waitStreaming(s, up, deadline)
  }

  /** pg_rewind (PG 13+) runs crash recovery itself first when the node was killed, not stopped. */
  protected async rewind(s: DockerNode, up: DockerNode, deadline: number): Promise<boolean> {
    const out = await this.exec(
      s,
      `pg_rewind from ${up.name}`,
      `${SERVER_STATE_FNS}
clear_stale_locks
pg_rewind --target-pgdata="$PGDATA" --source-server="$PGSPLIT_SOURCE" --no-sync 2>&1
# Slots of its time as a primary would pin WAL on the standby forever; pg_rewind keeps them.
rm -rf "$PGDATA"/pg_replslot/*`,
      { PGSPLIT_SOURCE: this.conninfoFor(up, s.name) },
      'postgres',
      remaining(deadline),
    )
    return !/no rewind required/i.test(out)
  }

  /**
   * Waits until `s` streams from `up`: its WAL receiver is streaming, connected to `up` and on
   * `up`'s current timeline. (pg_stat_replication on the upstream can show 'streaming' for a
   * standby that cannot follow; the receiver's side is what counts.)
   */
  private async waitStreaming(s: DockerNode, up: DockerNode, deadline: number): Promise<void> {
    await waitStreaming(this.at(s), this.at(up), deadline, {
      what: `streaming from ${up.name}`,
      // The standbys reach their upstream by its name on the cluster network.
      upstream: { column: 'sender_host', value: up.name, label: 'sender' },
      stopIf: () => (s.running ? undefined : 'server is not running'),
    })
  }

  /** Fast shutdown (sessions ended, shutdown checkpoint); returns when the server is gone. */
  protected async stopNode(s: DockerNode, deadline: number): Promise<void> {
    await this.exec(
      s,
      'pg_ctl stop -m fast',
      `${SERVER_STATE_FNS}
if ! live; then clear_stale_locks; exit 0; fi
pg_ctl -D "$PGDATA" -m fast -w -t "$PGSPLIT_WAIT_S" stop >/dev/null`,
      { PGSPLIT_WAIT_S: String(Math.max(1, Math.ceil(remaining(deadline) / 1000))) },
      'postgres',
      remaining(deadline) + 5_000,
    )
    s.running = false
  }
}

/**
 * pg_hba.conf of every node: trust over the Unix socket (inside the container only), SCRAM
 * passwords over TCP from anywhere (the cluster network and the host's mapped port).
 */
const DOCKER_HBA = [
  '# pgsplit/testing (docker)',
  'local   all           all          trust',
  'local   replication   all          trust',
  'host    all           all   all    scram-sha-256',
  'host    replication   all   all    scram-sha-256',
  '',
].join('\n')

/**
 * Shell functions on the lock files. `pg_ctl status` and the server take a lock file's PID as
 * alive when `kill -0` succeeds, which is also true of a zombie (no init to reap it) and of a
 * reused PID (PIDs are small in a container): look at /proc instead.
 */
const SERVER_STATE_FNS = `stale() {
  pid=$(head -n 1 "$1" 2>/dev/null || true)
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
  comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
  [ -z "$pid" ] || [ -z "$state" ] || [ "$state" = Z ] || [ "$comm" != postgres ]
}
live() { [ -f "$PGDATA/postmaster.pid" ] && ! stale "$PGDATA/postmaster.pid"; }
# After a kill -9 the lock files stay, and the server (pg_rewind's single-user run too) takes a
# lock whose PID exists as held.
clear_stale_locks() {
  for f in "$PGDATA/postmaster.pid" "${SOCKET_DIR}/.s.PGSQL.${PG_PORT}.lock"; do
    if [ -f "$f" ] && stale "$f"; then rm -f "$f"; fi
  done
}`

/** Prints `alive PID` for a server process still running in the container (zombies do not count), else `gone`. */
const LIVE_SERVER_PROCESS = `for d in /proc/[0-9]*; do
  [ "$(cat "$d/comm" 2>/dev/null || true)" = postgres ] || continue
  state=$(awk '{print $3}' "$d/stat" 2>/dev/null || true)
  if [ -n "$state" ] && [ "$state" != Z ]; then echo "alive \${d#/proc/}"; exit 0; fi
done
echo gone`

/** True when the engine runs on this machine, so publishing on 127.0.0.1 reaches the host. */
async function publishesOnLoopback(tc: Testcontainers): Promise<boolean> {
  try {
    const { host, hostIps } = (await tc.getContainerRuntimeClient()).info.containerRuntime
    const loopbackHost = host === 'localhost' || host.startsWith('127.') || host === '::1'
    if (loopbackHost && hostIps.some((ip) => ip.family === 4 && ip.address.startsWith('127.'))) return true
  } catch {
    return false
  }
  // Inside a container testcontainers takes the bridge gateway (172.17.0.1) for the host, and
  // ports published on 0.0.0.0 would reach the LAN. A daemon we can see in this process
  // namespace, on its local socket, publishes on our loopback too.
  return engineRunsHere()
}

/** Whether the engine is a `dockerd` of this machine (its PID file names a live dockerd) reached over its Unix socket. */
function engineRunsHere(): boolean {
  const dockerHost = process.env.DOCKER_HOST?.trim()
  if (dockerHost && !dockerHost.startsWith('unix://')) return false
  try {
    const pid = Number(readFileSync('/var/run/docker.pid', 'utf8').trim())
    return pid > 0 && readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'dockerd'
  } catch {
    return false
  }
}

/** `promise`, or a TestClusterError after `ms` (the work itself cannot be cancelled). */
async function bounded<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new TestClusterError(`pgsplit/testing: ${what} did not finish within ${ms} ms`)),
      ms,
    )
    timer.unref()
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}
