import { TokenAheadError } from '../errors.js'
import type { WriteToken } from './consistency.js'
import { formatPlainToken, type TokenCodec } from './token-codec.js'

/** Where a {@link TokenGuard} learns the primary's position. */
export interface PrimaryPosition {
  /**
   * The latest position known without a round trip (the monitor's last probe, the last token
   * read): possibly old, never ahead of the primary. `null` when nothing is known yet.
   */
  known(): WriteToken | null
  /**
   * A position read after this call was made (so it covers every write acknowledged before it),
   * shared between concurrent callers. Rejects when the primary cannot be asked.
   */
  fresh(): Promise<WriteToken>
}

/** True when `position` covers `token`: an older timeline, or the same one up to its LSN. */
function covers(position: WriteToken | null, token: WriteToken): boolean {
  if (position === null) return false
  return (
    token.timeline < position.timeline || (token.timeline === position.timeline && token.lsn <= position.lsn)
  )
}

/**
 * The gate for tokens that come from outside this process (`session({ token })`, the `after:`
 * option, the fastify header): parses and verifies them with the codec, and refuses one that
 * points past the primary or to a timeline it has not reached with {@link TokenAheadError},
 * since no write of this cluster made it and waiting for it would only hold a replica
 * connection for `causalWaitMs` per read. Refused, not clamped: a clamped token would look
 * satisfied and serve a read that misses the write the client believes in.
 *
 * A legitimate token from another instance can be ahead of this process's cached view (the
 * monitor's probe is up to one interval old), so a token is only refused after a fresh read of
 * the primary's position; tokens within the cached view cost nothing. Fresh reads are
 * coalesced by {@link PrimaryPosition.fresh}: a burst of forged tokens costs one or two round
 * trips, not one each. When the primary cannot be asked, the error of that read is passed on
 * (the token can neither be trusted nor refused as forged).
 *
 * ```ts
 * const guard = new TokenGuard(codec, { known: () => cached, fresh: () => lsnReader.read(primary) })
 * const token = await guard.admit(request.headers['x-pgsplit-lsn'])
 * ```
 */
export class TokenGuard {
  readonly #codec: TokenCodec
  readonly #position: PrimaryPosition

  constructor(codec: TokenCodec, position: PrimaryPosition) {
    this.#codec = codec
    this.#position = position
  }

  /** Parses and verifies a token's text: syntax and signature only (synchronous, no I/O). */
  parse(text: string): WriteToken {
    return this.#codec.parse(text)
  }

  /** {@link parse}, then {@link check}: the one call for a token from outside. */
  admit(text: string): Promise<WriteToken> {
    let token: WriteToken
    try {
      token = this.#codec.parse(text)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.check(token)
  }

  /** Resolves with `token` when the primary has reached it; rejects with {@link TokenAheadError}. */
  check(token: WriteToken): Promise<WriteToken> {
    if (covers(this.#position.known(), token)) return Promise.resolve(token)
    return this.#position.fresh().then((primary) => {
      if (covers(primary, token)) return token
      throw new TokenAheadError(
        formatPlainToken(token),
        token.timeline > primary.timeline ? 'future-timeline' : 'ahead',
        formatPlainToken(primary),
      )
    })
  }

  /** The token's canonical text (signed with the current secret when secrets are set). */
  format(token: WriteToken): string {
    return this.#codec.format(token)
  }
}
