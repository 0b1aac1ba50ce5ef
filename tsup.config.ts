import { defineConfig } from 'tsup'

export default defineConfig({
  entry: {
    index: 'src/index.ts',
    'testing/index': 'src/testing/index.ts',
  },
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  platform: 'node',
  splitting: false,
  // Peer and runtime dependencies stay external: users bring their own copies.
  external: [
    'pg',
    'pg-pool',
    'kysely',
    'fastify',
    'fastify-plugin',
    'testcontainers',
    '@testcontainers/postgresql',
  ],
})
