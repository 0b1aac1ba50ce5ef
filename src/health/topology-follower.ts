import { type NodeInput, type NormalizedConfig, normalizeNodeList } from '../config.js'
import type { ClusterNode } from '../pools/node.js'
import { PatroniSource } from './patroni-source.js'
import { FunctionSource, type SourceMember, type SourceView, type TopologySource } from './topology-source.js'

/**
 * The follower of the config's topology source: Patroni (`patroni`), the user's function
 * (`nodes: async () => [...]`), or null when the node list is static.
 */
export function createTopologyFollower(
  config: NormalizedConfig,
  host: FollowerHost,
): TopologyFollower | null {
  const p = config.patroni
  if (p !== undefined) {
    return new TopologyFollower(
      new PatroniSource({
        urls: p.urls,
        auth: p.username === undefined ? undefined : { username: p.username, password: p.password },
        intervalMs: p.intervalMs,
        timeoutMs: p.timeoutMs,
        template: p.template,
      }),
      host,
    )
  }
  if (config.nodeSource !== undefined) {
    return new TopologyFollower(
      new FunctionSource(config.nodeSource, {
        intervalMs: config.discovery.intervalMs,
        timeoutMs: config.failover.timeoutMs,
        // The config's own check of a node list (each node, no server or name twice).
        describe: (inputs) =>
          normalizeNodeList(inputs, config.pool).map((n) => ({
            name: n.name,
            host: n.address.host,
            port: n.address.port,
          })),
      }),
      host,
    )
  }
  return null
}

/** What the follower needs of the cluster: its nodes and the few operations it drives. */
export interface FollowerHost {
  nodes(): readonly ClusterNode[]
  primary(): ClusterNode | null
  addNode(input: NodeInput): Promise<unknown>
  removeNode(name: string): Promise<void>
  /** Look for the primary now (discovery). */
  rediscover(reason: string): void
  /** Stop writing to the current primary at once (the authority no longer holds it as leader). */
  revokePrimary(reason: string): void
  /** The source started or stopped answering, or could not apply a change. */
  sourceEvent(payload: { source: string; healthy: boolean; reason: string }): void
}

/** What `topology()` shows of the source. Plain data, no password. */
export interface SourceSnapshot {
  kind: string
  healthy: boolean
  /** True while pgsplit decides the primary by its own probes alone (the source does not answer). */
  fallback: boolean
  /** The pgsplit node the source holds as leader (authorities only). */
  leader: string | null
  lastAnswerAt: string | null
  lastError: string | null
  members: {
    name: string
    node: string | null
    role: string
    state: string | null
    timeline: number | null
    lagBytes: number | null
    noLoadBalance: boolean
    noFailover: boolean
  }[]
}

/**
 * Applies what a {@link TopologySource} says to the cluster: members appear (`addNode`) and
 * leave (`removeNode`), `noloadbalance` members take no reads, and, for an authority, the
 * leader is the only node that may be primary: a leader change revokes the primary at once and
 * starts discovery. While the source does not answer, `leader()` is `undefined` and discovery
 * decides alone.
 */
export class TopologyFollower {
  readonly #source: TopologySource
  readonly #host: FollowerHost
  /** Nodes a member was matched to once: they leave when the source stops listing them. */
  readonly #followed = new Set<string>()
  /** Member name -> why adding it failed last: said once (the source is re-read every 100 ms). */
  readonly #addFailures = new Map<string, string>()
  #applying: Promise<void> | null = null
  #pending: SourceView | null = null
  #ended = false

  constructor(source: TopologySource, host: FollowerHost) {
    this.#source = source
    this.#host = host
  }

  /** Starts following; resolves after the first read and the membership it brought (never rejects). */
  async start(): Promise<void> {
    this.#source.start(
      (view) => this.#onView(view),
      (healthy, reason) => {
        this.#host.sourceEvent({ source: this.#source.kind, healthy, reason })
        // Either way the rule for the primary changed: look again.
        this.#host.rediscover(reason)
      },
    )
    await this.refresh()
  }

  /** Re-reads the source now (a failover is suspected); resolves once what it said is applied. */
  async refresh(): Promise<void> {
    await this.#source.refresh()
    // Bounded: each addNode is bounded by the probe timeout; a newer view waits at most once more.
    for (let i = 0; i < 3 && this.#applying !== null; i++) await this.#applying
  }

  /** The cause of a WriteOutcomeUnknownError for a commit on a node the authority does not hold as leader. */
  notLeaderError(node: string): Error {
    const leader = this.leader()
    return new Error(
      `${node} answered, but ${this.#source.kind} holds ${leader ?? 'no member'} as leader now: the commit may be rewound`,
    )
  }

  /**
   * The node the authority holds as leader: a name, null (no leader now), or undefined (no
   * authority in force: not one, or it does not answer). Discovery's primary rule.
   */
  leader(): string | null | undefined {
    if (!this.#source.authoritative || !this.#source.healthy) return undefined
    const view = this.#source.current()
    if (view === null) return undefined
    if (view.leader === null) return null
    const member = view.members.find((m) => m.name === view.leader)
    return member === undefined ? null : (this.#nodeOf(member)?.name ?? null)
  }

  /** False when an authority in force does not hold `node` as leader: its answer is not an acknowledgement. */
  mayAcknowledge(node: string): boolean {
    const leader = this.leader()
    return leader === undefined || leader === node
  }

  snapshot(): SourceSnapshot {
    const view = this.#source.current()
    const fallback = !this.#source.healthy || view === null
    return {
      kind: this.#source.kind,
      healthy: this.#source.healthy,
      fallback: this.#source.authoritative && fallback,
      leader: this.leader() ?? null,
      lastAnswerAt: view === null ? null : new Date(view.at).toISOString(),
      lastError: this.#source.lastError,
      members: (view?.members ?? []).map((m) => ({
        name: m.name,
        node: this.#nodeOf(m)?.name ?? null,
        role: m.role,
        state: m.state,
        timeline: m.timeline,
        lagBytes: m.lagBytes,
        noLoadBalance: m.noLoadBalance,
        noFailover: m.noFailover,
      })),
    }
  }

  #nodeOf(member: SourceMember): ClusterNode | undefined {
    return this.#host.nodes().find((n) => n.host === member.host && n.port === member.port)
  }

  #onView(view: SourceView): void {
    if (this.#ended) return
    this.#checkLeader(view)
    for (const node of this.#host.nodes()) {
      const member = view.members.find((m) => m.host === node.host && m.port === node.port)
      node.noLoadBalance = member?.noLoadBalance === true
    }
    // Membership changes run one at a time; a view that arrives meanwhile waits (only the newest).
    if (this.#applying !== null) {
      this.#pending = view
      return
    }
    this.#applying = this.#applyMembers(view).finally(() => {
      this.#applying = null
      const next = this.#pending
      this.#pending = null
      if (next !== null && !this.#ended) this.#onView(next)
    })
  }

  /** Synchronous, on every answer: a primary the authority does not hold as leader stops taking writes now. */
  #checkLeader(view: SourceView): void {
    if (!this.#source.authoritative) return
    const leader = this.leader()
    if (leader === undefined) return
    const primary = this.#host.primary()
    if (primary !== null && primary.name !== leader) {
      this.#host.revokePrimary(
        leader === null
          ? `Patroni holds no leader now (was ${primary.name})`
          : `Patroni holds ${leader} as leader, not ${primary.name}`,
      )
    }
    if (leader !== null && primary?.name !== leader) {
      this.#host.rediscover(`Patroni's leader is ${view.leader}`)
    }
  }

  async #applyMembers(view: SourceView): Promise<void> {
    for (const member of view.members) {
      const node = this.#nodeOf(member)
      if (node !== undefined) {
        this.#followed.add(node.name)
        continue
      }
      try {
        await this.#host.addNode(member.input)
        const added = this.#nodeOf(member)
        if (added !== undefined) {
          this.#followed.add(added.name)
          added.noLoadBalance = member.noLoadBalance
        }
        this.#addFailures.delete(member.name)
      } catch (err) {
        const reason = `could not add member ${member.name}: ${err instanceof Error ? err.message : String(err)}`
        if (this.#addFailures.get(member.name) !== reason) {
          this.#addFailures.set(member.name, reason)
          this.#host.sourceEvent({ source: this.#source.kind, healthy: this.#source.healthy, reason })
        }
      }
      if (this.#ended) return
    }
    for (const name of this.#addFailures.keys()) {
      if (!view.members.some((m) => m.name === name)) this.#addFailures.delete(name)
    }
    const listed = new Set(view.members.map((m) => `${m.host}:${m.port}`))
    for (const node of [...this.#host.nodes()]) {
      if (!this.#followed.has(node.name) || listed.has(`${node.host}:${node.port}`)) continue
      // The primary leaves once it is not primary any more (the next answer tries again).
      if (node === this.#host.primary()) continue
      this.#followed.delete(node.name)
      await this.#host.removeNode(node.name).catch(() => {})
      if (this.#ended) return
    }
  }

  end(): void {
    this.#ended = true
    this.#source.end()
  }
}
