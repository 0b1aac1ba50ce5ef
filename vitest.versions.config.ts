import { defineConfig } from 'vitest/config'
import base from './vitest.config.js'

/**
 * The version matrix: the tests of what PostgreSQL versions differ in (routing, health probes,
 * failover and timelines, LSN waits, the Kysely and fastify adapters, the testing backend
 * itself), run once per version with `PGSPLIT_PG_VERSION=16|17|18` (scripts/test.sh). The whole
 * suite runs on the system's PostgreSQL (15) with vitest.config.ts.
 */
export default defineConfig({
  // The same package-name aliases as the base (the example app imports 'pgsplit').
  resolve: base.resolve,
  test: {
    ...base.test,
    // Replaces the base's include (mergeConfig would append to it).
    include: [
      'test/integration/routing.test.ts',
      'test/integration/health.test.ts',
      'test/integration/failover.test.ts',
      'test/integration/consistency.test.ts',
      'test/integration/kysely.test.ts',
      'test/integration/fastify.test.ts',
      'test/integration/testing-local.test.ts',
    ],
  },
})
