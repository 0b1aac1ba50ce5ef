// The `pgsplit` bin (tsup adds the shebang). Also runs from source: `npx tsx src/cli/index.ts status ...`.
import { redact } from '../index.js'
import { main } from './main.js'

const controller = new AbortController()
// First Ctrl-C ends --watch after the current round; a second one exits at once.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (controller.signal.aborted) process.exit(130)
    controller.abort()
  })
}

main(process.argv.slice(2), {
  out: (text) => process.stdout.write(`${text}\n`),
  err: (text) => process.stderr.write(`${text}\n`),
  signal: controller.signal,
  isTTY: process.stdout.isTTY === true,
  env: process.env,
}).then(
  (code) => {
    process.exitCode = code
  },
  (err: unknown) => {
    process.stderr.write(`pgsplit: ${redact(err instanceof Error ? err.message : String(err))}\n`)
    process.exitCode = 1
  },
)
