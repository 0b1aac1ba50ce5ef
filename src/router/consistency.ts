import { AsyncLocalStorage } from 'node:async_hooks'
import type { ConsistencyMode } from '../config.js'
import { InvalidTokenError } from '../errors.js'
import { formatLsn, parseLsn } from '../pools/node.js'

/**
 * A position in the primary's WAL at or past the commit record of a write: a replica whose
 * replay LSN has reached `lsn` on `timeline` shows the write.
 */
export interface WriteToken {
  readonly timeline: number
  readonly lsn: bigint
}

/** `{ timeline: 1, lsn: 0x3000148n }` -> `'1:0/3000148'`: short enough for a header or cookie. */
export function formatToken(token: WriteToken): string {
  return `${token.timeline}:${formatLsn(token.lsn)}`
}

/** Parses {@link formatToken}'s output; throws {@link InvalidTokenError} on anything else. */
export function parseToken(text: string): WriteToken {
  if (typeof text !== 'string' || text.length > 40) throw new InvalidTokenError(text)
  const colon = text.indexOf(':')
  const timeline = Number(text.slice(0, colon))
  if (colon <= 0 || !Number.isInteger(timeline) || timeline < 1) throw new InvalidTokenError(text)
  try {
    const lsn = parseLsn(text.slice(colon + 1))
    if (lsn === null) throw new InvalidTokenError(text)
    return { timeline, lsn }
  } catch {
    throw new InvalidTokenError(text)
  }
}

/** The later of two tokens (a newer timeline wins over any LSN of an older one). */
export function laterToken(a: WriteToken | null, b: WriteToken | null): WriteToken | null {
  if (a === null) return b
  if (b === null) return a
  if (a.timeline !== b.timeline) return a.timeline > b.timeline ? a : b
  return a.lsn >= b.lsn ? a : b
}

/**
 * What one causal scope knows of its own writes: the latest token, a token still being fetched,
 * and (sticky mode) until when reads stay on the primary.
 */
export class CausalSession {
  #token: WriteToken | null = null
  #pending = new Set<Promise<WriteToken | null>>()
  /** Reads go to the primary until this time (sticky mode, or a write whose token is unknown). */
  primaryUntil = 0

  /**
   * Records a write. `fetch` reads a position past its commit (null if it could not be read);
   * it is called lazily, by the first {@link token} call that needs it. A later write replaces an
   * unfetched earlier one: the later position covers both.
   */
  recordWrite(fetch: () => Promise<WriteToken | null>, unknownTokenPinMs: number): void {
    this.#unknownTokenPinMs = unknownTokenPinMs
    if (this.eager) {
      // An explicit scope (a request) nearly always reads or hands out its token: fetch it now,
      // while the caller goes on, so the read does not wait a round trip for it.
      this.#unfetched = null
      this.#track(fetch())
    } else {
      this.#unfetched = fetch
    }
  }

  /** Fetch tokens right after each write (explicit sessions) instead of at the first read. */
  readonly eager: boolean

  constructor(options: { eager?: boolean } = {}) {
    this.eager = options.eager === true
  }

  #unfetched: (() => Promise<WriteToken | null>) | null = null
  #unknownTokenPinMs = 0

  #track(token: Promise<WriteToken | null>): void {
    const pinMs = this.#unknownTokenPinMs
    this.#pending.add(token)
    token
      .then((t) => {
        if (t === null) this.primaryUntil = Math.max(this.primaryUntil, Date.now() + pinMs)
        else this.#token = laterToken(this.#token, t)
      })
      .catch(() => {
        this.primaryUntil = Math.max(this.primaryUntil, Date.now() + pinMs)
      })
      .finally(() => this.#pending.delete(token))
  }

  /** Adds a token received from elsewhere (another request, another instance). */
  observe(token: WriteToken): void {
    this.#token = laterToken(this.#token, token)
  }

  pinToPrimary(untilMs: number): void {
    this.primaryUntil = Math.max(this.primaryUntil, untilMs)
  }

  /**
   * Waits for the tokens being fetched now (of writes acknowledged before this call), then
   * returns the latest. Writes that start later are not waited for: under a steady write
   * load a reader must not starve.
   */
  async token(): Promise<WriteToken | null> {
    if (this.#unfetched !== null) {
      const fetch = this.#unfetched
      this.#unfetched = null
      this.#track(fetch())
    }
    if (this.#pending.size > 0) await Promise.allSettled([...this.#pending])
    return this.#token
  }

  /** True when a write's token is not known yet: a causal read must call {@link token}. */
  get needsWait(): boolean {
    return this.#unfetched !== null || this.#pending.size > 0
  }

  /** Forgets the settled token (the schema barrier, once every replica has replayed it). */
  clear(): void {
    this.#token = null
  }

  /** The latest token known without waiting. */
  get settledToken(): WriteToken | null {
    return this.#token
  }
}

/** Routing state carried through async calls: `onPrimary`, `session`, per-scope consistency. */
export interface Scope {
  forcePrimary: boolean
  session: CausalSession | null
  consistency: ConsistencyMode | null
}

export const scopeStorage = new AsyncLocalStorage<Scope>()

export function currentScope(): Scope | undefined {
  return scopeStorage.getStore()
}

export function runInScope<T>(patch: Partial<Scope>, fn: () => T): T {
  const parent = scopeStorage.getStore()
  return scopeStorage.run(
    {
      forcePrimary: patch.forcePrimary ?? parent?.forcePrimary ?? false,
      session: patch.session !== undefined ? patch.session : (parent?.session ?? null),
      consistency: patch.consistency !== undefined ? patch.consistency : (parent?.consistency ?? null),
    },
    fn,
  )
}

export function modeName(mode: ConsistencyMode): 'eventual' | 'causal' | 'sticky' {
  return typeof mode === 'string' ? mode : 'sticky'
}
