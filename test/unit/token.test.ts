import { describe, expect, it } from 'vitest'
import { normalizeConfig } from '../../src/config.js'
import { ConfigError, InvalidTokenError, TokenAheadError } from '../../src/errors.js'
import { insertLsnToRecordEnd } from '../../src/health/lsn-reader.js'
import { formatToken, laterToken, parseToken, type WriteToken } from '../../src/router/consistency.js'
import { MAX_TOKEN_LENGTH, parseTokenText, TokenCodec } from '../../src/router/token-codec.js'
import { TokenGuard } from '../../src/router/token-guard.js'

const SECRET_A = 'a-secret-of-32-characters-------'
const SECRET_B = 'another-secret-16+'

function reasonOf(fn: () => unknown): string {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidTokenError)
    return (err as InvalidTokenError).reason
  }
  throw new Error('did not throw')
}

describe('formatToken / parseToken', () => {
  it('round-trips', () => {
    const tokens: WriteToken[] = [
      { timeline: 1, lsn: 0x3000148n },
      { timeline: 2, lsn: 0n },
      { timeline: 17, lsn: 0x16_b374_d848n },
      { timeline: 4_294_967_295, lsn: 0xffff_ffff_ffff_ffffn },
    ]
    for (const token of tokens) {
      expect(parseToken(formatToken(token))).toEqual(token)
    }
  })

  it('prints as PostgreSQL prints LSNs', () => {
    expect(formatToken({ timeline: 1, lsn: 0x3000148n })).toBe('1:0/3000148')
    expect(formatToken({ timeline: 3, lsn: 0x16_b374_d848n })).toBe('3:16/B374D848')
    // Lower-case hex is accepted and printed upper-case.
    expect(formatToken(parseToken('3:16/b374d848'))).toBe('3:16/B374D848')
    // PostgreSQL's pg_lsn input takes zero-padded halves too.
    expect(parseToken('1:00000000/00000001')).toEqual({ timeline: 1, lsn: 1n })
  })

  it('rejects anything else with InvalidTokenError', () => {
    const bad = [
      '',
      'abc',
      '1',
      '1:',
      ':0/1',
      '0:0/1',
      '-1:0/1',
      '+1:0/1',
      '1.5:0/1',
      'x:0/1',
      // Number() accepted these two: hex and exponent timelines.
      '0x1:0/1',
      '1e3:0/1',
      '01:0/1',
      ' 1:0/1',
      '1 :0/1',
      '1:0/1 ',
      '1: 0/1',
      '1:0/ 1',
      '1:+0/1',
      '1:-0/1',
      '1:0x0/1',
      '1_0:0/1',
      'Infinity:0/1',
      '4294967296:0/1',
      '99999999999:0/1',
      '1:0/',
      '1:/1',
      '1:01',
      '1:0/XYZ',
      '1:0/123456789',
      '1:123456789/0',
      '1:0/1/2',
      '1:0/1:2',
      '1:0/1\n',
      '1:0/1\u0000',
      '１:0/1',
      `1:0/${'1'.repeat(60)}`,
      `${'9'.repeat(100)}:0/1`,
      // A signed token is not a plain one: parseToken does not check signatures.
      `1:0/1.${'A'.repeat(43)}`,
    ]
    for (const text of bad) {
      expect(() => parseToken(text), JSON.stringify(text)).toThrow(InvalidTokenError)
    }
    for (const value of [undefined, null, 42, {}, ['1:0/1']]) {
      expect(() => parseToken(value as unknown as string)).toThrow(InvalidTokenError)
    }
  })

  it('the error has a stable code and does not echo a long input', () => {
    try {
      parseToken(`nonsense-${'x'.repeat(100)}`)
      expect.unreachable()
    } catch (err) {
      expect(err).toBeInstanceOf(InvalidTokenError)
      expect((err as InvalidTokenError).code).toBe('PGSPLIT_INVALID_TOKEN')
      expect((err as InvalidTokenError).reason).toBe('malformed')
      expect((err as Error).message.length).toBeLessThan(200)
    }
  })

  it('bounds the text it parses', () => {
    const longest = `4294967295:FFFFFFFF/FFFFFFFF.${'A'.repeat(43)}`
    expect(longest.length).toBe(MAX_TOKEN_LENGTH)
    expect(parseTokenText(longest).signature).toBe('A'.repeat(43))
    expect(() => parseTokenText(`${longest}A`)).toThrow(InvalidTokenError)
    expect(() => parseTokenText(`1:0/1.${'A'.repeat(42)}`)).toThrow(InvalidTokenError)
    expect(() => parseTokenText(`1:0/1.${'A'.repeat(42)}=`)).toThrow(InvalidTokenError)
    expect(() => parseTokenText(`1:0/1.${'A'.repeat(42)}+`)).toThrow(InvalidTokenError)
    expect(() => parseTokenText('1:0/1.')).toThrow(InvalidTokenError)
  })
})

describe('TokenCodec: signed tokens', () => {
  const token: WriteToken = { timeline: 1, lsn: 0x3000148n }

  it('without secrets: plain tokens; a signature on an incoming one is ignored', () => {
    const codec = new TokenCodec()
    expect(codec.signs).toBe(false)
    expect(codec.format(token)).toBe('1:0/3000148')
    expect(codec.parse('1:0/3000148')).toEqual(token)
    const signed = new TokenCodec({ secrets: [SECRET_A], requireSigned: false }).format(token)
    expect(codec.parse(signed)).toEqual(token)
  })

  it('signs with HMAC-SHA256 in base64url and verifies', () => {
    const codec = new TokenCodec({ secrets: [SECRET_A], requireSigned: false })
    const text = codec.format(token)
    expect(text).toMatch(/^1:0\/3000148\.[A-Za-z0-9_-]{43}$/)
    expect(codec.parse(text)).toEqual(token)
    // Deterministic: the same position and secret give the same text (the plugin compares them).
    expect(codec.format(token)).toBe(text)
    // The MAC covers the canonical text: a lower-case spelling of the same position verifies.
    expect(codec.parse(text.replace('3000148', '3000148'.toLowerCase()))).toEqual(token)
    // Plain tokens are still accepted unless requireSigned.
    expect(codec.parse('1:0/3000148')).toEqual(token)
  })

  it('refuses every tampered token: any changed character, another position, another secret', () => {
    const codec = new TokenCodec({ secrets: [SECRET_A], requireSigned: true })
    const text = codec.format(token)
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
    const dot = text.indexOf('.')
    for (let i = dot + 1; i < text.length; i++) {
      const c = text[i]!
      const other = alphabet[(alphabet.indexOf(c) + 1) % alphabet.length]!
      const tampered = text.slice(0, i) + other + text.slice(i + 1)
      expect(
        reasonOf(() => codec.parse(tampered)),
        tampered,
      ).toBe('bad-signature')
    }
    const signature = text.slice(dot)
    expect(reasonOf(() => codec.parse(`1:0/3000149${signature}`))).toBe('bad-signature')
    expect(reasonOf(() => codec.parse(`2:0/3000148${signature}`))).toBe('bad-signature')
    expect(reasonOf(() => codec.parse(`999:FFFFFFFF/FFFFFFFF${signature}`))).toBe('bad-signature')
    const foreign = new TokenCodec({ secrets: [SECRET_B], requireSigned: true }).format(token)
    expect(reasonOf(() => codec.parse(foreign))).toBe('bad-signature')
  })

  it('requireSigned refuses unsigned tokens', () => {
    const codec = new TokenCodec({ secrets: [SECRET_A], requireSigned: true })
    expect(reasonOf(() => codec.parse('1:0/3000148'))).toBe('unsigned')
    expect(reasonOf(() => codec.parse('0x1:0/1'))).toBe('malformed')
  })

  it('rotation: the first secret signs, every secret verifies', () => {
    const old = new TokenCodec({ secrets: [SECRET_A], requireSigned: true })
    const rotated = new TokenCodec({ secrets: [SECRET_B, SECRET_A], requireSigned: true })
    const retired = new TokenCodec({ secrets: [SECRET_B], requireSigned: true })
    const issuedBefore = old.format(token)
    expect(rotated.parse(issuedBefore)).toEqual(token)
    const issuedAfter = rotated.format(token)
    expect(issuedAfter).not.toBe(issuedBefore)
    expect(retired.parse(issuedAfter)).toEqual(token)
    expect(reasonOf(() => retired.parse(issuedBefore))).toBe('bad-signature')
  })
})

describe('the tokens option', () => {
  const base = { primary: 'postgres://u:pw@127.0.0.1:5432/db' }

  it('normalizes { secrets, requireSigned }', () => {
    expect(normalizeConfig(base).tokens).toBeUndefined()
    expect(normalizeConfig({ ...base, tokens: { secrets: [SECRET_A] } }).tokens).toEqual({
      secrets: [SECRET_A],
      requireSigned: false,
    })
    expect(
      normalizeConfig({ ...base, tokens: { secrets: [SECRET_A, SECRET_B], requireSigned: true } }).tokens,
    ).toEqual({ secrets: [SECRET_A, SECRET_B], requireSigned: true })
  })

  it('refuses bad values with a ConfigError naming the field, never echoing a secret', () => {
    const cases: [unknown, string][] = [
      [null, 'tokens'],
      ['secret', 'tokens'],
      [{}, 'tokens.secrets'],
      [{ secrets: [] }, 'tokens.secrets'],
      [{ secrets: 'x'.repeat(20) }, 'tokens.secrets'],
      [{ secrets: ['short-secret'] }, 'tokens.secrets[0]'],
      [{ secrets: [SECRET_A, 'short-secret'] }, 'tokens.secrets[1]'],
      [{ secrets: [SECRET_A, 42] }, 'tokens.secrets[1]'],
      [{ secrets: [SECRET_A], requireSigned: 'yes' }, 'tokens.requireSigned'],
      [{ secrets: [SECRET_A], sign: true }, 'tokens.sign'],
    ]
    for (const [tokens, field] of cases) {
      try {
        normalizeConfig({ ...base, tokens } as never)
        expect.unreachable(JSON.stringify(tokens))
      } catch (err) {
        expect(err, JSON.stringify(tokens)).toBeInstanceOf(ConfigError)
        expect((err as ConfigError).field).toBe(field)
        expect((err as Error).message).not.toContain('short-secret')
        expect((err as Error).message).not.toContain(SECRET_A)
      }
    }
  })
})

describe('insertLsnToRecordEnd: the page-header correction of pg_current_wal_insert_lsn()', () => {
  it('takes off the long header at a segment start (measured: insert 0/4000028, replay 0/4000000)', () => {
    expect(insertLsnToRecordEnd(0x4000028n, 40n, 8192)).toBe(0x4000000n)
    expect(insertLsnToRecordEnd(0x1_0000_0028n, 40n, 8192)).toBe(0x1_0000_0000n)
  })

  it('takes off the short header at any other page start', () => {
    expect(insertLsnToRecordEnd(0x401a018n, 0x1a018n, 8192)).toBe(0x401a000n)
    expect(insertLsnToRecordEnd(0x2018n, 0x2018n, 8192)).toBe(0x2000n)
  })

  it('leaves every other position alone (a record never ends inside a page header)', () => {
    expect(insertLsnToRecordEnd(0x3000310n, 0x310n, 8192)).toBe(0x3000310n)
    expect(insertLsnToRecordEnd(0x401a030n, 0x1a030n, 8192)).toBe(0x401a030n)
    // 40 bytes into a page that is not a segment's first: a record can end there.
    expect(insertLsnToRecordEnd(0x4002028n, 0x2028n, 8192)).toBe(0x4002028n)
    // 24 bytes into a segment's first page is inside its long header: never a record end.
    expect(insertLsnToRecordEnd(0x4000018n, 0x18n, 8192)).toBe(0x4000018n)
  })

  it('follows the server block size', () => {
    expect(insertLsnToRecordEnd(0x4018n, 0x4018n, 16384)).toBe(0x4000n)
    expect(insertLsnToRecordEnd(0x2018n, 0x2018n, 16384)).toBe(0x2018n)
  })
})

describe('TokenGuard: the decision (positions given by hand; the coalescing is tested on a real cluster)', () => {
  const codec = new TokenCodec()
  const t = (timeline: number, lsn: bigint): WriteToken => ({ timeline, lsn })
  function guard(known: WriteToken | null, fresh: WriteToken | Error) {
    let freshCalls = 0
    const g = new TokenGuard(codec, {
      known: () => known,
      fresh: () => {
        freshCalls++
        return fresh instanceof Error ? Promise.reject(fresh) : Promise.resolve(fresh)
      },
    })
    return { g, calls: () => freshCalls }
  }

  it('a token within the known position costs no fresh read', async () => {
    const { g, calls } = guard(t(2, 100n), t(2, 200n))
    await expect(g.admit('2:0/64')).resolves.toEqual(t(2, 100n))
    await expect(g.admit('2:0/10')).resolves.toEqual(t(2, 16n))
    // An older timeline: covered (the read path sends it to the primary).
    await expect(g.admit('1:FF/FFFFFFFF')).resolves.toEqual(t(1, 0xff_ffff_ffffn))
    expect(calls()).toBe(0)
  })

  it('a token ahead of the known position is checked against a fresh one', async () => {
    const { g, calls } = guard(t(2, 100n), t(2, 200n))
    await expect(g.admit('2:0/C8')).resolves.toEqual(t(2, 200n))
    expect(calls()).toBe(1)
    const ahead = g.admit('2:0/C9')
    await expect(ahead).rejects.toBeInstanceOf(TokenAheadError)
    await expect(ahead).rejects.toMatchObject({ reason: 'ahead', code: 'PGSPLIT_TOKEN_AHEAD' })
    await expect(g.admit('999:FFFFFFFF/FFFFFFFF')).rejects.toMatchObject({ reason: 'future-timeline' })
    await expect(g.admit('3:0/1')).rejects.toMatchObject({ reason: 'future-timeline' })
  })

  it('nothing known yet: every token is checked fresh', async () => {
    const { g, calls } = guard(null, t(1, 50n))
    await expect(g.admit('1:0/32')).resolves.toEqual(t(1, 50n))
    await expect(g.admit('1:0/33')).rejects.toBeInstanceOf(TokenAheadError)
    expect(calls()).toBe(2)
  })

  it('passes on the error when the primary cannot be asked (neither trusted nor called forged)', async () => {
    const down = new Error('no primary')
    const { g } = guard(t(1, 10n), down)
    await expect(g.admit('1:0/B')).rejects.toBe(down)
    await expect(g.admit('1:0/A')).resolves.toEqual(t(1, 10n))
  })

  it('malformed text is refused before any I/O', async () => {
    const { g, calls } = guard(null, t(1, 50n))
    await expect(g.admit('0x1:0/1')).rejects.toMatchObject({ reason: 'malformed' })
    await expect(g.admit('1e3:0/1')).rejects.toMatchObject({ reason: 'malformed' })
    expect(calls()).toBe(0)
  })
})

describe('laterToken', () => {
  const t = (timeline: number, lsn: bigint): WriteToken => ({ timeline, lsn })

  it('null is older than anything', () => {
    expect(laterToken(null, null)).toBeNull()
    expect(laterToken(null, t(1, 5n))).toEqual(t(1, 5n))
    expect(laterToken(t(1, 5n), null)).toEqual(t(1, 5n))
  })

  it('same timeline: the higher LSN', () => {
    expect(laterToken(t(1, 5n), t(1, 9n))).toEqual(t(1, 9n))
    expect(laterToken(t(1, 9n), t(1, 5n))).toEqual(t(1, 9n))
  })

  it('a newer timeline wins over any LSN of an older one', () => {
    expect(laterToken(t(1, 0xffff_ffffn), t(2, 1n))).toEqual(t(2, 1n))
    expect(laterToken(t(3, 1n), t(2, 0xffff_ffffn))).toEqual(t(3, 1n))
  })
})
