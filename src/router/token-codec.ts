import { createHmac, createSecretKey, type KeyObject, timingSafeEqual } from 'node:crypto'
import { ConfigError, InvalidTokenError } from '../errors.js'
import type { WriteToken } from './consistency.js'

/**
 * A token's text: `<timeline>:<hi>/<lo>`, optionally `.<signature>`. The timeline is decimal
 * without sign, exponent, leading zeros or junk (`0x1`, `1e3`, ` 1` are refused, where
 * `Number()` took them); the LSN is PostgreSQL's `X/Y` with 1-8 hex digits each; the signature
 * is an HMAC-SHA256 in base64url (43 characters). Nothing longer than this is ever parsed.
 */
const TOKEN_PATTERN = /^([1-9][0-9]{0,9}):([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})(?:\.([A-Za-z0-9_-]{43}))?$/

/** Longest token text: 10 + 1 + 8 + 1 + 8 for the position, 1 + 43 for the signature. */
export const MAX_TOKEN_LENGTH = 72

const MAX_TIMELINE = 0xffff_ffff

/** Secrets shorter than this are refused by the config: an HMAC is only as strong as its key. */
export const MIN_SECRET_LENGTH = 16

/** A token's position and, when it carries one, its signature (not verified here). */
export interface TokenText {
  readonly token: WriteToken
  readonly signature: string | null
}

/** Strict syntax check of a token's text; throws {@link InvalidTokenError} (reason `'malformed'`). */
export function parseTokenText(text: string): TokenText {
  if (typeof text !== 'string' || text.length > MAX_TOKEN_LENGTH) throw new InvalidTokenError(text)
  const m = TOKEN_PATTERN.exec(text)
  if (m === null) throw new InvalidTokenError(text)
  const timeline = Number(m[1])
  if (timeline > MAX_TIMELINE) throw new InvalidTokenError(text)
  const lsn = (BigInt(`0x${m[2]}`) << 32n) | BigInt(`0x${m[3]}`)
  return { token: { timeline, lsn }, signature: m[4] ?? null }
}

/** `{ timeline: 1, lsn: 0x3000148n }` -> `'1:0/3000148'` (upper-case hex, as PostgreSQL prints LSNs). */
export function formatPlainToken(token: WriteToken): string {
  const hi = (token.lsn >> 32n).toString(16).toUpperCase()
  const lo = (token.lsn & 0xffff_ffffn).toString(16).toUpperCase()
  return `${token.timeline}:${hi}/${lo}`
}

/** What the cluster's `tokens` option says, normalized. */
export interface TokenSigningConfig {
  /** The first signs; every one verifies (rotation: put the new secret first, drop the old later). */
  readonly secrets: readonly string[]
  /** Refuse tokens without a signature. */
  readonly requireSigned: boolean
}

/**
 * Turns positions into the text handed to clients and back. Without secrets, tokens are plain
 * and a signature on an incoming one is ignored (it cannot be checked, and plain tokens are
 * accepted anyway). With secrets, tokens are signed with the first and any secret verifies; the
 * MAC covers the canonical text, so `1:0/3000148` and `1:0/3000148`'s lower-case spelling carry
 * the same signature.
 *
 * ```ts
 * const codec = new TokenCodec({ secrets: [process.env.TOKEN_SECRET!], requireSigned: true })
 * const text = codec.format({ timeline: 1, lsn: 0x3000148n }) // '1:0/3000148.Jk3...'
 * codec.parse(text) // { timeline: 1, lsn: 0x3000148n }
 * ```
 */
export class TokenCodec {
  readonly #keys: readonly KeyObject[]
  readonly #requireSigned: boolean

  constructor(config: TokenSigningConfig | null = null) {
    this.#keys = (config?.secrets ?? []).map((s) => createSecretKey(Buffer.from(s, 'utf8')))
    this.#requireSigned = config?.requireSigned === true
  }

  /** True when tokens are signed. */
  get signs(): boolean {
    return this.#keys.length > 0
  }

  /** The token's text, signed with the first secret when secrets are configured. */
  format(token: WriteToken): string {
    const plain = formatPlainToken(token)
    const key = this.#keys[0]
    return key === undefined ? plain : `${plain}.${mac(key, plain).toString('base64url')}`
  }

  /**
   * Parses and verifies a token from outside. Throws {@link InvalidTokenError}: `'malformed'`,
   * `'unsigned'` (no signature while `requireSigned`), `'bad-signature'` (no secret made it).
   */
  parse(text: string): WriteToken {
    const { token, signature } = parseTokenText(text)
    if (signature === null) {
      if (this.#requireSigned) {
        throw new InvalidTokenError(text, 'unsigned', 'it is not signed and tokens.requireSigned is set')
      }
      return token
    }
    if (this.#keys.length === 0) return token
    // The text, not the decoded bytes: the last base64url character has 2 spare bits, and a
    // token whose text was changed must never pass.
    const given = Buffer.from(signature, 'latin1')
    const plain = formatPlainToken(token)
    for (const key of this.#keys) {
      // Constant-time: the comparison must not tell a forger how many characters were right.
      if (timingSafeEqual(Buffer.from(mac(key, plain).toString('base64url'), 'latin1'), given)) return token
    }
    throw new InvalidTokenError(text, 'bad-signature', 'its signature was not made by any configured secret')
  }
}

/** Domain-separated, so a MAC made with the same secret for something else never passes. */
function mac(key: KeyObject, plain: string): Buffer {
  return createHmac('sha256', key).update(`pgsplit-token-v1:${plain}`).digest()
}

/**
 * Validates the cluster's `tokens` option (`{ secrets, requireSigned? }`); `null` when absent.
 * Throws a {@link ConfigError} naming the field; never echoes a secret, not even a short one.
 */
export function normalizeTokens(field: string, value: unknown): TokenSigningConfig | null {
  if (value === undefined) return null
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ConfigError(field, 'must be an object { secrets, requireSigned? }')
  }
  for (const key of Object.keys(value)) {
    if (key !== 'secrets' && key !== 'requireSigned') {
      throw new ConfigError(`${field}.${key}`, 'is not a known option')
    }
  }
  const { secrets, requireSigned } = value as { secrets?: unknown; requireSigned?: unknown }
  if (!Array.isArray(secrets) || secrets.length === 0) {
    throw new ConfigError(
      `${field}.secrets`,
      'must be a non-empty array of strings (the first signs, all verify)',
    )
  }
  secrets.forEach((secret: unknown, i) => {
    if (typeof secret !== 'string') {
      throw new ConfigError(`${field}.secrets[${i}]`, `must be a string, got ${typeof secret}`)
    }
    if (secret.length < MIN_SECRET_LENGTH) {
      throw new ConfigError(
        `${field}.secrets[${i}]`,
        `must be at least ${MIN_SECRET_LENGTH} characters, got ${secret.length}`,
      )
    }
  })
  if (requireSigned !== undefined && typeof requireSigned !== 'boolean') {
    throw new ConfigError(`${field}.requireSigned`, `must be a boolean, got ${typeof requireSigned}`)
  }
  return { secrets: [...(secrets as string[])], requireSigned: requireSigned === true }
}
