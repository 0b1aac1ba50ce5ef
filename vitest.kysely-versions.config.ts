import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

// The Kysely dialect's tests against each supported Kysely: 0.27 and 0.28 (installed as the
// aliases `kysely-027` and `kysely-028`) and 0.29 (`kysely`). Each project maps `'kysely'` and
// the subpaths the dialect and the tests import to one version, for src/ and test/ alike.
// Run: npx vitest run -c vitest.kysely-versions.config.ts

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url))

function aliases(pkg: 'kysely-027' | 'kysely-028') {
  return [
    {
      find: /^kysely\/helpers\/postgres$/,
      replacement: here(`node_modules/${pkg}/dist/esm/helpers/postgres.js`),
    },
    // 0.27 and 0.28 export Migrator from 'kysely' itself.
    { find: /^kysely\/migration$/, replacement: here('test/support/kysely-migration-shim.ts') },
    { find: /^kysely$/, replacement: here(`node_modules/${pkg}/dist/esm/index.js`) },
  ]
}

const shared = {
  // Each project starts a real cluster: one file at a time on this machine's two cores.
  testTimeout: 60_000,
  hookTimeout: 120_000,
  teardownTimeout: 60_000,
}

export default defineConfig({
  test: {
    maxWorkers: 1,
    fileParallelism: false,
    projects: [
      {
        resolve: { alias: aliases('kysely-027') },
        test: { ...shared, name: 'kysely-0.27', include: ['test/integration/kysely.test.ts'] },
      },
      {
        resolve: { alias: aliases('kysely-028') },
        test: { ...shared, name: 'kysely-0.28', include: ['test/integration/kysely.test.ts'] },
      },
      {
        test: {
          ...shared,
          name: 'kysely-0.29',
          include: ['test/integration/kysely.test.ts', 'test/integration/kysely-abort.test.ts'],
        },
      },
    ],
  },
})
