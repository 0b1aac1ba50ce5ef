/**
 * pgsplit under Patroni's real automatic failover (etcd + 3 members, synchronous_mode, ttl 10,
 * loop_wait 2, retry_timeout 5): for each fault, two pgsplit clusters under the same write +
 * read load at the same time, one following Patroni's REST API (`patroni: { urls }`), one on
 * its own probes. Figures per client: fault -> first acknowledged write, Patroni's leader
 * change -> first acknowledged write (goal with the source: <= 200 ms), writes acknowledged by
 * a node that was not the leader then (goal 0), acknowledged writes lost (goal 0), failed reads.
 */
import { existsSync } from 'node:fs'
import { startCluster } from '../src/testing/index.js'
import {
  createLoadTable,
  type Fault,
  LoadClient,
  runFault,
  type ScenarioResult,
} from '../test/support/patroni-scenario.js'
import type { BenchContext } from './lib/context.js'

export type PatroniResult =
  | { skipped: true; reason: string }
  | {
      skipped: false
      runs: ScenarioResult[]
      /** Per fault and client: the medians over runs. */
      summary: {
        fault: Fault
        client: string
        leaderChangeMs: number | null
        faultToFirstAckMs: number | null
        leaderChangeToFirstAckMs: number | null
        writableToFirstAckMs: number | null
        nonLeaderAcks: number
        /** Of those, the ones more than the race window after a leader change (goal 0). */
        nonLeaderAcksOutsideRace: number
        lost: number
        failedWrites: number
        failedReads: number
      }[]
    }

const median = (xs: (number | null)[]): number | null => {
  const v = xs.filter((x): x is number => x !== null).sort((a, b) => a - b)
  return v.length === 0 ? null : v[Math.floor((v.length - 1) / 2)]!
}

export async function runPatroni(ctx: BenchContext, reps: number): Promise<PatroniResult> {
  if (!existsSync('/usr/bin/patroni') || !existsSync('/usr/bin/etcd')) {
    return { skipped: true, reason: 'patroni / etcd not installed (apt-get install patroni etcd-server)' }
  }
  const runs: ScenarioResult[] = []
  const labels = ['patroni source', 'own probes'] as const
  // A fresh cluster per repetition: after a freeze, Patroni 3.0.2 may leave the cluster without
  // a synchronous standby (and then no failover is possible in synchronous_mode).
  for (let rep = 0; rep < reps; rep++) {
    const pg = await startCluster({ backend: 'patroni', replicas: 2, synchronous: true })
    const withSource = new LoadClient(labels[0], 1, pg, true)
    const probeOnly = new LoadClient(labels[1], 2, pg, false)
    try {
      await createLoadTable(pg)
      await Promise.all([withSource.db.ready(), probeOnly.db.ready()])
      const faults: Fault[] = ['switchover', 'kill-postmaster', 'kill-leader', 'freeze-leader']
      for (const fault of faults) {
        const r = await runFault(pg, [withSource, probeOnly], fault, { freezeMs: 14_000, log: ctx.log })
        runs.push(r)
        if (r.reinitialized.length > 0) {
          ctx.log(
            `patroni: ${fault} rep ${rep + 1}: Patroni left ${r.reinitialized.join(', ')} in 'start failed'; reinitialized`,
          )
        }
        for (const c of r.clients) {
          ctx.log(
            `patroni: ${fault} rep ${rep + 1}, ${c.label}: leader change +${r.leaderChangeMs} ms, first ack +${c.faultToFirstAckMs} ms (${c.leaderChangeToFirstAckMs} ms after the leader change, ${c.writableToFirstAckMs} ms after writable), non-leader acks ${c.nonLeaderAcks}, lost ${c.lost}, failed writes ${c.writesFailed}, failed reads ${c.readsFailed}`,
          )
        }
      }
    } finally {
      await withSource.end()
      await probeOnly.end()
      await pg.destroy()
    }
  }
  const summary = []
  for (const fault of new Set(runs.map((r) => r.fault))) {
    const of = runs.filter((r) => r.fault === fault)
    for (const label of labels) {
      const cs = of.map((r) => r.clients.find((c) => c.label === label)!)
      summary.push({
        fault,
        client: label,
        leaderChangeMs: median(of.map((r) => r.leaderChangeMs)),
        faultToFirstAckMs: median(cs.map((c) => c.faultToFirstAckMs)),
        leaderChangeToFirstAckMs: median(cs.map((c) => c.leaderChangeToFirstAckMs)),
        writableToFirstAckMs: median(cs.map((c) => c.writableToFirstAckMs)),
        nonLeaderAcks: cs.reduce((s, c) => s + c.nonLeaderAcks, 0),
        nonLeaderAcksOutsideRace: cs.reduce((s, c) => s + c.nonLeaderAcksOutsideRace, 0),
        lost: cs.reduce((s, c) => s + c.lost, 0),
        failedWrites: cs.reduce((s, c) => s + c.writesFailed, 0),
        failedReads: cs.reduce((s, c) => s + c.readsFailed, 0),
      })
    }
  }
  return { skipped: false, runs, summary }
}
