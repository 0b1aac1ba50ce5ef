import { NoPrimaryError } from '../errors.js'
import type { ClusterNode } from './node.js'

interface PrimaryWaiter {
  resolve: (node: ClusterNode) => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

/**
 * The set of nodes and which one is primary now. The single place that changes the
 * primary, so "never write to two primaries" is decided here and nowhere else.
 */
export class Topology {
  readonly #nodes: ClusterNode[] = []
  #primary: ClusterNode | null = null
  #waiters = new Set<PrimaryWaiter>()
  /** The current primary's timeline (the last one known while no primary is): follows it both ways. */
  #timeline = 0
  /** Highest timeline any primary of this cluster was seen on in this process. */
  #highestTimeline = 0
  /** The cluster's `system_identifier`, once a primary established it. */
  #systemIdentifier: string | null = null
  #ended = false

  get nodes(): readonly ClusterNode[] {
    return this.#nodes
  }

  get primary(): ClusterNode | null {
    return this.#primary
  }

  /** Timeline of the current primary (0 before the first probe). */
  get timeline(): number {
    return this.#timeline
  }

  /** Highest primary timeline seen in this process (0 before the first probe). */
  get highestTimeline(): number {
    return this.#highestTimeline
  }

  /** The cluster's `system_identifier` (null until a primary is known). */
  get systemIdentifier(): string | null {
    return this.#systemIdentifier
  }

  /** Fixes the cluster's identity; the first one stays (a node of another cluster never replaces it). */
  establishIdentity(systemIdentifier: string | null): void {
    if (this.#systemIdentifier === null && systemIdentifier !== null)
      this.#systemIdentifier = systemIdentifier
  }

  /**
   * The primary's timeline as its probe read it, up or down: an HA manager may re-elect a
   * leader on an older timeline, and then that one is the cluster's. When it moves, every
   * replica is measured again against it before it takes reads. Returns true when it moved.
   */
  noteTimeline(timeline: number | null): boolean {
    if (timeline === null || timeline === this.#timeline) return false
    this.#timeline = timeline
    if (timeline > this.#highestTimeline) this.#highestTimeline = timeline
    for (const node of this.#nodes) if (node !== this.#primary) node.unmeasure()
    return true
  }

  add(node: ClusterNode): void {
    this.#nodes.push(node)
    if (node.role === 'primary' && this.#primary === null) this.#primary = node
  }

  remove(node: ClusterNode): void {
    const i = this.#nodes.indexOf(node)
    if (i >= 0) this.#nodes.splice(i, 1)
    if (this.#primary === node) this.#primary = null
  }

  find(name: string): ClusterNode | undefined {
    return this.#nodes.find((n) => n.name === name)
  }

  /**
   * Makes `node` the primary (or none). Every other node that claimed the role loses it. A new
   * primary voids what was measured against the old one: every other node takes reads again
   * only after a probe measured it against this one (it may be ahead of it, or on a timeline
   * it abandoned), and divergence is judged afresh.
   */
  setPrimary(node: ClusterNode | null): void {
    const changed = node !== this.#primary
    this.#primary = node
    if (changed && node !== null) {
      for (const other of this.#nodes) {
        if (other === node) continue
        other.unmeasure()
        other.diverged = false
      }
    }
    for (const other of this.#nodes) {
      if (other !== node && other.role === 'primary') other.role = 'unknown'
    }
    if (node !== null) {
      node.role = 'primary'
      node.fenced = false
      node.lagging = false
      node.lagBytes = 0
      node.lagMs = 0
      node.diverged = false
      this.establishIdentity(node.systemIdentifier)
      if (node.timelineExact) this.noteTimeline(node.timeline)
      for (const waiter of this.#waiters) {
        clearTimeout(waiter.timer)
        waiter.resolve(node)
      }
      this.#waiters.clear()
    }
  }

  /** The primary now, or the next one within `timeoutMs`, else {@link NoPrimaryError}. */
  waitForPrimary(timeoutMs: number, reason: string): Promise<ClusterNode> {
    if (this.#primary !== null) return Promise.resolve(this.#primary)
    if (this.#ended) return Promise.reject(new NoPrimaryError('no primary: the cluster has been ended', 0))
    return new Promise<ClusterNode>((resolve, reject) => {
      const waiter: PrimaryWaiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.#waiters.delete(waiter)
          reject(
            new NoPrimaryError(
              `no writable primary found within failover.timeoutMs=${timeoutMs} ms (${reason})`,
              timeoutMs,
            ),
          )
        }, timeoutMs),
      }
      waiter.timer.unref()
      this.#waiters.add(waiter)
    })
  }

  end(): void {
    this.#ended = true
    for (const waiter of this.#waiters) {
      clearTimeout(waiter.timer)
      waiter.reject(new NoPrimaryError('no primary: the cluster has been ended', 0))
    }
    this.#waiters.clear()
  }
}
