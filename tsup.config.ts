import { defineConfig } from 'tsup'

export default defineConfig([
  {
    entry: {
      index: 'src/index.ts',
      'kysely/index': 'src/kysely/index.ts',
      'fastify/index': 'src/fastify/index.ts',
      'testing/index': 'src/testing/index.ts',
    },
    format: ['esm', 'cjs'],
    dts: true,
    sourcemap: true,
    target: 'node20',
    platform: 'node',
    splitting: true,
    // Runtime and peer dependencies stay external: users bring their own copies.
    external: ['pg', 'pg-pool', 'kysely', 'fastify', 'fastify-plugin', 'testcontainers'],
  },
  {
    entry: { 'cli/index': 'src/cli/index.ts' },
    format: ['esm'],
    sourcemap: true,
    target: 'node20',
    platform: 'node',
    banner: { js: '#!/usr/bin/env node' },
    external: ['pg', 'pg-pool'],
  },
])
