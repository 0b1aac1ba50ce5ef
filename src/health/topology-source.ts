import type { NodeInput } from '../config.js'

/** One member as a topology source lists it. */
export interface SourceMember {
  /** The source's name for it (Patroni's member name); a new node takes this name. */
  readonly name: string
  /** How to connect to it when pgsplit does not know it yet. */
  readonly input: NodeInput
  readonly host: string
  readonly port: number
  /** What the source says it is; pgsplit's own probe still decides what it does. */
  readonly role: 'leader' | 'replica' | 'unknown'
  readonly state: string | null
  readonly timeline: number | null
  readonly lagBytes: number | null
  /** Patroni's `noloadbalance` tag: takes no reads. */
  readonly noLoadBalance: boolean
  /** Patroni's `nofailover` tag (shown, not acted on: Patroni decides promotions). */
  readonly noFailover: boolean
}

/** What a source said at its last answer. */
export interface SourceView {
  /** Name of the member the source holds as leader, or null (none now, or not an authority). */
  readonly leader: string | null
  readonly members: readonly SourceMember[]
  /** `Date.now()` of the answer. */
  readonly at: number
}

/**
 * Where the node list (and, for an authority, the leader) comes from: Patroni's REST API, a
 * user function, ... The cluster follows it with a {@link TopologyFollower}.
 */
export interface TopologySource {
  /** `'patroni'`, `'function'`: named in events and `topology()`. */
  readonly kind: string
  /** An authority (Patroni): only its leader may be the primary, while it answers. */
  readonly authoritative: boolean
  /** Starts reading; `onView` after each good answer, `onHealth` when answering starts or stops. */
  start(onView: (view: SourceView) => void, onHealth: (healthy: boolean, reason: string) => void): void
  /** Reads again now (a failover is suspected); resolves after that answer or failure. */
  refresh(): Promise<void>
  /** The last good answer, or null before the first. */
  current(): SourceView | null
  /** False after a read in which no endpoint answered (until one does again). */
  readonly healthy: boolean
  /** Last failure, for `topology()` (no password). */
  readonly lastError: string | null
  end(): void
}

/** `nodes: async () => [...]`: the user's function, re-read every `intervalMs` and on failover. */
export class FunctionSource implements TopologySource {
  readonly kind = 'function'
  readonly authoritative = false
  readonly #read: () => Promise<NodeInput[]>
  readonly #intervalMs: number
  readonly #timeoutMs: number
  readonly #describe: (inputs: unknown) => { name: string; host: string; port: number }[]
  #view: SourceView | null = null
  #healthy = true
  #lastError: string | null = null
  #timer: NodeJS.Timeout | null = null
  #running: Promise<void> | null = null
  #ended = false
  #onView: (view: SourceView) => void = () => {}
  #onHealth: (healthy: boolean, reason: string) => void = () => {}

  constructor(
    read: () => Promise<NodeInput[]>,
    opts: {
      intervalMs: number
      timeoutMs: number
      /** Name and address of each input, as the config normalizes the list (throws on a bad one). */
      describe: (inputs: unknown) => { name: string; host: string; port: number }[]
    },
  ) {
    this.#read = read
    this.#intervalMs = opts.intervalMs
    this.#timeoutMs = opts.timeoutMs
    this.#describe = opts.describe
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
    }, this.#intervalMs)
    this.#timer.unref()
  }

  async #readOnce(): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    try {
      const inputs = await Promise.race([
        Promise.resolve().then(() => this.#read()),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`nodes() did not answer within ${this.#timeoutMs} ms`)),
            this.#timeoutMs,
          )
        }),
      ])
      const described = this.#describe(inputs)
      const members = described.map(({ name, host, port }, i): SourceMember => {
        return {
          name,
          input: inputs[i]!,
          host,
          port,
          role: 'unknown',
          state: null,
          timeline: null,
          lagBytes: null,
          noLoadBalance: false,
          noFailover: false,
        }
      })
      if (this.#ended) return
      this.#view = { leader: null, members, at: Date.now() }
      this.#lastError = null
      if (!this.#healthy) {
        this.#healthy = true
        this.#onHealth(true, 'nodes() answered again')
      }
      this.#onView(this.#view)
    } catch (err) {
      this.#lastError = err instanceof Error ? err.message : String(err)
      if (this.#healthy && !this.#ended) {
        this.#healthy = false
        this.#onHealth(false, `nodes() failed: ${this.#lastError}; keeping the last node list`)
      }
    } finally {
      clearTimeout(timer)
    }
  }

  end(): void {
    this.#ended = true
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
  }
}

/**
 * A node input for a member at `host:port`: the template's user, password, database and TLS,
 * with the member's address and name. A URL template gets its host and port replaced (pg lets a
 * connection string win over separate fields, so both must agree).
 */
export function memberInput(template: NodeInput, host: string, port: number, name: string): NodeInput {
  const withAddress = (url: string): string => {
    const u = new URL(url)
    u.hostname = host.includes(':') ? `[${host}]` : host
    u.port = String(port)
    return u.toString()
  }
  if (typeof template === 'string') return { url: withAddress(template), name }
  const { name: _name, url, connectionString, ...rest } = template
  // A URL carries the address alone: host/port next to it are refused by the config (pg would
  // take the URL's and ignore them).
  if (url !== undefined) return { ...rest, url: withAddress(url), name }
  if (connectionString !== undefined)
    return { ...rest, connectionString: withAddress(connectionString), name }
  return { ...rest, host, port, name }
}
