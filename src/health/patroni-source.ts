import type { NodeInput } from '../config.js'
import { getPatroniCluster, type PatroniAuth, type PatroniClusterState } from './patroni-rest.js'
import { memberInput, type SourceMember, type SourceView, type TopologySource } from './topology-source.js'

/** What `createCluster({ patroni })` takes, normalized. */
export interface PatroniSourceOptions {
  readonly urls: readonly string[]
  readonly auth: PatroniAuth | undefined
  /** Poll period of `GET /cluster`. */
  readonly intervalMs: number
  /** Bound of one REST call. */
  readonly timeoutMs: number
  /** Connection settings (user, password, database, TLS) for members pgsplit does not know yet. */
  readonly template: NodeInput
}

/**
 * Patroni's REST API as the topology authority: polls `GET /cluster` every `intervalMs` (an
 * answer takes a few ms), from the endpoint that answered last, trying the others in turn when it
 * does not. Unhealthy when no endpoint answered in one read; healthy again at the next answer.
 */
export class PatroniSource implements TopologySource {
  readonly kind = 'patroni'
  readonly authoritative = true
  readonly #opts: PatroniSourceOptions
  #view: SourceView | null = null
  #healthy = true
  #lastError: string | null = null
  /** Index in `urls` of the endpoint that answered last: asked first next time. */
  #preferred = 0
  #timer: NodeJS.Timeout | null = null
  #running: Promise<void> | null = null
  #ended = false
  #onView: (view: SourceView) => void = () => {}
  #onHealth: (healthy: boolean, reason: string) => void = () => {}

  constructor(opts: PatroniSourceOptions) {
    this.#opts = opts
  }

  get healthy(): boolean {
    return this.#healthy
  }

  get lastError(): string | null {
    return this.#lastError
  }

  current(): SourceView | null {
    return this.#view
  }

  start(onView: (view: SourceView) => void, onHealth: (healthy: boolean, reason: string) => void): void {
    this.#onView = onView
    this.#onHealth = onHealth
    void this.refresh()
  }

  refresh(): Promise<void> {
    if (this.#ended) return Promise.resolve()
    this.#running ??= this.#readOnce().finally(() => {
      this.#running = null
      this.#schedule()
    })
    return this.#running
  }

  #schedule(): void {
    if (this.#ended) return
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = setTimeout(() => {
      this.#timer = null
      void this.refresh()
    }, this.#opts.intervalMs)
    this.#timer.unref()
  }

  async #readOnce(): Promise<void> {
    const { urls } = this.#opts
    const errors: string[] = []
    for (let k = 0; k < urls.length && !this.#ended; k++) {
      const i = (this.#preferred + k) % urls.length
      let state: PatroniClusterState
      try {
        state = await getPatroniCluster(urls[i]!, { auth: this.#opts.auth, timeoutMs: this.#opts.timeoutMs })
      } catch (err) {
        errors.push(err instanceof Error ? err.message : String(err))
        continue
      }
      if (this.#ended) return
      this.#preferred = i
      this.#view = this.#toView(state)
      this.#lastError = null
      if (!this.#healthy) {
        this.#healthy = true
        this.#onHealth(true, `Patroni REST API ${urls[i]} answers again: following Patroni's leader`)
      }
      this.#onView(this.#view)
      return
    }
    if (this.#ended) return
    this.#lastError = errors.join('; ')
    if (this.#healthy) {
      this.#healthy = false
      this.#onHealth(
        false,
        `no Patroni REST endpoint answered (${this.#lastError}): falling back to pgsplit's own discovery`,
      )
    }
  }

  #toView(state: PatroniClusterState): SourceView {
    const members: SourceMember[] = []
    let leader: string | null = null
    for (const m of state.members) {
      // A member whose server address Patroni does not know yet cannot be connected to.
      if (typeof m.host !== 'string' || typeof m.port !== 'number') continue
      const isLeader = m.role === 'leader'
      // A leader whose server is not running is no leader to write to (Patroni says so in `state`).
      if (isLeader && (m.state === 'running' || m.state === 'streaming')) leader = m.name
      members.push({
        name: m.name,
        input: memberInput(this.#opts.template, m.host, m.port, m.name),
        host: m.host,
        port: m.port,
        role: isLeader ? 'leader' : 'replica',
        state: m.state,
        timeline: typeof m.timeline === 'number' ? m.timeline : null,
        lagBytes: typeof m.lag === 'number' ? m.lag : null,
        noLoadBalance: m.tags?.noloadbalance === true,
        noFailover: m.tags?.nofailover === true,
      })
    }
    return { leader, members, at: Date.now() }
  }

  end(): void {
    this.#ended = true
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
  }
}
