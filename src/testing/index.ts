/**
 * `pgsplit/testing`: real PostgreSQL streaming-replication clusters for test suites.
 *
 * ```ts
 * import { startCluster } from 'pgsplit/testing'
 *
 * const pg = await startCluster({ replicas: 2 })
 * // pg.primaryUrl, pg.replicaUrls, pg.nodes
 * await pg.kill(0)
 * await pg.promote(1)
 * await pg.repoint(2, 1)
 * await pg.rejoin(0, 1)
 * await pg.destroy()
 * ```
 */
import { startLocalCluster } from './local-backend.js'
import type { PatroniClusterOptions, PatroniTestCluster } from './patroni-backend.js'
import type { StartClusterOptions, TestCluster } from './types.js'

export { PostgresBinariesNotFoundError, TestClusterError } from './errors.js'
export type { FaultMode, FaultProxy, FaultProxyOptions } from './fault-proxy.js'
export { startFaultProxy } from './fault-proxy.js'
export type {
  PatroniClusterOptions,
  PatroniRole,
  PatroniTestCluster,
  PatroniTestNode,
} from './patroni-backend.js'
export { INSTALL_PATRONI_COMMAND } from './patroni-backend.js'
export type { Backend, StartClusterOptions, TestCluster, TestNode, TestNodeRole } from './types.js'

/**
 * Starts a primary and `replicas` streaming standbys (default 2) and returns a handle that
 * kills, stops, starts, promotes, re-points and rejoins nodes, each call returning once the
 * cluster really is in the new state. Call `destroy()` when done (e.g. in `afterAll`).
 *
 * `backend`: `'local'` runs the system's PostgreSQL server binaries as plain processes on
 * 127.0.0.1; `'docker'` runs containers (testcontainers); `'auto'` (default) takes Docker when
 * an engine answers and has (or can pull) the image, else local; `'patroni'` runs etcd and
 * Patroni members (Debian's `patroni` and `etcd-server`), with `switchover`, `failover`,
 * `killManager` and `freeze` on the handle and real automatic failover.
 *
 * ```ts
 * const pg = await startCluster({ replicas: 2, synchronous: 1, backend: 'local' })
 * const db = createCluster({ primary: pg.primaryUrl, replicas: pg.replicaUrls })
 * afterAll(() => pg.destroy())
 * ```
 */
export function startCluster(opts: PatroniClusterOptions): Promise<PatroniTestCluster>
export function startCluster(opts?: StartClusterOptions): Promise<TestCluster>
export async function startCluster(
  opts: StartClusterOptions | PatroniClusterOptions = {},
): Promise<TestCluster | PatroniTestCluster> {
  if (opts.backend === 'patroni') {
    const { startPatroniCluster } = await import('./patroni-backend.js')
    return startPatroniCluster(opts)
  }
  const backend = opts.backend ?? 'auto'
  switch (backend) {
    case 'local':
      return startLocalCluster(opts)
    case 'docker': {
      const { startDockerCluster } = await import('./docker-backend.js')
      return startDockerCluster(opts)
    }
    case 'auto': {
      const docker = await loadDockerBackend()
      // Not only an engine: the image (and Ryuk) must be there or pullable, else local.
      const reason = docker
        ? await docker.dockerUnavailableReason(undefined, opts.image)
        : 'the docker backend did not load'
      if (reason === undefined) return docker!.startDockerCluster(opts)
      opts.log?.(`pgsplit/testing: using the local backend: ${reason}`)
      return startLocalCluster(opts)
    }
    default:
      throw new TypeError(
        `pgsplit/testing: unknown backend ${JSON.stringify(backend)} (use 'auto', 'local', 'docker' or 'patroni')`,
      )
  }
}

type DockerBackend = typeof import('./docker-backend.js')

/**
 * The docker backend module, or undefined when it cannot load (testcontainers is an optional
 * dependency: users without it still get the local backend under 'auto').
 */
async function loadDockerBackend(): Promise<DockerBackend | undefined> {
  try {
    return await import('./docker-backend.js')
  } catch {
    return undefined
  }
}
