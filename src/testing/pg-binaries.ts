import { execFile } from 'node:child_process'
import { access, constants, readdir } from 'node:fs/promises'
import { delimiter, join } from 'node:path'
import { PostgresBinariesNotFoundError } from './errors.js'

/** Server programs the local backend runs; a directory must hold all of them. */
export const REQUIRED_BINARIES = ['initdb', 'pg_ctl', 'postgres', 'pg_basebackup', 'pg_rewind'] as const

export type PgBinaryName = (typeof REQUIRED_BINARIES)[number]

export interface PgBinaries {
  /** The directory all binaries were found in. */
  readonly binDir: string
  readonly paths: Readonly<Record<PgBinaryName, string>>
}

let cached: Promise<PgBinaries> | undefined

/**
 * Finds a directory holding every server binary, in this order: `$PGSPLIT_PG_BINDIR`,
 * `/usr/lib/postgresql/<version>/bin` (highest version first), `pg_config --bindir`, `$PATH`.
 * Debian keeps the server programs out of `$PATH`, hence the explicit search. The answer is
 * cached for the process; a failure is not, so installing PostgreSQL mid-run works.
 */
export function findPgBinaries(): Promise<PgBinaries> {
  cached ??= search().catch((err: unknown) => {
    cached = undefined
    throw err
  })
  return cached
}

async function search(): Promise<PgBinaries> {
  const candidates: string[] = []
  const fromEnv = process.env.PGSPLIT_PG_BINDIR
  if (fromEnv) candidates.push(fromEnv)
  candidates.push(...(await debianBinDirs()))
  const pgConfigDir = await pgConfigBinDir()
  if (pgConfigDir) candidates.push(pgConfigDir)
  candidates.push(...(process.env.PATH ?? '').split(delimiter).filter(Boolean))

  const searched = [...new Set(candidates)]
  let fewestMissing: PgBinaryName[] = [...REQUIRED_BINARIES]
  for (const dir of searched) {
    const missing: PgBinaryName[] = []
    for (const name of REQUIRED_BINARIES) {
      if (!(await isExecutable(join(dir, name)))) missing.push(name)
    }
    if (missing.length === 0) {
      const paths = Object.fromEntries(REQUIRED_BINARIES.map((n) => [n, join(dir, n)])) as Record<
        PgBinaryName,
        string
      >
      return { binDir: dir, paths }
    }
    // A directory with some of them (say, only the client tools) tells the user what is still missing.
    if (missing.length < fewestMissing.length) fewestMissing = missing
  }
  throw new PostgresBinariesNotFoundError(fewestMissing, searched)
}

async function debianBinDirs(): Promise<string[]> {
  const root = '/usr/lib/postgresql'
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

async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK)
    return true
  } catch {
    return false
  }
}
