// Runs the example app: `npx tsx examples/fastify-app/server.ts`.
//   PGSPLIT_PRIMARY_URL=postgres://...  PGSPLIT_REPLICA_URLS=postgres://...,postgres://...
//   or PGSPLIT_NODES=postgres://...,postgres://... (roles found by pgsplit)
//   PORT (default 3000), HOST (default 127.0.0.1), LOG_LEVEL (default info)
import type { ClusterConfig } from 'pgsplit'
import { redact } from 'pgsplit'
import { buildApp } from './app.js'

// A comma only separates URLs when a new URL follows it (a multi-host URL has commas inside).
const urls = (text: string): string[] =>
  text
    .split(/,(?=\s*postgres(?:ql)?:\/\/)/)
    .map((u) => u.trim())
    .filter((u) => u !== '')

function configFromEnv(env: NodeJS.ProcessEnv): ClusterConfig {
  if (env.PGSPLIT_NODES) return { nodes: urls(env.PGSPLIT_NODES) }
  if (env.PGSPLIT_PRIMARY_URL) {
    return { primary: env.PGSPLIT_PRIMARY_URL, replicas: urls(env.PGSPLIT_REPLICA_URLS ?? '') }
  }
  throw new Error('set PGSPLIT_PRIMARY_URL (and PGSPLIT_REPLICA_URLS) or PGSPLIT_NODES')
}

async function main(): Promise<void> {
  const app = await buildApp({
    config: configFromEnv(process.env),
    logger: { level: process.env.LOG_LEVEL ?? 'info' },
    migrate: true,
  })
  const close = async () => {
    await app.close()
    process.exit(0)
  }
  process.once('SIGINT', close)
  process.once('SIGTERM', close)
  await app.listen({ port: Number(process.env.PORT ?? 3000), host: process.env.HOST ?? '127.0.0.1' })
}

main().catch((err: unknown) => {
  process.stderr.write(`fastify-app: ${redact(err instanceof Error ? err.message : String(err))}\n`)
  process.exit(1)
})
