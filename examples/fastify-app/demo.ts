// `npm run demo`: a real PostgreSQL cluster (1 primary + 2 streaming replicas), the example app on
// it, and a short story told over HTTP. Every line printed is read from the running system:
// responses and their headers, the cluster's events and topology, times measured here.
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { type Cluster, type ClusterEvents, createCluster, redact } from 'pgsplit'
import { startCluster, type TestCluster } from 'pgsplit/testing'
import { main as pgsplitCli } from '../../src/cli/main.js'
import { buildApp, NODE_HEADER } from './app.js'

const TOKEN_HEADER = 'x-pgsplit-lsn'
/** Small on purpose: a few dozen inserts put a paused replica beyond it. */
const MAX_LAG_BYTES = 8 * 1024

const started = performance.now()
const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`
function say(text: string): void {
  const t = ((performance.now() - started) / 1000).toFixed(1).padStart(5)
  process.stdout.write(`[${t}s] ${text}\n`)
}
const section = (title: string) => process.stdout.write(`\n== ${title}\n`)

let pg: TestCluster | undefined
let db: Cluster | undefined
let app: FastifyInstance | undefined
let cleaning: Promise<void> | undefined

/** Closes the app, the cluster's pools and the PostgreSQL servers; safe to call twice. */
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    await app?.close().catch(() => undefined)
    await db?.end().catch(() => undefined)
    await pg
      ?.destroy()
      .catch((err: unknown) => process.stderr.write(`demo: destroy failed: ${String(err)}\n`))
  })()
  return cleaning
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    process.stderr.write(`\ndemo: ${signal}, cleaning up\n`)
    void cleanup().finally(() => process.exit(130))
  })
}

interface Answer {
  status: number
  node: string
  token: string | null
  body: unknown
  ms: number
}

let base = ''
async function http(
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Answer> {
  const t = performance.now()
  const res = await fetch(`${base}${path}`, {
    method,
    headers: body === undefined ? headers : { ...headers, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const text = await res.text()
  return {
    status: res.status,
    node: res.headers.get(NODE_HEADER) ?? '?',
    token: res.headers.get(TOKEN_HEADER),
    body: text === '' ? null : (JSON.parse(text) as unknown),
    ms: performance.now() - t,
  }
}

interface TopologyNode {
  name: string
  role: string
  state: string
  lagBytes: number | null
  lagging: boolean
  replayPaused: boolean
  timeline: number | null
}
interface Topology {
  primary: string | null
  timeline: number | null
  nodes: TopologyNode[]
}

async function topology(): Promise<Topology> {
  return (await http('GET', '/topology')).body as Topology
}

function describeTopology(t: Topology): string {
  return t.nodes
    .map((n) => {
      const lag =
        n.role === 'replica' ? ` lag ${n.lagBytes ?? '?'} B${n.lagging ? ' (beyond maxLag)' : ''}` : ''
      return `${n.name} ${n.role} ${n.state}${lag}${n.replayPaused ? ' paused' : ''}`
    })
    .join(' | ')
}

/** Polls until `check` is true, for at most `timeoutMs`. */
async function until(what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<number> {
  const t = performance.now()
  while (!(await check())) {
    if (performance.now() - t > timeoutMs) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
  return performance.now() - t
}

/** Resolves with the first `event` whose payload passes `match`. */
function nextEvent<K extends keyof ClusterEvents>(
  cluster: Cluster,
  event: K,
  match: (...args: ClusterEvents[K]) => boolean,
  timeoutMs = 15_000,
): Promise<ClusterEvents[K]> {
  return new Promise((resolve, reject) => {
    const on = cluster.on.bind(cluster) as (e: K, l: (...a: ClusterEvents[K]) => void) => Cluster
    const off = cluster.off.bind(cluster) as (e: K, l: (...a: ClusterEvents[K]) => void) => Cluster
    const timer = setTimeout(() => {
      off(event, listener)
      reject(new Error(`no ${event} event within ${timeoutMs} ms`))
    }, timeoutMs)
    function listener(...args: ClusterEvents[K]) {
      if (!match(...args)) return
      clearTimeout(timer)
      off(event, listener)
      resolve(args)
    }
    on(event, listener)
  })
}

function tally(nodes: string[]): string {
  const counts = new Map<string, number>()
  for (const n of nodes) counts.set(n, (counts.get(n) ?? 0) + 1)
  return [...counts.entries()].map(([n, c]) => `${n} x${c}`).join(', ')
}

const nameOf = (body: unknown) => (body as { name?: string } | null)?.name ?? '-'
const idOf = (body: unknown) => (body as { id: number }).id

async function story(): Promise<void> {
  section('1. A cluster and the app')
  say('starting PostgreSQL: 1 primary + 2 streaming replicas (pgsplit/testing)')
  const tStart = performance.now()
  pg = await startCluster({ replicas: 2 })
  const cluster = pg
  say(
    `cluster up in ${seconds(performance.now() - tStart)} (${cluster.backend} backend): ` +
      cluster.nodes.map((n) => `${n.name} ${n.role} on :${n.port}`).join(', '),
  )

  db = createCluster({
    primary: { name: 'node0', url: cluster.nodes[0]!.url },
    replicas: [
      { name: 'node1', url: cluster.nodes[1]!.url },
      { name: 'node2', url: cluster.nodes[2]!.url },
    ],
    maxLag: { bytes: MAX_LAG_BYTES, ms: 10_000 },
    healthCheck: { intervalMs: 200, timeoutMs: 1_000 },
    failover: { timeoutMs: 20_000 },
  })
  const split = db
  const tFailover = { lost: 0 }
  // Events as they happen, with the time they were seen.
  split.on('nodeDown', (e) => say(`  event nodeDown: ${e.node} (${e.reason})`))
  split.on('nodeUp', (e) => say(`  event nodeUp: ${e.node}`))
  split.on('replicaLagging', (e) =>
    say(`  event replicaLagging: ${e.node} ${e.lagBytes ?? '?'} B / ${e.lagMs ?? '?'} ms behind`),
  )
  split.on('replicaCaughtUp', (e) => say(`  event replicaCaughtUp: ${e.node}`))
  split.on('primaryLost', (e) => {
    tFailover.lost = performance.now()
    say(`  event primaryLost: ${e.node} (${e.reason})`)
  })
  split.on('failover', (e) => say(`  event failover: ${e.from ?? '?'} -> ${e.to} in ${e.durationMs} ms`))
  split.on('error', () => undefined)

  app = await buildApp({ cluster: split, migrate: true })
  await app.listen({ host: '127.0.0.1', port: 0 })
  base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  say(`example app listening on ${base} (table clients created on the primary)`)
  const waited = await until('the replicas to replay the CREATE TABLE', async () =>
    (await topology()).nodes.every((n) => n.role !== 'replica' || n.lagBytes === 0),
  )
  say(`replicas caught up (${Math.round(waited)} ms): ${describeTopology(await topology())}`)

  section('2. Writes go to the primary, reads to the replicas')
  const ids: number[] = []
  for (const [name, email] of [
    ['Ada Lovelace', 'ada@example.com'],
    ['Grace Hopper', 'grace@example.com'],
    ['Alan Turing', 'alan@example.com'],
  ] as const) {
    const r = await http('POST', '/clients', { name, email })
    ids.push(idOf(r.body))
    say(`POST /clients ${name} -> ${r.status} id=${idOf(r.body)} on ${r.node}, token ${r.token}`)
  }
  await until('replication of the inserts', async () =>
    (await topology()).nodes.every((n) => n.role !== 'replica' || n.lagBytes === 0),
  )
  for (const id of [...ids, ...ids]) {
    const r = await http('GET', `/clients/${id}`)
    say(`GET /clients/${id} -> ${r.status} "${nameOf(r.body)}" from ${r.node}`)
  }

  section('3. Read-your-writes with the token header')
  await cluster.pauseReplay(1)
  await cluster.pauseReplay(2)
  say('replay paused on node1 and node2: they receive WAL but apply none')
  const katherine = await http('POST', '/clients', {
    name: 'Katherine Johnson',
    email: 'katherine@example.com',
  })
  const kid = idOf(katherine.body)
  say(
    `POST /clients Katherine Johnson -> ${katherine.status} id=${kid} on ${katherine.node}, token ${katherine.token}`,
  )
  const stale = await http('GET', `/clients/${kid}`)
  say(`GET /clients/${kid} without the token -> ${stale.status} from ${stale.node} (a stale replica)`)
  const fresh = await http('GET', `/clients/${kid}`, undefined, { [TOKEN_HEADER]: katherine.token ?? '' })
  say(
    `GET /clients/${kid} with ${TOKEN_HEADER}: ${katherine.token} -> ${fresh.status} "${nameOf(fresh.body)}" from ${fresh.node} in ${Math.round(fresh.ms)} ms (neither paused replica has it)`,
  )

  section(`4. A lagging replica takes no reads (maxLag ${MAX_LAG_BYTES / 1024} KiB)`)
  await cluster.resumeReplay(2)
  say('replay resumed on node2; node1 stays paused')
  const lagging = nextEvent(split, 'replicaLagging', (e) => e.node === 'node1')
  let lagged = false
  void lagging.then(
    () => {
      lagged = true
    },
    () => undefined,
  )
  let written = 0
  const tWrites = performance.now()
  while (!lagged && written < 500) {
    await http('POST', '/clients', { name: `Load ${written}`, email: `load${written}@example.com` })
    written++
    // Let the monitor's probe run between bursts.
    if (written % 20 === 0) await new Promise((r) => setTimeout(r, 50))
  }
  const [lagEvent] = await lagging
  say(
    `${written} more clients written in ${seconds(performance.now() - tWrites)}: node1 is ${lagEvent.lagBytes} B behind -> excluded`,
  )
  const during: string[] = []
  for (let i = 0; i < 6; i++) during.push((await http('GET', `/clients/${ids[i % ids.length]}`)).node)
  say(`6 reads while node1 lags: ${tally(during)}`)
  const caughtUp = nextEvent(split, 'replicaCaughtUp', (e) => e.node === 'node1')
  const tResume = performance.now()
  await cluster.resumeReplay(1)
  await caughtUp
  say(`replay resumed on node1: back within maxLag after ${Math.round(performance.now() - tResume)} ms`)
  const after: string[] = []
  for (let i = 0; i < 6; i++) after.push((await http('GET', `/clients/${ids[i % ids.length]}`)).node)
  say(`6 reads now: ${tally(after)}`)

  section('5. Failover: the primary dies, a replica is promoted')
  say(`topology: ${describeTopology(await topology())}`)
  const tKill = performance.now()
  await cluster.kill(0)
  say(`node0 killed (SIGKILL), process gone after ${Math.round(performance.now() - tKill)} ms`)
  // A write issued now waits in pgsplit (failover.timeoutMs) for a new primary: no restart, no retry loop.
  const tWrite = performance.now()
  const pending = http('POST', '/clients', { name: 'Margaret Hamilton', email: 'margaret@example.com' })
  const tPromote = performance.now()
  await cluster.promote(1)
  say(`node1 promoted (pg_promote) in ${Math.round(performance.now() - tPromote)} ms`)
  const tRepoint = performance.now()
  await cluster.repoint(2, 1)
  say(`node2 now streams from node1 (took ${Math.round(performance.now() - tRepoint)} ms)`)
  let margaret = await pending
  say(
    `POST /clients Margaret Hamilton, sent ${Math.round(tWrite - tKill)} ms after the kill -> ${margaret.status} on ${margaret.node} after ${Math.round(margaret.ms)} ms`,
  )
  for (let attempt = 1; margaret.status !== 201 && attempt <= 5; attempt++) {
    say(`  answer: ${JSON.stringify(margaret.body)}; trying again`)
    margaret = await http('POST', '/clients', { name: 'Margaret Hamilton', email: 'margaret@example.com' })
    say(`POST /clients Margaret Hamilton -> ${margaret.status} on ${margaret.node}`)
  }
  if (margaret.status !== 201) throw new Error('no write succeeded after the failover')
  const outage = performance.now() - tKill
  say(
    `writes work again ${seconds(outage)} after the kill` +
      (tFailover.lost > 0
        ? ` (${seconds(performance.now() - tFailover.lost)} after pgsplit saw the primary go)`
        : '') +
      ', same app process, no restart',
  )
  const back = await http('GET', `/clients/${idOf(margaret.body)}`, undefined, {
    [TOKEN_HEADER]: margaret.token ?? '',
  })
  say(
    `GET /clients/${idOf(margaret.body)} with its token -> ${back.status} "${nameOf(back.body)}" from ${back.node}`,
  )
  const tFollow = performance.now()
  await until('node2 to take reads again', async () =>
    (await topology()).nodes.some(
      (n) => n.name === 'node2' && n.role === 'replica' && n.state === 'up' && !n.lagging,
    ),
  )
  say(
    `node2 replays node1's timeline, within maxLag again after ${Math.round(performance.now() - tFollow)} ms`,
  )
  const reads: string[] = []
  for (let i = 0; i < 4; i++) reads.push((await http('GET', `/clients/${ids[i % ids.length]}`)).node)
  say(`4 reads now: ${tally(reads)}`)
  const t = await topology()
  say(`topology: primary ${t.primary}, timeline ${t.timeline}: ${describeTopology(t)}`)
  const metrics = ((await (await fetch(`${base}/metrics`)).text()) as string)
    .split('\n')
    .filter((l) => /^pgsplit_(failovers_total|node_primary|node_up)\b/.test(l))
  say(`GET /metrics (excerpt):\n${metrics.map((l) => `        ${l}`).join('\n')}`)

  section('6. pgsplit status')
  const nodes = cluster.nodes.map((n) => `${n.name}=${n.url}`).join(',')
  process.stdout.write(`$ pgsplit status --nodes ${redact(nodes)}\n`)
  const code = await pgsplitCli(['status', '--nodes', nodes, '--timeout', '2000'], {
    out: (text) => process.stdout.write(`${text}\n`),
    err: (text) => process.stderr.write(`${text}\n`),
  })
  say(`pgsplit status exited with ${code}`)
}

let exitCode = 0
try {
  await story()
} catch (err) {
  exitCode = 1
  process.stderr.write(
    `\ndemo failed: ${redact(err instanceof Error ? (err.stack ?? err.message) : String(err))}\n`,
  )
} finally {
  const t = performance.now()
  await cleanup()
  say(
    `cleaned up (app closed, pools ended, servers stopped and removed) in ${seconds(performance.now() - t)}`,
  )
  say(exitCode === 0 ? `demo done in ${seconds(performance.now() - started)}` : 'demo failed')
}
process.exit(exitCode)
