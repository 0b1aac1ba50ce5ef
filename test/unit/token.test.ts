import { describe, expect, it } from 'vitest'
import { InvalidTokenError } from '../../src/errors.js'
import { formatToken, laterToken, parseToken, type WriteToken } from '../../src/router/consistency.js'

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
      '1.5:0/1',
      'x:0/1',
      '1:0/',
      '1:/1',
      '1:01',
      '1:0/XYZ',
      '1:0/123456789',
      '1:0/1/2',
      `1:0/${'1'.repeat(60)}`,
    ]
    for (const text of bad) {
      expect(() => parseToken(text), text).toThrow(InvalidTokenError)
    }
    for (const value of [undefined, null, 42, {}]) {
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
      expect((err as Error).message.length).toBeLessThan(200)
    }
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
