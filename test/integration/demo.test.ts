import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

// `npm run demo` without its setup step: the story on a real cluster, start to finish.

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

describe('demo', () => {
  it('runs the whole story and exits 0', { timeout: 120_000 }, async () => {
    const started = Date.now()
    const { code, stdout, stderr } = await new Promise<{
      code: number | null
      stdout: string
      stderr: string
    }>((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'examples/fastify-app/demo.ts'], {
        cwd: ROOT,
        stdio: ['ignore', 'pipe', 'pipe'],
      })
      let stdout = ''
      let stderr = ''
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString()
      })
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString()
      })
      child.on('error', reject)
      child.on('close', (c) => resolve({ code: c, stdout, stderr }))
    })
    const elapsed = Date.now() - started
    expect(code, `stdout:\n${stdout}\nstderr:\n${stderr}`).toBe(0)
    // Writes on the primary, reads on replicas.
    expect(stdout).toMatch(/POST \/clients Ada Lovelace -> 201 id=1 on node0/)
    expect(stdout).toMatch(/GET \/clients\/1 -> 200 "Ada Lovelace" from node[12]/)
    // Read-your-writes: stale without the token, fresh with it.
    expect(stdout).toMatch(/without the token -> 404 from node[12]/)
    expect(stdout).toMatch(/with x-pgsplit-lsn: \d+:[0-9A-F/]+ -> 200 "Katherine Johnson" from node0/)
    // The lagging replica is excluded, then back.
    expect(stdout).toMatch(/event replicaLagging: node1/)
    expect(stdout).toMatch(/6 reads while node1 lags: node2 x6/)
    // Failover without a restart.
    expect(stdout).toMatch(/event failover: node0 -> node1 in \d+ ms/)
    expect(stdout).toMatch(/POST \/clients Margaret Hamilton.* -> 201 on node1/)
    expect(stdout).toMatch(/writes work again [\d.]+ s after the kill/)
    expect(stdout).toMatch(/^\s*pgsplit_failovers_total 1$/m)
    // The status table: node0 down, node1 primary on timeline 2, node2 its replica.
    expect(stdout).toMatch(/\$ pgsplit status --nodes node0=postgres:\/\/postgres:\*\*\*@/)
    expect(stdout).toMatch(/^NODE\s+HEALTH\s+ROLE/m)
    expect(stdout).toMatch(/^node0\s+down/m)
    expect(stdout).toMatch(/^node1\s+up\s+primary\s+2\s/m)
    expect(stdout).toMatch(/^node2\s+up\s+replica\s+2\s.*streaming/m)
    expect(stdout).toMatch(/demo done in [\d.]+ s/)
    expect(stdout).not.toContain('postgres:postgres@')
    expect(elapsed).toBeLessThan(90_000)
  })
})
