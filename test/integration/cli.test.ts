import { type ChildProcess, spawn } from 'node:child_process'
import { createServer, type Server } from 'node:net'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { StatusReport } from '../../src/cli/status.js'
import { startCluster, type TestCluster } from '../../src/testing/index.js'
import { eventually } from '../support/cluster.js'

// The `pgsplit status` command, run from source as a user would (`node --import tsx`), against a
// real cluster. A distinctive password: the tests check it never appears in any output.

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const PASSWORD = 'Sup3r-Secret-pw'

let pgc: TestCluster
let silent: Server
let silentPort: number

interface Run {
  code: number | null
  stdout: string
  stderr: string
}

function start(args: string[]): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', 'src/cli/index.ts', ...args], {
    cwd: ROOT,
    env: { ...process.env, PGSPLIT_NODES: '', PGSPLIT_PRIMARY_URL: '', PGSPLIT_REPLICA_URLS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
}

function run(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = start(args)
    let stdout = ''
    let stderr = ''
    child.stdout?.on('data', (d: Buffer) => {
      stdout += d.toString()
    })
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString()
    })
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
  })
}

const url = (i: number) => pgc.nodes[i]!.url
const nodesArg = () => pgc.nodes.map((n) => `${n.name}=${n.url}`).join(',')

function expectNoPassword(r: Run): void {
  expect(r.stdout).not.toContain(PASSWORD)
  expect(r.stderr).not.toContain(PASSWORD)
}

beforeAll(async () => {
  pgc = await startCluster({ replicas: 2, backend: 'local', password: PASSWORD })
  // Accepts connections and never answers: what a blackholed node looks like to a client.
  silent = createServer(() => undefined)
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
  silentPort = (silent.address() as { port: number }).port
})

afterAll(async () => {
  silent?.close()
  await pgc?.destroy()
})

describe('pgsplit status', () => {
  it('prints a table per node with roles, lag and replication state', async () => {
    const r = await run(['status', '--primary', url(0), '--replica', url(1), '--replica', url(2)])
    expect(r.code).toBe(0)
    const lines = r.stdout.trim().split('\n')
    expect(lines[0]).toMatch(
      /^NODE\s+HEALTH\s+ROLE\s+TL\s+LSN\s+LAG\s+LAG MS\s+PAUSED\s+UPSTREAM\s+REPL STATE\s+SYNC$/,
    )
    expect(lines[1]).toMatch(
      new RegExp(`^127\\.0\\.0\\.1:${pgc.nodes[0]!.port}\\s+up\\s+primary\\s+1\\s+\\d+/`),
    )
    for (const i of [1, 2]) {
      expect(r.stdout).toMatch(
        new RegExp(
          `127\\.0\\.0\\.1:${pgc.nodes[i]!.port}\\s+up\\s+replica\\s+1\\s+\\S+\\s+\\d.*\\sstreaming\\s+async`,
        ),
      )
    }
    expectNoPassword(r)
  })

  it('--json: roles, lag, replay state and the matching pg_stat_replication rows', async () => {
    const c = new pg.Client(url(0))
    await c.connect()
    // A first transaction the replica replays: its replay timestamp is what time lag is measured from.
    await c.query('CREATE TABLE IF NOT EXISTS cli_t (v text)')
    await eventually(
      async () => {
        const r = new pg.Client(url(1))
        await r.connect()
        const { rows } = await r.query("SELECT to_regclass('cli_t') IS NOT NULL AS ok")
        await r.end()
        return rows[0].ok === true
      },
      { what: 'cli_t on node1' },
    )
    await pgc.pauseReplay(1)
    try {
      await c.query("INSERT INTO cli_t SELECT repeat('x', 100) FROM generate_series(1, 200)")
      await c.end()
      const r = await run(['status', '--nodes', nodesArg(), '--json'])
      expect(r.code).toBe(0)
      expectNoPassword(r)
      const report = JSON.parse(r.stdout) as StatusReport
      expect(report.primary).toBe('node0')
      expect(report.writable).toEqual(['node0'])
      expect(report.nodes.map((n) => [n.name, n.health, n.role, n.timeline])).toEqual([
        ['node0', 'up', 'primary', 1],
        ['node1', 'up', 'replica', 1],
        ['node2', 'up', 'replica', 1],
      ])
      const [primary, paused, live] = report.nodes
      expect(primary!.url).toBe(`postgres://postgres:***@127.0.0.1:${pgc.nodes[0]!.port}/app`)
      expect(primary!.lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/)
      expect(paused!.replayPaused).toBe(true)
      expect(paused!.lagBytes).toBeGreaterThan(10_000)
      expect(paused!.lagMs).toBeGreaterThanOrEqual(0)
      expect(live!.replayPaused).toBe(false)
      expect(live!.lagBytes).toEqual(expect.any(Number))
      for (const replica of [paused!, live!]) {
        expect(replica.upstream).toBe(`127.0.0.1:${pgc.nodes[0]!.port}`)
        expect(replica.receiverStatus).toBe('streaming')
        expect(replica.replication).toMatchObject({
          applicationName: replica.name,
          state: 'streaming',
          syncState: 'async',
          matchedBy: 'slot',
        })
      }
      expect(report.otherStandbys).toEqual([])
    } finally {
      await pgc.resumeReplay(1)
    }
  })

  it('lists standbys it was not given, from the primary', async () => {
    const r = await run(['status', '--primary', `main=${url(0)}`, '--json'])
    expect(r.code).toBe(0)
    const report = JSON.parse(r.stdout) as StatusReport
    expect(report.nodes.map((n) => n.name)).toEqual(['main'])
    expect(report.otherStandbys.map((s) => s.applicationName).sort()).toEqual(['node1', 'node2'])
    const text = await run(['status', '--primary', `main=${url(0)}`])
    expect(text.stdout).toMatch(/standby not among the given nodes: node1/)
  })

  it('exits 1 when no primary answers: only replicas, or a dead primary', async () => {
    const replicas = await run(['status', '--replica', url(1), '--replica', url(2)])
    expect(replicas.code).toBe(1)
    expect(replicas.stdout).toContain('no primary answered')
    expectNoPassword(replicas)

    const dead = await run(['status', '--primary', `postgres://app:${PASSWORD}@127.0.0.1:1/app`, '--json'])
    expect(dead.code).toBe(1)
    expectNoPassword(dead)
    const report = JSON.parse(dead.stdout) as StatusReport
    expect(report.primary).toBeNull()
    expect(report.nodes[0]).toMatchObject({
      health: 'down',
      role: null,
      url: 'postgres://app:***@127.0.0.1:1/app',
    })
    expect(report.nodes[0]!.error).toMatch(/ECONNREFUSED/)
  })

  it('bounds a node that does not answer with --timeout', async () => {
    const t = Date.now()
    const r = await run([
      'status',
      '--primary',
      url(0),
      '--replica',
      `postgres://app:${PASSWORD}@127.0.0.1:${silentPort}/app`,
      '--timeout',
      '700',
      '--json',
    ])
    expect(Date.now() - t).toBeLessThan(20_000)
    expect(r.code).toBe(0)
    expectNoPassword(r)
    const report = JSON.parse(r.stdout) as StatusReport
    expect(report.nodes[1]).toMatchObject({ health: 'down' })
    expect(report.nodes[1]!.error).toMatch(/timeout|700 ms/i)
  })

  it('--watch refreshes until interrupted', async () => {
    const child = start(['status', '--nodes', nodesArg(), '--watch', '0.2', '--json'])
    let stdout = ''
    child.stdout?.on('data', (d: Buffer) => {
      stdout += d.toString()
    })
    const closed = new Promise<number | null>((resolve) => child.on('close', resolve))
    await eventually(() => stdout.split('\n').filter((l) => l.startsWith('{')).length >= 3, {
      what: 'three rounds',
    })
    child.kill('SIGINT')
    expect(await closed).toBe(0)
    const rounds = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as StatusReport)
    expect(rounds.length).toBeGreaterThanOrEqual(3)
    expect(new Set(rounds.map((x) => x.at)).size).toBe(rounds.length)
    expect(stdout).not.toContain(PASSWORD)
  })

  it('usage errors exit 2; --help exits 0', async () => {
    const none = await run(['status'])
    expect(none.code).toBe(2)
    expect(none.stderr).toMatch(/no nodes/)
    const unknown = await run(['status', '--bogus'])
    expect(unknown.code).toBe(2)
    const badUrl = await run(['status', '--primary', `mysql://root:${PASSWORD}@h/db`])
    expect(badUrl.code).toBe(2)
    expectNoPassword(badUrl)
    expect((await run(['frobnicate'])).code).toBe(2)
    const help = await run(['--help'])
    expect(help.code).toBe(0)
    expect(help.stdout).toMatch(/Usage:\n\s+pgsplit status/)
  })
})
