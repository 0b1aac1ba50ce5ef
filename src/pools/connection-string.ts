import { accessSync, constants } from 'node:fs'
import { ConfigError } from '../errors.js'

/** Where a node lives, parsed once from its connection string or config object. */
export interface NodeAddress {
  host: string
  port: number
  database: string | undefined
  user: string | undefined
}

// The password runs to the '@' that starts the host (URL parsers take the last '@' of the
// authority): a raw '@' inside a password must not leave its tail visible. Any scheme: Patroni's
// REST URLs (http://user:pw@host:8008) carry credentials too.
const URL_PASSWORD = /([a-z][a-z0-9+.-]*:\/\/[^:/@\s]*:)(\S*?)(@)(?=[^@\s/]*(?:[/\s]|$))/gi
const KV_PASSWORD = /(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)/gi

/**
 * Replaces passwords in anything that may hold a connection string (URLs and libpq
 * key=value strings), so that errors, events and logs never carry a secret.
 */
export function redact(text: string): string {
  return text.replace(URL_PASSWORD, '$1***$3').replace(KV_PASSWORD, '$1***')
}

/** URL parameters pg reads (pg-connection-string and pg's ConnectionParameters). */
const PG_URL_PARAMETERS = [
  'host',
  'port',
  'user',
  'password',
  'application_name',
  'fallback_application_name',
  'options',
  'client_encoding',
  'ssl',
  'sslmode',
  'sslcert',
  'sslkey',
  'sslrootcert',
  'sslnegotiation',
  'uselibpqcompat',
  'statement_timeout',
  'lock_timeout',
  'idle_in_transaction_session_timeout',
  'query_timeout',
] as const

/** libpq parameters that pg silently ignores, and what to use instead. */
const IGNORED_BY_PG: Record<string, string> = {
  connect_timeout: 'pg ignores it in a URL: use pool.connectionTimeoutMillis',
  target_session_attrs: 'pg ignores it: pgsplit finds the primary itself (nodes: [...])',
  dbname: 'pg ignores it in a URL: put the database in the path (postgres://host/dbname)',
  keepalives: 'pg ignores it in a URL: use pool.keepAlive',
  keepalives_idle: 'pg ignores it in a URL: use pool.keepAliveInitialDelayMillis',
  sslpassword: 'pg ignores it: decrypt the key yourself and pass pool.ssl.key (and ssl.passphrase)',
  channel_binding: 'pg ignores it in a URL: use pool.enableChannelBinding',
  gssencmode: 'pg does not support GSSAPI encryption',
  service: 'pg does not read pg_service.conf',
  replication: 'pgsplit does not open replication connections',
}

const SSLMODES = ['disable', 'prefer', 'require', 'verify-ca', 'verify-full', 'no-verify'] as const

function paramError(field: string, name: string, problem: string, expected: string): never {
  throw new ConfigError(`${field}?${name}`, problem, { expected })
}

/** Checks the URL parameters pg will act on; refuses the ones it would silently ignore. */
function checkParameters(field: string, params: URLSearchParams): void {
  const seen = new Set<string>()
  for (const [name, value] of params) {
    if (seen.has(name))
      paramError(field, name, 'is given twice (pg would take the last one silently)', 'each parameter once')
    seen.add(name)
    const ignored = IGNORED_BY_PG[name]
    if (ignored !== undefined) paramError(field, name, `is not supported: ${ignored}`, ignored)
    if (!(PG_URL_PARAMETERS as readonly string[]).includes(name)) {
      const lower = PG_URL_PARAMETERS.find((p) => p === name.toLowerCase())
      paramError(
        field,
        name,
        `is not a URL parameter pg reads${lower === undefined ? '' : ` (did you mean ${lower}?)`}; known: ${PG_URL_PARAMETERS.join(', ')}`,
        lower ?? `one of ${PG_URL_PARAMETERS.join(', ')}`,
      )
    }
    const shown = name === 'password' ? '***' : JSON.stringify(value.slice(0, 60))
    switch (name) {
      case 'sslmode':
        if (value === 'allow')
          paramError(
            field,
            name,
            "=allow is not supported by pg: use 'prefer' or 'disable'",
            SSLMODES.join(', '),
          )
        if (!(SSLMODES as readonly string[]).includes(value))
          paramError(field, name, `must be one of ${SSLMODES.join(', ')}, got ${shown}`, SSLMODES.join(', '))
        break
      case 'ssl':
        if (!['true', '1', '0', 'no-verify'].includes(value))
          paramError(
            field,
            name,
            `must be true, 1, 0 or no-verify (or use sslmode), got ${shown}`,
            'true, 1, 0, no-verify',
          )
        break
      case 'sslnegotiation':
        if (value !== 'postgres' && value !== 'direct')
          paramError(field, name, `must be postgres or direct, got ${shown}`, 'postgres, direct')
        break
      case 'uselibpqcompat':
        if (value !== 'true' && value !== 'false')
          paramError(field, name, `must be true or false, got ${shown}`, 'true, false')
        if (value === 'true' && params.get('sslmode') === 'verify-ca' && !params.has('sslrootcert'))
          paramError(
            field,
            'sslrootcert',
            'is required with sslmode=verify-ca under uselibpqcompat=true',
            'a CA file',
          )
        break
      case 'sslcert':
      case 'sslkey':
      case 'sslrootcert':
        // pg reads these files on every connect: a missing one fails each connection, not here.
        try {
          accessSync(value, constants.R_OK)
        } catch {
          paramError(field, name, `names a file that cannot be read: ${shown}`, 'a readable file path')
        }
        break
      case 'port':
        if (!/^\d{1,5}$/.test(value) || Number(value) < 1 || Number(value) > 65535)
          paramError(field, name, `must be an integer port 1-65535, got ${shown}`, 'an integer port 1-65535')
        break
      case 'statement_timeout':
      case 'lock_timeout':
      case 'idle_in_transaction_session_timeout':
      case 'query_timeout':
        if (!/^\d{1,10}$/.test(value) || Number(value) > 2 ** 31 - 1)
          paramError(
            field,
            name,
            `must be whole milliseconds from 0 to 2147483647, got ${shown}`,
            'milliseconds 0-2147483647',
          )
        break
      default:
        if (value.includes('\0'))
          paramError(field, name, 'must not contain a NUL character', 'text without NUL')
    }
  }
}

/** decodeURIComponent that names the part of the URL with a broken escape instead of a URIError. */
function decode(field: string, part: string, text: string): string {
  try {
    return decodeURIComponent(text)
  } catch {
    throw new ConfigError(
      field,
      `has a malformed %-escape in its ${part} (each % must start two hex digits, e.g. %40 for @; write % itself as %25)`,
      { expected: 'a URL whose %-escapes are %XX with two hex digits' },
    )
  }
}

/** Parses a `postgres://` URL enough to name the node; pg itself parses it again for connecting. */
export function parseConnectionString(
  url: string,
  field: string,
): NodeAddress & { password: string | undefined } {
  if (typeof url !== 'string' || url.trim() === '')
    throw new ConfigError(field, 'is an empty connection string', { expected: 'a postgres:// URL' })
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    throw new ConfigError(field, `is not a valid connection URL: ${JSON.stringify(redact(url))}`, {
      expected: 'a postgres:// URL',
    })
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw new ConfigError(
      field,
      `must be a postgres:// or postgresql:// URL, got scheme ${JSON.stringify(parsed.protocol)}`,
      { expected: 'a postgres:// URL' },
    )
  }
  // Decoded first: a broken escape must be a ConfigError before anything else reads the parts.
  const password = parsed.password ? decode(field, 'password', parsed.password) : undefined
  const user = parsed.username ? decode(field, 'user name', parsed.username) : undefined
  const database =
    parsed.pathname.length > 1 ? decode(field, 'database', parsed.pathname.slice(1)) : undefined
  const hostname = decode(field, 'host', parsed.hostname)
  checkParameters(field, parsed.searchParams)
  const host = hostname || parsed.searchParams.get('host') || 'localhost'
  let port = 5432
  if (parsed.port !== '') {
    port = Number(parsed.port)
  } else if (parsed.searchParams.get('port')) {
    port = Number(parsed.searchParams.get('port'))
  }
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new ConfigError(field, `has an invalid port in ${JSON.stringify(redact(url))}`, {
      expected: 'an integer port 1-65535',
    })
  }
  return { host: host.replace(/^\[|\]$/g, ''), port, database, user, password }
}

/**
 * The identity of a server address as far as it is known without DNS: host names lowercased,
 * IPv4/IPv6 literals in canonical form, every loopback form (`localhost`, `127.0.0.1`, `::1`)
 * one address, socket directories without a trailing slash. Two nodes with the same key are
 * the same server.
 */
export function addressKey(host: string, port: number): string {
  let h = host.trim()
  if (h.startsWith('/')) return `unix:${h.replace(/\/+$/, '') || '/'}:${port}`
  h = h.replace(/^\[|\]$/g, '').replace(/\.$/, '')
  try {
    // The WHATWG parser canonicalises IPv4 (127.1, 0x7f.0.0.1) and IPv6 (0:0::1) literals and
    // lowercases names, for http: URLs (postgres: hosts are opaque to it).
    h = new URL(`http://${h.includes(':') ? `[${h}]` : h}/`).hostname.replace(/^\[|\]$/g, '')
  } catch {
    h = h.toLowerCase()
  }
  if (
    h === 'localhost' ||
    h.endsWith('.localhost') ||
    h === '::1' ||
    h === '127.0.0.1' ||
    h === '::ffff:7f00:1'
  )
    h = 'loopback'
  return `${h}:${port}`
}
