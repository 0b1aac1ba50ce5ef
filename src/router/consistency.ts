import { AsyncLocalStorage } from 'node:async_hooks'
import type { ConsistencyMode } from '../config.js'
import { InvalidTokenError } from '../errors.js'
import { formatPlainToken, parseTokenText } from './token-codec.js'

/**
 * A position in the primary's WAL at or past the commit record of a write: a replica whose
 * replay LSN has reached `lsn` on `timeline` shows the write.
 */
export interface WriteToken {
  readonly timeline: number
  readonly lsn: bigint
}

/**
 * `{ timeline: 1, lsn: 0x3000148n }` -> `'1:0/3000148'`: short enough for a header or cookie.
 * Unsigned; `db.lastWriteToken()` signs when `tokens.secrets` is set.
 */
export function formatToken(token: WriteToken): string {
  return formatPlainToken(token)
}

/**
 * Parses {@link formatToken}'s output strictly: a decimal timeline (no sign, exponent, hex or
 * leading zeros), a hex `X/Y` LSN, nothing else. Throws {@link InvalidTokenError} on anything
 * else, a signed token included (its signature is checked by the cluster, see `db.verifyToken`).
 */
export function parseToken(text: string): WriteToken {
  const { token, signature } = parseTokenText(text)
  if (signature !== null) throw new InvalidTokenError(text)
  return token
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

  /** Adds a token this process trusts (one it read itself, or one already checked). */
  observe(token: WriteToken): void {
    this.#token = laterToken(this.#token, token)
  }

  /**
   * Adds a token from outside while it is being checked (`TokenGuard#check`): reads wait for
   * the check, and if it fails every later {@link token} call rejects with its error, so no
   * read of this scope runs as if the token were not there.
   */
  admit(check: Promise<WriteToken>): void {
    const settled = check.then(
      (token) => {
        this.#token = laterToken(this.#token, token)
        return token
      },
      (err: unknown) => {
        this.#refused ??= err
        return null
      },
    )
    this.#pending.add(settled)
    void settled.finally(() => this.#pending.delete(settled))
  }

  #refused: unknown = null

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
    if (this.#refused !== null) throw this.#refused
    return this.#token
  }

  /**
   * True when a write's token is not known yet (or a token from outside was refused): a causal
   * read must call {@link token}.
   */
  get needsWait(): boolean {
    return this.#unfetched !== null || this.#pending.size > 0 || this.#refused !== null
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
