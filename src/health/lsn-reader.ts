import type { ClusterNode } from '../pools/node.js'
import { parseLsn } from '../pools/node.js'
import type { WriteToken } from '../router/consistency.js'
import { NodeProber } from './probe.js'

/** Page header sizes of 64-bit builds: `SizeOfXLogShortPHD` and `SizeOfXLogLongPHD` (first page of a segment). */
const SHORT_PAGE_HEADER = 24n
const LONG_PAGE_HEADER = 40n

/**
 * The end of the last WAL record inserted, from `pg_current_wal_insert_lsn()`. That function
 * returns where the NEXT record will start: right after a page boundary this is past the new
 * page's header (24 bytes, or 40 at a segment start), a position no replica replays to until
 * more WAL is written (seen: insert 0/4000028, write and replay 0/4000000 after a segment
 * switch). A record never ends inside a page header, so the header is taken off.
 *
 * ```ts
 * insertLsnToRecordEnd(0x4000028n, 40n, 8192) // 0x4000000n
 * ```
 */
export function insertLsnToRecordEnd(insertLsn: bigint, segmentOffset: bigint, blockSize: number): bigint {
  const block = BigInt(blockSize)
  const header = segmentOffset < block ? LONG_PAGE_HEADER : SHORT_PAGE_HEADER
  return insertLsn % block === header ? insertLsn - header : insertLsn
}

/**
 * The SQL of one token read: the insert position and the timeline (from the WAL file name, which
 * follows a promotion at once; the name's timeline part is the server's, whatever the LSN).
 * Flat, one call per function: a subquery to evaluate the LSN once cost ~20-30 us of planning
 * per read on the server; the page-header correction needs only the sizes, read once per primary.
 */
export const TOKEN_SQL = `/* pgsplit token */ SELECT pg_current_wal_insert_lsn()::text AS lsn,
  ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS timeline`

/** {@link TOKEN_SQL} plus the WAL block and segment sizes: the first read from a primary. */
export const TOKEN_SQL_WITH_SIZES = `/* pgsplit token */ SELECT pg_current_wal_insert_lsn()::text AS lsn,
  ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS timeline,
  current_setting('wal_block_size')::int AS block_size,
  pg_size_bytes(current_setting('wal_segment_size'))::text AS segment_size`

interface WalSizes {
  block: number
  segment: bigint
}

/**
 * Reads the primary's WAL position after writes, for causal tokens, on a connection of its own
 * (never a user's pooled connection, so a write's client goes back to the pool at once).
 *
 * Concurrent writes share one round trip: a read that was sent after a write's commit was
 * acknowledged serves that write and every other write acknowledged before it was sent.
 *
 * The position is the end of the last INSERTED record ({@link insertLsnToRecordEnd}), not
 * `pg_current_wal_lsn()` (the write pointer): under `synchronous_commit = off` a commit is
 * acknowledged while its record may still sit in WAL buffers behind the write pointer (19 of 20
 * read-after-write reads were stale with it). A commit record is inserted before the commit
 * returns in every mode, so the insert position is at or past it in `off`, `local`,
 * `remote_write`, `on` and `remote_apply` alike, and it costs the same single round trip. Under
 * `off` a replica only receives it once the WAL writer has written it (`wal_writer_delay`,
 * 200 ms by default), so causal reads wait longer or go to the primary more often.
 */
export class LsnReader {
  #node: ClusterNode | null = null
  #prober: NodeProber | null = null
  #inFlight: Promise<WriteToken> | null = null
  #queued: Promise<WriteToken> | null = null
  readonly #timeoutMs: number
  #rounds = 0
  #latest: WriteToken | null = null
  #sizes: WalSizes | null = null

  constructor(timeoutMs: number) {
    this.#timeoutMs = timeoutMs
  }

  /** Round trips made so far (the benchmark reports how many writes shared each). */
  get rounds(): number {
    return this.#rounds
  }

  /**
   * The latest position read from `primary`, without a round trip; `null` before the first read
   * of it (positions of an earlier primary never count: it may have been on another timeline).
   */
  latestOf(primary: ClusterNode): WriteToken | null {
    return this.#node === primary ? this.#latest : null
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
      this.#latest = null
      this.#sizes = null
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
    const known = this.#sizes
    const rows = await prober.query<{
      lsn: string
      timeline: number
      block_size?: number
      segment_size?: string
    }>(known === null ? TOKEN_SQL_WITH_SIZES : TOKEN_SQL)
    const row = rows[0]
    const lsn = parseLsn(row?.lsn)
    if (row === undefined || lsn === null) throw new Error('no WAL position returned')
    const sizes = known ?? { block: Number(row.block_size), segment: BigInt(row.segment_size ?? '0') }
    if (!(sizes.block > 0) || sizes.segment <= 0n) throw new Error('no WAL block or segment size returned')
    const token = {
      timeline: Number(row.timeline),
      lsn: insertLsnToRecordEnd(lsn, lsn % sizes.segment, sizes.block),
    }
    // Only a read of the primary still current may move the cached position or set the sizes.
    if (prober === this.#prober) {
      this.#sizes = sizes
      if (laterOrEqual(token, this.#latest)) this.#latest = token
    }
    return token
  }

  #ended = false

  end(): void {
    this.#ended = true
    this.#prober?.end()
    this.#prober = null
    this.#node = null
  }
}

function laterOrEqual(a: WriteToken, b: WriteToken | null): boolean {
  return b === null || a.timeline > b.timeline || (a.timeline === b.timeline && a.lsn >= b.lsn)
}
