import type { ClusterNode } from '../pools/node.js'
import { parseLsn } from '../pools/node.js'
import type { WriteToken } from '../router/consistency.js'
import { NodeProber } from './probe.js'

/**
 * Reads the primary's WAL position after writes, for causal tokens, on a connection of its own
 * (never a user's pooled connection, so a write's client goes back to the pool at once).
 *
 * Concurrent writes share one round trip: a read that was sent after a write's commit was
 * acknowledged serves that write and every other write acknowledged before it was sent. The
 * position is `pg_current_wal_lsn()` (the write LSN), not the insert LSN, which on an idle
 * cluster can point past a page header that no replica ever replays.
 */
export class LsnReader {
  #node: ClusterNode | null = null
  #prober: NodeProber | null = null
  #inFlight: Promise<WriteToken> | null = null
  #queued: Promise<WriteToken> | null = null
  readonly #timeoutMs: number
  #rounds = 0

  constructor(timeoutMs: number) {
    this.#timeoutMs = timeoutMs
  }

  /** Round trips made so far (the benchmark reports how many writes shared each). */
  get rounds(): number {
    return this.#rounds
  }

  /** A token at or past every write on `primary` acknowledged before this call. */
  read(primary: ClusterNode): Promise<WriteToken> {
    // After end(): no new connection may be opened (it would outlive the cluster).
    if (this.#ended) return Promise.reject(new Error('the cluster has been ended'))
    if (this.#node !== primary) {
      this.#prober?.end()
      this.#node = primary
      this.#prober = new NodeProber(primary, this.#timeoutMs, null)
      this.#inFlight = null
      this.#queued = null
    }
    if (this.#inFlight === null) {
      this.#inFlight = this.#fetch().finally(() => {
        this.#inFlight = null
      })
      return this.#inFlight
    }
    // The read in flight may have been sent before this write was acknowledged: take the next.
    if (this.#queued === null) {
      const after = this.#inFlight
      this.#queued = after
        .catch(() => undefined)
        .then(() => {
          this.#queued = null
          return this.read(primary)
        })
    }
    return this.#queued
  }

  async #fetch(): Promise<WriteToken> {
    const prober = this.#prober!
    this.#rounds++
    const rows = await prober.query<{ lsn: string; timeline: number }>(
      `/* pgsplit token */ SELECT pg_current_wal_lsn()::text AS lsn,
        ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS timeline`,
    )
    const row = rows[0]
    const lsn = parseLsn(row?.lsn)
    if (row === undefined || lsn === null) throw new Error('no WAL position returned')
    return { timeline: Number(row.timeline), lsn }
  }

  #ended = false

  end(): void {
    this.#ended = true
    this.#prober?.end()
    this.#prober = null
    this.#node = null
  }
}
