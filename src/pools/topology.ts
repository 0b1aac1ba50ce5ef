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
  /** Highest primary timeline ever seen: a writable node below it is a stale old primary. */
  #timeline = 0
  #ended = false

  get nodes(): readonly ClusterNode[] {
    return this.#nodes
  }

  get primary(): ClusterNode | null {
    return this.#primary
  }

  /** Timeline of the newest primary seen (0 before the first probe). */
  get timeline(): number {
    return this.#timeline
  }

  noteTimeline(timeline: number | null): void {
    if (timeline !== null && timeline > this.#timeline) this.#timeline = timeline
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

  /** Makes `node` the primary (or none). Every other node that claimed the role loses it. */
  setPrimary(node: ClusterNode | null): void {
    this.#primary = node
    for (const other of this.#nodes) {
      if (other !== node && other.role === 'primary') other.role = 'unknown'
    }
    if (node !== null) {
      node.role = 'primary'
      node.fenced = false
      node.lagging = false
      node.lagBytes = 0
      node.lagMs = 0
      this.noteTimeline(node.timeline)
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
