/**
 * A PostgreSQL lexer that is exactly as precise as read/write routing needs.
 *
 * It does not parse. It only finds where the *code* of a statement is, so that nothing written inside a
 * comment, a string literal ('...', E'...', U&'...', B'...', X'...', N'...'), a dollar-quoted body
 * ($$...$$, $tag$...$tag$) or a quoted identifier ("...", U&"...") can ever look like a keyword or a
 * function call to the classifier. Its rules follow PostgreSQL's own scanner (src/backend/parser/scan.l):
 * nested block comments, `--` comments ending at CR or LF, doubled quotes, backslash escapes only in
 * E'' strings, `$` as an identifier character (so `a$$b` is one identifier), `$n` parameters, and bytes
 * above 0x7F as identifier characters. Keywords and unquoted identifiers are ASCII-lower-cased, as the
 * server does.
 *
 * Anything it cannot close (an unterminated string, comment, quoted identifier or dollar quote) or does
 * not expect outside a string (a backslash) ends the scan with `error` set: the caller treats the
 * statement as a write.
 *
 * @example
 * ```ts
 * const { tokens } = lexSql(`SELECT 'DELETE' FROM "t" -- UPDATE`)
 * tokens.map((t) => t.type) // ['word', 'string', 'word', 'qident']
 * ```
 */

/** `word`: keyword or unquoted identifier; `qident`: quoted identifier; `punct`: one operator character. */
export type TokenType = 'word' | 'qident' | 'string' | 'number' | 'param' | 'punct'

export interface Token {
  readonly type: TokenType
  /**
   * `word`: the text, ASCII-lower-cased; `qident`: the identifier with quotes and escapes removed;
   * `punct`: the character; other types: `''` (their content never matters for routing).
   */
  readonly text: string
}

export interface LexOptions {
  /**
   * Treat backslash as an escape in plain '...' strings, as a server running with
   * `standard_conforming_strings = off` does. Default false (the server default since 9.1).
   */
  backslashEscapes?: boolean
  /** Lower-case text to look for inside comments; `markerInComment` reports whether one holds it. */
  marker?: string
}

export interface LexResult {
  readonly tokens: Token[]
  /** Why the scan stopped early; the tokens are then incomplete. */
  readonly error: string | undefined
  /** A comment contains `options.marker`. */
  readonly markerInComment: boolean
  /**
   * A plain '...' string contains a backslash: its extent depends on `standard_conforming_strings`,
   * so a careful caller lexes once more with the other setting.
   */
  readonly backslashInPlainString: boolean
}

// Character codes the scanner tests for.
const TAB = 9
const LF = 10
const CR = 13
const SPACE = 32
const DQUOTE = 34
const DOLLAR = 36
const AMP = 38
const SQUOTE = 39
const PLUS = 43
const STAR = 42
const MINUS = 45
const DOT = 46
const SLASH = 47
const ZERO = 48
const UPPER_A = 65
const UPPER_Z = 90
const BACKSLASH = 92
const UNDERSCORE = 95

// Character classes of the ASCII range, as bit flags in a table (bytes above 0x7F are identifier chars).
const C_SPACE = 1
const C_DIGIT = 2
const C_IDENT_START = 4
const C_IDENT_CONT = 8
const C_HEX = 16
const charClass = new Uint8Array(128)
for (let c = 0; c < 128; c++) {
  const ch = String.fromCharCode(c)
  let flags = 0
  if (c === SPACE || (c >= TAB && c <= CR)) flags |= C_SPACE
  if (ch >= '0' && ch <= '9') flags |= C_DIGIT | C_IDENT_CONT | C_HEX
  if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || c === UNDERSCORE)
    flags |= C_IDENT_START | C_IDENT_CONT
  if ((ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F') || c === UNDERSCORE) flags |= C_HEX
  if (c === DOLLAR) flags |= C_IDENT_CONT
  charClass[c] = flags
}

/** Whether char code `c` (NaN past the end) has one of the class `flags`; non-ASCII is an identifier char. */
function is(c: number, flags: number): boolean {
  if (c < 128) return (charClass[c]! & flags) !== 0
  return c >= 128 && (flags & (C_IDENT_START | C_IDENT_CONT)) !== 0
}

/** PostgreSQL's downcase_identifier: ASCII letters only (so no Unicode case folding can forge a keyword). */
function asciiLower(s: string): string {
  let out = ''
  for (let k = 0; k < s.length; k++) {
    const c = s.charCodeAt(k)
    out += c >= UPPER_A && c <= UPPER_Z ? String.fromCharCode(c + 32) : s[k]
  }
  return out
}

/**
 * Decode a U&"..." identifier's escapes with the default escape character: `\XXXX`, `\+XXXXXX`, `\\`.
 * Returns undefined for a malformed escape (the server rejects those).
 */
function decodeUnicodeIdent(raw: string): string | undefined {
  if (!raw.includes('\\')) return raw
  let out = ''
  for (let k = 0; k < raw.length; k++) {
    const ch = raw[k]
    if (ch !== '\\') {
      out += ch
      continue
    }
    if (raw[k + 1] === '\\') {
      out += '\\'
      k++
      continue
    }
    const long = raw[k + 1] === '+'
    const hex = long ? raw.slice(k + 2, k + 8) : raw.slice(k + 1, k + 5)
    if (!/^[0-9a-fA-F]+$/.test(hex) || hex.length !== (long ? 6 : 4)) return undefined
    const code = Number.parseInt(hex, 16)
    if (code > 0x10ffff) return undefined
    out += String.fromCodePoint(code)
    k += long ? 7 : 4
  }
  return out
}

/**
 * Scan a '...' body from `from` (just after the opening quote). Returns the index after the closing quote,
 * or -1 when unterminated. `escapes`: a backslash escapes the next character (E'' strings, or plain ones
 * under standard_conforming_strings = off); a doubled quote always stands for one quote.
 */
function scanQuoted(sql: string, from: number, escapes: boolean): number {
  const n = sql.length
  let k = from
  while (k < n) {
    const c = sql.charCodeAt(k)
    if (c === SQUOTE) {
      if (sql.charCodeAt(k + 1) !== SQUOTE) return k + 1
      k += 2
    } else if (c === BACKSLASH && escapes) {
      k += 2
    } else {
      k++
    }
  }
  return -1
}

/** Index of the `"` closing a quoted identifier whose body starts at `from` (`""` is a quote), or -1. */
function scanQuotedIdent(sql: string, from: number): number {
  let k = from
  for (;;) {
    const close = sql.indexOf('"', k)
    if (close < 0) return -1
    if (sql.charCodeAt(close + 1) !== DQUOTE) return close
    k = close + 2
  }
}

/** Index after the block comment opening at `from` (comments nest), or -1. */
function scanBlockComment(sql: string, from: number): number {
  const n = sql.length
  let depth = 1
  let k = from + 2
  while (k < n) {
    const c = sql.charCodeAt(k)
    const d = sql.charCodeAt(k + 1)
    if (c === SLASH && d === STAR) {
      depth++
      k += 2
    } else if (c === STAR && d === SLASH) {
      k += 2
      if (--depth === 0) return k
    } else {
      k++
    }
  }
  return -1
}

/** Index after the numeric literal starting at `from`. */
function scanNumber(sql: string, from: number): number {
  const n = sql.length
  let k = from
  const x = sql.charCodeAt(from + 1) | 0x20
  if (sql.charCodeAt(from) === ZERO && (x === 0x78 || x === 0x6f || x === 0x62) /* 0x 0o 0b */) {
    k += 2
    while (k < n && is(sql.charCodeAt(k), C_HEX)) k++
    return k
  }
  while (k < n && (is(sql.charCodeAt(k), C_DIGIT) || sql.charCodeAt(k) === UNDERSCORE)) k++
  if (sql.charCodeAt(k) === DOT && sql.charCodeAt(k + 1) !== DOT) {
    k++
    while (k < n && (is(sql.charCodeAt(k), C_DIGIT) || sql.charCodeAt(k) === UNDERSCORE)) k++
  }
  if ((sql.charCodeAt(k) | 0x20) === 0x65 /* e */) {
    const sign = sql.charCodeAt(k + 1)
    const first = sign === PLUS || sign === MINUS ? k + 2 : k + 1
    if (is(sql.charCodeAt(first), C_DIGIT)) {
      k = first
      while (k < n && is(sql.charCodeAt(k), C_DIGIT)) k++
    }
  }
  return k
}

const STRING: Token = Object.freeze({ type: 'string', text: '' })
const NUMBER: Token = Object.freeze({ type: 'number', text: '' })
const PARAM: Token = Object.freeze({ type: 'param', text: '' })
/** Punctuation tokens are shared: one frozen object per ASCII character, so callers may compare identity. */
const PUNCT: readonly Token[] = Array.from({ length: 128 }, (_, c) =>
  Object.freeze({ type: 'punct' as const, text: String.fromCharCode(c) }),
)

/** The shared token of an ASCII punctuation character: `tokens[i] === punctToken('(')`. */
export function punctToken(ch: string): Token {
  const token = PUNCT[ch.charCodeAt(0)]
  if (token === undefined || ch.length !== 1) throw new RangeError(`not an ASCII character: ${ch}`)
  return token
}

/**
 * Split `sql` into tokens, dropping whitespace and comments.
 *
 * @example
 * ```ts
 * lexSql('select $1::int /* pgsplit:primary *\/', { marker: 'pgsplit:primary' }).markerInComment // true
 * ```
 */
export function lexSql(sql: string, options: LexOptions = {}): LexResult {
  const tokens: Token[] = []
  const n = sql.length
  const backslashEscapes = options.backslashEscapes === true
  const marker = options.marker
  let markerInComment = false
  let backslashInPlainString = false
  let error: string | undefined
  let i = 0
  // Position of the next backslash, to tell cheaply whether a plain string holds one (-1: none left).
  let nextBackslash = sql.indexOf('\\')
  const holdsBackslash = (from: number, to: number): boolean => {
    if (nextBackslash >= 0 && nextBackslash < from) nextBackslash = sql.indexOf('\\', from)
    return nextBackslash >= 0 && nextBackslash < to
  }

  while (i < n) {
    const c = sql.charCodeAt(i)
    if (c < 128 && (charClass[c]! & C_SPACE) !== 0) {
      i++
      continue
    }
    const next = sql.charCodeAt(i + 1)

    if (c === MINUS && next === MINUS) {
      let k = i + 2
      while (k < n) {
        const d = sql.charCodeAt(k)
        if (d === LF || d === CR) break
        k++
      }
      if (marker !== undefined && !markerInComment) {
        markerInComment = sql
          .slice(i + 2, k)
          .toLowerCase()
          .includes(marker)
      }
      i = k
      continue
    }

    if (c === SLASH && next === STAR) {
      const end = scanBlockComment(sql, i)
      if (end < 0) {
        error = 'unterminated comment'
        break
      }
      if (marker !== undefined && !markerInComment) {
        markerInComment = sql
          .slice(i + 2, end - 2)
          .toLowerCase()
          .includes(marker)
      }
      i = end
      continue
    }

    if (c === SQUOTE) {
      const end = scanQuoted(sql, i + 1, backslashEscapes)
      if (end < 0) {
        error = 'unterminated string'
        break
      }
      if (!backslashInPlainString && !backslashEscapes) backslashInPlainString = holdsBackslash(i + 1, end)
      tokens.push(STRING)
      i = end
      continue
    }

    if (c === DQUOTE) {
      const close = scanQuotedIdent(sql, i + 1)
      if (close < 0) {
        error = 'unterminated quoted identifier'
        break
      }
      const body = sql.slice(i + 1, close)
      tokens.push({ type: 'qident', text: body.includes('"') ? body.replaceAll('""', '"') : body })
      i = close + 1
      continue
    }

    if (is(c, C_IDENT_START)) {
      const lower = c | 0x20
      // A one-letter word glued to a quote is a string prefix: E'..', B'..', X'..', N'..'.
      if (next === SQUOTE && (lower === 0x65 || lower === 0x62 || lower === 0x78 || lower === 0x6e)) {
        const isE = lower === 0x65
        const isN = lower === 0x6e
        // N'' is a plain string to the server (backslash rules included); B'' and X'' never escape.
        const end = scanQuoted(sql, i + 2, isE || (isN && backslashEscapes))
        if (end < 0) {
          error = 'unterminated string'
          break
        }
        if (isN && !backslashInPlainString && !backslashEscapes)
          backslashInPlainString = holdsBackslash(i + 2, end)
        tokens.push(STRING)
        i = end
        continue
      }
      // U&'..' and U&"..": a backslash starts a Unicode escape, never a quote (and the server refuses U&''
      // outright when standard_conforming_strings is off).
      if (lower === 0x75 && next === AMP) {
        const q = sql.charCodeAt(i + 2)
        if (q === SQUOTE) {
          const end = scanQuoted(sql, i + 3, false)
          if (end < 0) {
            error = 'unterminated string'
            break
          }
          tokens.push(STRING)
          i = end
          continue
        }
        if (q === DQUOTE) {
          const close = scanQuotedIdent(sql, i + 3)
          if (close < 0) {
            error = 'unterminated quoted identifier'
            break
          }
          const decoded = decodeUnicodeIdent(sql.slice(i + 3, close).replaceAll('""', '"'))
          if (decoded === undefined) {
            error = 'bad Unicode escape in identifier'
            break
          }
          tokens.push({ type: 'qident', text: decoded })
          i = close + 1
          continue
        }
      }
      let k = i + 1
      let upper = c <= UPPER_Z
      let nonAscii = c >= 128
      while (k < n) {
        const d = sql.charCodeAt(k)
        if (d < 128) {
          if ((charClass[d]! & C_IDENT_CONT) === 0) break
          if (d >= UPPER_A && d <= UPPER_Z) upper = true
        } else {
          nonAscii = true
        }
        k++
      }
      const raw = sql.slice(i, k)
      tokens.push({ type: 'word', text: !upper ? raw : nonAscii ? asciiLower(raw) : raw.toLowerCase() })
      i = k
      continue
    }

    if (is(c, C_DIGIT) || (c === DOT && is(next, C_DIGIT))) {
      // Letters glued after a number start a new token (older servers read `1abc` as `1 AS abc`; newer
      // ones reject it), so `1nextval(` still shows a function call.
      tokens.push(NUMBER)
      i = scanNumber(sql, i)
      continue
    }

    if (c === DOLLAR) {
      if (is(next, C_DIGIT)) {
        let k = i + 1
        while (k < n && is(sql.charCodeAt(k), C_DIGIT)) k++
        tokens.push(PARAM)
        i = k
        continue
      }
      // $tag$ ... $tag$ with an empty or identifier-like tag (without `$`, not starting with a digit).
      let k = i + 1
      if (is(next, C_IDENT_START)) {
        k++
        while (k < n && sql.charCodeAt(k) !== DOLLAR && is(sql.charCodeAt(k), C_IDENT_CONT)) k++
      }
      if (sql.charCodeAt(k) === DOLLAR) {
        const tag = sql.slice(i, k + 1)
        const close = sql.indexOf(tag, k + 1)
        if (close < 0) {
          error = 'unterminated dollar-quoted string'
          break
        }
        tokens.push(STRING)
        i = close + tag.length
        continue
      }
    }

    if (c === BACKSLASH) {
      error = 'backslash outside a string'
      break
    }
    tokens.push(c < 128 ? PUNCT[c]! : { type: 'punct', text: sql[i]! })
    i++
  }
  return { tokens, error, markerInComment, backslashInPlainString }
}
