import { lookup } from 'node:dns/promises'
import type { Cluster } from 'pgsplit'

const LOOPBACK = new Set(['localhost', '127.0.0.1', '::1'])
const RESOLVE_TTL_MS = 60_000

/**
 * Names the node that ran a query from what the server said about itself:
 * `host(inet_server_addr())` and `inet_server_port()`, selected with the query.
 *
 * A node matches when its configured port is the server's port and its host is the server's
 * address (a host name is resolved; localhost and loopback addresses are one). Nothing else
 * counts as a match: behind port mappings (Docker from the host) or proxies the server sees
 * other addresses than the app dials, and the answer is then the server's own `addr:port`
 * rather than a guess.
 */
export class ServerNames {
  readonly #db: Cluster
  readonly #resolved = new Map<string, { at: number; addresses: Promise<string[]> }>()

  constructor(db: Cluster) {
    this.#db = db
  }

  #addresses(host: string): Promise<string[]> {
    const cached = this.#resolved.get(host)
    if (cached !== undefined && Date.now() - cached.at < RESOLVE_TTL_MS) return cached.addresses
    const addresses = lookup(host, { all: true })
      .then((list) => list.map((a) => a.address))
      .catch(() => [])
    this.#resolved.set(host, { at: Date.now(), addresses })
    return addresses
  }

  async #sameHost(configured: string, reported: string | null): Promise<boolean> {
    if (reported === null) return false
    if (configured === reported) return true
    if (LOOPBACK.has(reported))
      return LOOPBACK.has(configured) || (await this.#addresses(configured)).some((a) => LOOPBACK.has(a))
    return (await this.#addresses(configured)).includes(reported)
  }

  /** The cluster's name for the server at `addr:port`, or `addr:port` when no node is it for sure. */
  async nameOf(port: number, addr: string | null): Promise<string> {
    const candidates = this.#db.topology().nodes.filter((n) => n.port === port)
    const matches: string[] = []
    for (const node of candidates) {
      if (await this.#sameHost(node.host, addr)) matches.push(node.name)
    }
    if (matches.length === 1 && matches[0] !== undefined) return matches[0]
    // A Unix socket has no address: inet_server_addr() is NULL.
    return `${addr ?? 'socket'}:${port}`
  }
}
