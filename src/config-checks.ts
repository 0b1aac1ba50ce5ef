import { ConfigError } from './errors.js'
import { redact } from './pools/connection-string.js'

/** Node's timers hold at most 2^31-1 ms; a longer delay silently becomes 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1

/** PostgreSQL's millisecond settings (statement_timeout, ...) are int4. */
export const MAX_SERVER_MS = 2 ** 31 - 1

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** The last segment of a field path names a secret: its value is never shown, only its type. */
function isSecretPath(field: string): boolean {
  return /(?:^|\.)(?:password|secrets)(?:\[\d+\])?$/i.test(field)
}

/** A value as an error message may show it: strings redacted, objects by kind, secrets by type. */
export function describe(value: unknown, field = ''): string {
  if (isSecretPath(field)) {
    if (typeof value === 'string') return `a string of ${value.length} characters`
    return value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`
  }
  // A wrong value may still be a connection string: never echo its password.
  if (typeof value === 'string') {
    const shown = value.length > 80 ? `${value.slice(0, 77)}...` : value
    return JSON.stringify(redact(shown))
  }
  if (typeof value === 'number' || typeof value === 'boolean' || value === null || value === undefined) {
    return String(value)
  }
  if (typeof value === 'bigint') return `${value}n (a bigint)`
  if (Array.isArray(value)) return 'an array'
  if (typeof value === 'function') return 'a function'
  return typeof value === 'object' ? 'an object' : typeof value
}

/** Throws the one kind of error every check raises: what the field must be, and what it was. */
export function fail(field: string, expected: string, value: unknown): never {
  throw new ConfigError(field, `must be ${expected}, got ${describe(value, field)}`, { expected })
}

function formatMs(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000} h`
  if (ms % 60_000 === 0) return `${ms / 60_000} min`
  if (ms % 1_000 === 0) return `${ms / 1_000} s`
  return `${ms} ms`
}

export interface IntegerRange {
  min: number
  max: number
}

/** An integer within `[min, max]`; `undefined` gives `fallback`. */
export function integer<F extends number | undefined>(
  field: string,
  value: unknown,
  range: IntegerRange,
  fallback: F,
): number | F {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < range.min || value > range.max) {
    fail(field, `an integer from ${range.min} to ${range.max}`, value)
  }
  return value
}

/**
 * A duration in milliseconds, an integer within `[min, max]` (`max` never above what a timer
 * holds); `undefined` gives `fallback`.
 */
export function duration<F extends number | undefined>(
  field: string,
  value: unknown,
  range: IntegerRange,
  fallback: F,
): number | F {
  if (value === undefined) return fallback
  const max = Math.min(range.max, MAX_TIMER_MS)
  if (typeof value !== 'number' || !Number.isInteger(value) || value < range.min || value > max) {
    fail(field, `a duration in whole milliseconds from ${range.min} to ${max} (${formatMs(max)})`, value)
  }
  return value
}

/** A finite number within `[min, max]`. */
export function finite<F extends number | undefined>(
  field: string,
  value: unknown,
  range: IntegerRange,
  fallback: F,
): number | F {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isFinite(value) || value < range.min || value > range.max) {
    fail(field, `a finite number from ${range.min} to ${range.max}`, value)
  }
  return value
}

export function oneOf<T extends string, F extends T | undefined>(
  field: string,
  value: unknown,
  allowed: readonly T[],
  fallback: F,
): T | F {
  if (value === undefined) return fallback
  if (typeof value !== 'string' || !allowed.includes(value as T)) {
    const hint = typeof value === 'string' ? suggest(value, allowed) : undefined
    const expected = `one of ${allowed.map((a) => `'${a}'`).join(', ')}`
    throw new ConfigError(
      field,
      `must be ${expected}, got ${describe(value, field)}${hint === undefined ? '' : ` (did you mean '${hint}'?)`}`,
      { expected },
    )
  }
  return value as T
}

export function boolean<F extends boolean | undefined>(
  field: string,
  value: unknown,
  fallback: F,
): boolean | F {
  if (value === undefined) return fallback
  if (typeof value !== 'boolean') fail(field, 'true or false', value)
  return value
}

export function string(
  field: string,
  value: unknown,
  options: { nonEmpty?: boolean; maxLength?: number } = {},
): string | undefined {
  if (value === undefined) return undefined
  const max = options.maxLength ?? 10_000
  if (typeof value !== 'string' || value.length > max || (options.nonEmpty === true && value.trim() === '')) {
    fail(
      field,
      `a${options.nonEmpty === true ? ' non-empty' : ''} string of at most ${max} characters`,
      value,
    )
  }
  if (value.includes('\0')) fail(field, 'a string without NUL characters', value)
  return value
}

export function func(field: string, value: unknown): void {
  if (value !== undefined && typeof value !== 'function') fail(field, 'a function', value)
}

/** An object whose keys are all in `known`; `undefined` gives `{}`. */
export function object(
  field: string,
  value: unknown,
  known: readonly string[],
  what = `an object with ${known.join(', ')}`,
): Record<string, unknown> {
  if (value === undefined) return {}
  if (!isPlainObject(value)) fail(field, what, value)
  knownKeys(field, value, known)
  return value
}

/** Refuses a key not in `known`, suggesting the closest known one. */
export function knownKeys(
  field: string,
  value: Record<string, unknown>,
  known: readonly string[],
  extraHint = '',
): void {
  for (const key of Object.keys(value)) {
    if (known.includes(key)) continue
    const hint = suggest(key, known)
    const path = field === '' ? key : `${field}.${key}`
    const listed = known.length <= 16 ? `; known: ${known.join(', ')}` : ''
    throw new ConfigError(
      path,
      `is not a known option${hint === undefined ? '' : ` (did you mean ${hint}?)`}${listed}${extraHint}`,
      { expected: hint === undefined ? `one of ${known.join(', ')}` : hint },
    )
  }
}

/** `connectionTimeoutMs`, `query-timeout`, `QueryTimeout` all fold to the same letters. */
function fold(name: string): string {
  return name.toLowerCase().replace(/[_\-\s]/g, '')
}

/** Optimal string alignment distance (Levenshtein plus adjacent transpositions). */
function distance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  )
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      const row = d[i]!
      row[j] = Math.min(d[i - 1]![j]! + 1, row[j - 1]! + 1, d[i - 1]![j - 1]! + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        row[j] = Math.min(row[j]!, d[i - 2]![j - 2]! + 1)
      }
    }
  }
  return d[a.length]![b.length]!
}

/** The known name closest to a mistyped one, when it is close enough to be a typo. */
export function suggest(name: string, known: readonly string[]): string | undefined {
  const folded = fold(name)
  let best: string | undefined
  let bestScore = Number.POSITIVE_INFINITY
  for (const candidate of known) {
    const c = fold(candidate)
    let score = distance(folded, c)
    // connectionTimeout -> connectionTimeoutMillis, user -> username: a common stem is a strong hint.
    const stem = c.slice(0, Math.max(6, c.length - 6))
    if ((folded.length >= 4 && c.startsWith(folded)) || (folded.length >= 6 && folded.startsWith(stem)))
      score = Math.min(score, 1)
    if (score < bestScore) {
      bestScore = score
      best = candidate
    }
  }
  return bestScore <= Math.max(1, Math.floor(folded.length / 3)) ? best : undefined
}
