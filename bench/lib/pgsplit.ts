/**
 * The pgsplit under test: the built package (dist/, what users import) when it is there and
 * newer than every source file, else the TypeScript sources through tsx. The difference matters:
 * tsx compiles with esbuild's keepNames, which wraps every named closure in a defineProperty
 * call; that alone added ~5 µs of client CPU per query here, more than pgsplit's own routing.
 * `scripts/bench.sh` builds dist/ first. Set PGSPLIT_BENCH_SOURCE=src (or =dist) to force one.
 */
import { existsSync, readdirSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type * as Core from '../../src/index.js'
import type * as KyselyEntry from '../../src/kysely/index.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')

function newestMtime(dir: string): number {
  let newest = 0
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) newest = Math.max(newest, newestMtime(path))
    else if (entry.name.endsWith('.ts')) newest = Math.max(newest, statSync(path).mtimeMs)
  }
  return newest
}

function distIsFresh(): { fresh: boolean; why: string } {
  if (process.env.PGSPLIT_BENCH_SOURCE === 'src') return { fresh: false, why: 'PGSPLIT_BENCH_SOURCE=src' }
  const entries = [join(root, 'dist', 'index.js'), join(root, 'dist', 'kysely', 'index.js')]
  if (!entries.every((e) => existsSync(e))) return { fresh: false, why: 'dist/ not built' }
  const built = Math.min(...entries.map((e) => statSync(e).mtimeMs))
  if (process.env.PGSPLIT_BENCH_SOURCE === 'dist') return { fresh: true, why: 'PGSPLIT_BENCH_SOURCE=dist' }
  if (built < newestMtime(join(root, 'src'))) return { fresh: false, why: 'dist/ older than src/' }
  return { fresh: true, why: 'dist/ built from the current sources' }
}

const choice = distIsFresh()

/** Which build the benchmarks ran, for results.json. */
export const pgsplitBuild: { source: 'dist' | 'src'; why: string } = {
  source: choice.fresh ? 'dist' : 'src',
  why: choice.fresh ? choice.why : `${choice.why}: TypeScript sources through tsx (slower than the package)`,
}

const core: typeof Core = choice.fresh
  ? ((await import(join(root, 'dist', 'index.js'))) as typeof Core)
  : await import('../../src/index.js')

export const createCluster: typeof Core.createCluster = core.createCluster
export type Cluster = Core.Cluster

/** The Kysely entry point, loaded on first use (the Kysely benchmark only). */
export async function loadKyselyEntry(): Promise<typeof KyselyEntry> {
  return choice.fresh
    ? ((await import(join(root, 'dist', 'kysely', 'index.js'))) as typeof KyselyEntry)
    : await import('../../src/kysely/index.js')
}
