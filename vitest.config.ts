import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

const src = (path: string) => fileURLToPath(new URL(`./src/${path}`, import.meta.url))

export default defineConfig({
  // The examples import the package by name, as a user would: in this repository that is the source
  // (the same mapping as tsconfig.json's paths, which tsc and tsx read).
  resolve: {
    alias: [
      { find: /^pgsplit$/, replacement: src('index.ts') },
      { find: /^pgsplit\/(kysely|fastify|testing)$/, replacement: src('$1/index.ts') },
    ],
  },
  test: {
    include: ['test/**/*.test.ts'],
    // Integration files each start real PostgreSQL clusters; two cores, so at most two files at once.
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    teardownTimeout: 60_000,
    reporters: ['default'],
  },
})
