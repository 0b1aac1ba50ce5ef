/**
 * A fault on a real Patroni cluster under a write + read load through pgsplit, with and without
 * the Patroni source at the same time (two clusters, same servers): what each acknowledged, who
 * acknowledged it, what was lost. Shared by test/integration/patroni.test.ts and bench/patroni.ts.
 */
import pg from 'pg'
import { type Cluster, createCluster } from '../../src/index.js'
import type { PatroniTestCluster } from '../../src/testing/index.js'

export const LOAD_TABLE = 'patroni_load'

/** One sample of the leader as Patroni's REST API says it. */
interface LeaderSample {
  at: number
  leader: string | null
}

/** Polls `/cluster` every `everyMs` and keeps the leader at each answer. */
export class LeaderWatch {
  readonly samples: LeaderSample[] = []
  /** When each member was first seen writable (pg_is_in_recovery() false) during the watch. */
  readonly writableAt = new Map<string, number>()
  #stop = false
  #writable: Promise<void>[]
  #loop: Promise<void>

  constructor(
    private readonly pg: PatroniTestCluster,
    everyMs = 20,
  ) {
    this.#loop = this.#run(everyMs)
    this.#writable = pg.nodes
      .filter((n) => n.role !== 'stopped')
      .map((n) => this.#watchWritable(n.name, n.url))
  }

  async #run(everyMs: number): Promise<void> {
    while (!this.#stop) {
      try {
        const s = await this.pg.clusterState()
        const l = s.members.find(
          (m) => m.role === 'leader' && (m.state === 'running' || m.state === 'streaming'),
        )
        this.samples.push({ at: Date.now(), leader: l?.name ?? null })
      } catch {
        this.samples.push({ at: Date.now(), leader: null })
      }
      await new Promise((r) => setTimeout(r, everyMs))
    }
  }

  /** Polls member `name`'s server every 10 ms on its own connection: when does it take writes? */
  async #watchWritable(name: string, url: string): Promise<void> {
    let client: pg.Client | null = null
    while (!this.#stop) {
      try {
        if (client === null) {
          client = new pg.Client({
            connectionString: url,
            connectionTimeoutMillis: 1_000,
            query_timeout: 1_000,
          })
          client.on('error', () => {})
          await client.connect()
        }
        const r = await client.query<{ rec: boolean }>('SELECT pg_is_in_recovery() AS rec')
        const writable = r.rows[0]?.rec === false
        // The first time only: a leader that loses the lock again keeps the time it took writes.
        if (writable && !this.writableAt.has(name)) this.writableAt.set(name, Date.now())
      } catch {
        await client?.end().catch(() => {})
        client = null
      }
      await new Promise((r) => setTimeout(r, 10))
    }
    await client?.end().catch(() => {})
  }

  /** First time at or after `from` that a running leader other than `not` was seen. */
  changedAt(not: string, from: number): { at: number; leader: string } | null {
    for (const s of this.samples) {
      if (s.at >= from && s.leader !== null && s.leader !== not) return { at: s.at, leader: s.leader }
    }
    return null
  }

  /** Resolves once a running leader other than `not` was seen at or after `from` (bounded). */
  async waitChanged(not: string, from: number, timeoutMs: number): Promise<{ at: number; leader: string }> {
    const deadline = Date.now() + timeoutMs
    for (let i = 0; i < 100_000; i++) {
      const changed = this.changedAt(not, from)
      if (changed !== null) return changed
      if (Date.now() >= deadline) break
      await new Promise((r) => setTimeout(r, 50))
    }
    throw new Error(`Patroni named no leader other than ${not} within ${timeoutMs} ms`)
  }

  /** Each change of the leader seen: when, and to whom (null: none). */
  transitions(): LeaderSample[] {
    const out: LeaderSample[] = []
    for (const s of this.samples) if (out.at(-1)?.leader !== s.leader) out.push(s)
    return out
  }

  /** Whether `member` was seen as leader in [from, to]; the samples either side count too. */
  wasLeader(member: string, from: number, to: number): boolean {
    let before: LeaderSample | undefined
    for (const s of this.samples) {
      if (s.at < from) before = s
      else if (s.at <= to) {
        if (s.leader === member) return true
      } else return s.leader === member || before?.leader === member
    }
    return before?.leader === member
  }

  async stop(): Promise<void> {
    this.#stop = true
    await this.#loop
    await Promise.all(this.#writable)
  }
}

interface Ack {
  seq: number
  port: number
  sentAt: number
  ackAt: number
}

/** What one pgsplit client saw during a scenario. */
export interface ClientReport {
  label: string
  writesAcked: number
  writesFailed: number
  failedWriteKinds: Record<string, number>
  readsOk: number
  readsFailed: number
  readErrors: string[]
  /** Fault → first write acknowledged by the new leader (ms). */
  faultToFirstAckMs: number | null
  /** Patroni's leader change (seen by the watch) → that first write (ms). */
  leaderChangeToFirstAckMs: number | null
  /** The new leader's server taking writes (seen by the watch) → that first write (ms). */
  writableToFirstAckMs: number | null
  /** Longest time between two acknowledged writes after the fault (ms). */
  longestGapMs: number
  /** Acknowledged writes whose server was not Patroni's leader when it answered (±50 ms: the watch polls). */
  nonLeaderAcks: number
  /**
   * Of those, the ones acknowledged less than `raceMs` after a leader change: the source had not
   * answered since (it is polled), so no rule could have known. The rest is 0 with the source.
   */
  nonLeaderAcksOutsideRace: number
  /** Acknowledged writes missing at the end. */
  lost: number
  /** Lost writes by the member that acknowledged them. */
  lostBy: Record<string, number>
  events: string[]
}

/** A pgsplit client under load: `writers` sequential insert loops and `readers` read loops. */
export class LoadClient {
  readonly db: Cluster
  readonly acks: Ack[] = []
  readonly failedKinds: Record<string, number> = {}
  readonly readErrors: string[] = []
  readonly events: string[] = []
  writesFailed = 0
  readsOk = 0
  readsFailed = 0
  #seq = 0
  #stop = false
  #loops: Promise<void>[] = []

  constructor(
    readonly label: string,
    readonly clientId: number,
    cluster: PatroniTestCluster,
    withSource: boolean,
    opts: { pollIntervalMs?: number } = {},
  ) {
    this.db = createCluster({
      nodes: cluster.nodes.map((n) => ({ url: n.url, name: n.name })),
      ...(withSource ? { patroni: { urls: cluster.restUrls } } : {}),
      healthCheck: { intervalMs: 200, timeoutMs: 500 },
      failover: { timeoutMs: 30_000, pollIntervalMs: opts.pollIntervalMs ?? 50 },
      pool: { max: 20, connectionTimeoutMillis: 5_000, query_timeout: 20_000 },
    })
    const note = (name: string) => (p: unknown) =>
      this.events.push(`${Date.now()} ${name} ${JSON.stringify(p)}`)
    for (const e of ['failover', 'primaryLost', 'splitBrain', 'topologySource'] as const)
      this.db.on(e, note(e))
    this.db.on('error', () => {})
  }

  /**
   * Open-loop writes (one every `everyMs`, at most `maxInFlight` waiting, as requests of an app
   * arrive whatever the database does: writes stuck on a frozen server do not stop new ones)
   * and `readers` closed-loop readers.
   */
  start(everyMs = 10, maxInFlight = 30, readers = 2): void {
    this.#loops.push(this.#writeLoop(everyMs, maxInFlight))
    for (let i = 0; i < readers; i++) this.#loops.push(this.#readLoop())
  }

  async #writeLoop(everyMs: number, maxInFlight: number): Promise<void> {
    const inFlight = new Set<Promise<void>>()
    while (!this.#stop) {
      if (inFlight.size < maxInFlight) {
        const p = this.#writeOnce().finally(() => inFlight.delete(p))
        inFlight.add(p)
      }
      await new Promise((r) => setTimeout(r, everyMs))
    }
    // Bounded by the pool's query_timeout.
    await Promise.all(inFlight)
  }

  async #writeOnce(): Promise<void> {
    const seq = ++this.#seq
    const sentAt = Date.now()
    const insert = `INSERT INTO ${LOAD_TABLE} (client, seq) VALUES ($1, $2) RETURNING inet_server_port() AS port`
    try {
      // Every fourth write is a transaction: its COMMIT is an acknowledgement point too (run
      // again on the new leader when the connection was lost before COMMIT was sent).
      const r =
        seq % 4 === 0
          ? await this.db.transaction((tx) => tx.query<{ port: number }>(insert, [this.clientId, seq]), {
              retryOnFailover: true,
            })
          : await this.db.query<{ port: number }>(insert, [this.clientId, seq])
      this.acks.push({ seq, port: r.rows[0]!.port, sentAt, ackAt: Date.now() })
    } catch (err) {
      this.writesFailed++
      // pg's DatabaseError is named 'error': its SQLSTATE says more.
      const e = err as Error & { code?: string }
      const kind = e.name === 'error' ? `DatabaseError ${e.code ?? ''}`.trim() : (e.name ?? 'Error')
      this.failedKinds[kind] = (this.failedKinds[kind] ?? 0) + 1
    }
  }

  async #readLoop(): Promise<void> {
    while (!this.#stop) {
      try {
        await this.db.query(`SELECT count(*) FROM ${LOAD_TABLE} WHERE client = $1`, [this.clientId])
        this.readsOk++
      } catch (err) {
        this.readsFailed++
        if (this.readErrors.length < 5) this.readErrors.push((err as Error).message)
      }
      await new Promise((r) => setTimeout(r, 5))
    }
  }

  async stop(): Promise<void> {
    this.#stop = true
    await Promise.all(this.#loops)
    this.#loops = []
    this.#stop = false
  }

  async end(): Promise<void> {
    await this.stop()
    await this.db.end()
  }

  /** Figures for the window that began at `faultAt`. */
  report(
    cluster: PatroniTestCluster,
    watch: LeaderWatch,
    faultAt: number,
    oldLeader: string,
    present: Set<number>,
    raceMs = 250,
    ackSlackMs = 50,
  ): ClientReport {
    const nameOf = new Map(cluster.nodes.map((n) => [n.port, n.name]))
    const changed = watch.changedAt(oldLeader, faultAt)
    const after = this.acks.filter((a) => a.ackAt >= faultAt)
    // No leader change (Patroni restarted a killed postmaster): the first write sent after the fault.
    const first = changed
      ? after.find((a) => nameOf.get(a.port) === changed.leader)
      : after.find((a) => a.sentAt >= faultAt)
    let longestGapMs = 0
    let last = faultAt
    for (const a of [...after].sort((x, y) => x.ackAt - y.ackAt)) {
      longestGapMs = Math.max(longestGapMs, a.ackAt - last)
      last = a.ackAt
    }
    // "At that moment" is the acknowledgement: a write sent to the leader that answers once the
    // node lost the lock (a frozen server resuming) counts.
    const nonLeader = this.acks.filter(
      (a) => !watch.wasLeader(nameOf.get(a.port) ?? '?', a.ackAt - ackSlackMs, a.ackAt + ackSlackMs),
    )
    const changes = watch.transitions().slice(1)
    const outsideRace = nonLeader.filter((a) => {
      const last = changes.filter((c) => c.at <= a.ackAt).at(-1)
      return last === undefined || a.ackAt - last.at > raceMs
    })
    const lostBy: Record<string, number> = {}
    for (const a of this.acks) {
      if (present.has(a.seq)) continue
      const who = nameOf.get(a.port) ?? String(a.port)
      lostBy[who] = (lostBy[who] ?? 0) + 1
    }
    return {
      label: this.label,
      writesAcked: this.acks.length,
      writesFailed: this.writesFailed,
      failedWriteKinds: { ...this.failedKinds },
      readsOk: this.readsOk,
      readsFailed: this.readsFailed,
      readErrors: [...this.readErrors],
      faultToFirstAckMs: first ? first.ackAt - faultAt : null,
      leaderChangeToFirstAckMs: first && changed ? first.ackAt - changed.at : null,
      writableToFirstAckMs:
        first && changed && watch.writableAt.has(changed.leader)
          ? first.ackAt - watch.writableAt.get(changed.leader)!
          : null,
      longestGapMs,
      nonLeaderAcks: nonLeader.length,
      nonLeaderAcksOutsideRace: outsideRace.length,
      lost: this.acks.filter((a) => !present.has(a.seq)).length,
      lostBy,
      events: [...this.events],
    }
  }

  reset(): void {
    this.acks.length = 0
    this.writesFailed = 0
    this.readsOk = 0
    this.readsFailed = 0
    this.readErrors.length = 0
    this.events.length = 0
    for (const k of Object.keys(this.failedKinds)) delete this.failedKinds[k]
  }
}

export async function createLoadTable(cluster: PatroniTestCluster): Promise<void> {
  await adminRows(
    cluster.primaryUrl,
    `CREATE TABLE IF NOT EXISTS ${LOAD_TABLE} (client int NOT NULL, seq int NOT NULL, PRIMARY KEY (client, seq))`,
  )
}

/** The seqs of `clientId` on the leader now. */
export async function presentSeqs(cluster: PatroniTestCluster, clientId: number): Promise<Set<number>> {
  const rows = await adminRows<{ seq: number }>(
    cluster.primaryUrl,
    `SELECT seq FROM ${LOAD_TABLE} WHERE client = $1`,
    [clientId],
  )
  return new Set(rows.map((r) => r.seq))
}

export async function adminRows<R extends pg.QueryResultRow>(
  url: string,
  sql: string,
  params: unknown[] = [],
): Promise<R[]> {
  const client = new pg.Client({
    connectionString: url,
    connectionTimeoutMillis: 5_000,
    query_timeout: 10_000,
  })
  client.on('error', () => {})
  await client.connect()
  try {
    return (await client.query<R>(sql, params)).rows
  } finally {
    await client.end().catch(() => {})
  }
}

/** Waits (bounded) until every member runs and a leader takes writes. */
export async function waitAllRunning(
  cluster: PatroniTestCluster,
  timeoutMs: number,
  expected = cluster.nodes.length,
  /** synchronous_mode fails over only to the synchronous standby: require one to be named. */
  requireSync = cluster.synchronous,
  /** Members found in `start failed` are reinitialized (their names are added here). */
  reinitialized?: string[],
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (let i = 0; i < 100_000; i++) {
    const s = await cluster.clusterState().catch(() => null)
    // After Patroni 3.0.2 gave the lock back to a resumed leader, the interim leader's rewind can
    // leave it in `start failed` (seen once in the benchmark): an operator reinitializes it.
    const failed = s?.members.find((m) => m.state === 'start failed' && !reinitialized?.includes(m.name))
    if (failed !== undefined && reinitialized !== undefined) {
      reinitialized.push(failed.name)
      await cluster.reinit(cluster.nodes.findIndex((n) => n.name === failed.name))
      continue
    }
    const ok =
      s !== null &&
      s.members.length === expected &&
      (!requireSync || s.members.some((m) => m.role === 'sync_standby')) &&
      s.members.every((m) => m.state === 'running' || m.state === 'streaming')
    if (ok) break
    if (Date.now() > deadline) {
      throw new Error(
        `members not all running within ${timeoutMs} ms: ${JSON.stringify(s?.members.map((m) => [m.name, m.role, m.state]))}`,
      )
    }
    await new Promise((r) => setTimeout(r, 200))
  }
  await cluster.waitForLeader({ timeoutMs: Math.max(1_000, deadline - Date.now()) })
}

export type Fault = 'switchover' | 'kill-postmaster' | 'kill-leader' | 'freeze-leader'

export interface ScenarioResult {
  fault: Fault
  oldLeader: string
  newLeader: string | null
  /** Fault → Patroni's new leader, as `/cluster` showed it. */
  leaderChangeMs: number | null
  /** Leader changes from the fault on, ms after it. */
  leaders: { atMs: number; leader: string | null }[]
  /** The leader at the end. */
  finalLeader: string
  /** Members Patroni left in `start failed` after the fault, reinitialized before the next one. */
  reinitialized: string[]
  clients: ClientReport[]
  durationMs: number
}

/**
 * Runs `fault` on the current leader while `clients` are under load; returns once writes were
 * acknowledged again for `settleMs`, the old leader is back in the cluster and every figure is in.
 */
export async function runFault(
  cluster: PatroniTestCluster,
  clients: LoadClient[],
  fault: Fault,
  opts: { freezeMs?: number; settleMs?: number; log?: (line: string) => void } = {},
): Promise<ScenarioResult> {
  const t0 = Date.now()
  const log = opts.log ?? (() => {})
  const members = (await cluster.clusterState()).members.length
  // Settled before the fault: every member running and, in synchronous_mode, a synchronous standby.
  await waitAllRunning(cluster, 60_000, members)
  const leaderIndex = await cluster.waitForLeader()
  const oldLeader = cluster.nodes[leaderIndex]!.name
  for (const c of clients) c.reset()
  const watch = new LeaderWatch(cluster)
  for (const c of clients) c.start()
  await new Promise((r) => setTimeout(r, 1_000)) // load before the fault
  let faultAt = Date.now()
  log(`${fault} of ${oldLeader}`)
  if (fault === 'switchover') await cluster.switchover()
  else if (fault === 'kill-postmaster') {
    await cluster.kill(leaderIndex)
    // No leader change to measure from: the outage starts when the postmaster is gone.
    faultAt = Date.now()
  } else if (fault === 'kill-leader') {
    await cluster.killManager(leaderIndex)
    await cluster.kill(leaderIndex)
  } else await cluster.freeze(leaderIndex, opts.freezeMs ?? 14_000)
  // Patroni named another leader (the watch saw it: after a freeze, Patroni 3.0.2 may already
  // have given the lock back to the resumed leader when freeze() returns), then writes flow again
  // on a leader (bounded).
  if (fault === 'kill-leader' || fault === 'freeze-leader')
    await watch.waitChanged(oldLeader, faultAt, 40_000)
  const newIndex = await cluster.waitForLeader({ timeoutMs: 40_000 })
  await new Promise((r) => setTimeout(r, opts.settleMs ?? 1_500))
  for (const c of clients) await c.stop()
  await watch.stop()
  if (fault === 'kill-leader') await cluster.start(leaderIndex)
  // Every member back (the old leader rejoined) before the next scenario.
  // A synchronous standby may take longer to be named again (or never, after Patroni 3.0.2 gave
  // the lock back to a resumed leader): the next scenario waits for it.
  const reinitialized: string[] = []
  await waitAllRunning(cluster, 60_000, members, false, reinitialized)
  const changed = watch.changedAt(oldLeader, faultAt)
  const reports: ClientReport[] = []
  for (const c of clients) {
    reports.push(c.report(cluster, watch, faultAt, oldLeader, await presentSeqs(cluster, c.clientId)))
  }
  return {
    fault,
    oldLeader,
    newLeader: changed?.leader ?? cluster.nodes[newIndex]!.name,
    leaderChangeMs: changed ? changed.at - faultAt : null,
    leaders: watch
      .transitions()
      .filter((t) => t.at >= faultAt)
      .map((t) => ({ atMs: t.at - faultAt, leader: t.leader })),
    finalLeader: cluster.nodes[await cluster.waitForLeader()]!.name,
    reinitialized,
    clients: reports,
    durationMs: Date.now() - t0,
  }
}
