import { ConfigError } from '../errors.js'

/** Where a node lives, parsed once from its connection string or config object. */
export interface NodeAddress {
  host: string
  port: number
  database: string | undefined
  user: string | undefined
}

// The password runs to the '@' that starts the host (URL parsers take the last '@' of the
// authority): a raw '@' inside a password must not leave its tail visible.
const URL_PASSWORD = /(postgres(?:ql)?:\/\/[^:/@\s]*:)(\S*?)(@)(?=[^@\s/]*(?:[/\s]|$))/gi
const KV_PASSWORD = /(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)/gi

/**
 * Replaces passwords in anything that may hold a connection string (URLs and libpq
 * key=value strings), so that errors, events and logs never carry a secret.
 */
export function redact(text: string): string {
  return text.replace(URL_PASSWORD, '$1***$3').replace(KV_PASSWORD, '$1***')
}

/** Parses a `postgres://` URL enough to name the node; pg itself parses it again for connecting. */
export function parseConnectionString(
  url: string,
  field: string,
): NodeAddress & { password: string | undefined } {
  if (typeof url !== 'string' || url.trim() === '')
    throw new ConfigError(field, 'is an empty connection string')
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    throw new ConfigError(field, `is not a valid connection URL: ${JSON.stringify(redact(url))}`)
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw new ConfigError(
      field,
      `must be a postgres:// or postgresql:// URL, got scheme ${JSON.stringify(parsed.protocol)}`,
    )
  }
  const hostParam = parsed.searchParams.get('host')
  const host = decodeURIComponent(parsed.hostname) || hostParam || 'localhost'
  let port = 5432
  if (parsed.port !== '') {
    port = Number(parsed.port)
  } else if (parsed.searchParams.get('port')) {
    port = Number(parsed.searchParams.get('port'))
  }
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new ConfigError(field, `has an invalid port in ${JSON.stringify(redact(url))}`)
  }
  const database = parsed.pathname.length > 1 ? decodeURIComponent(parsed.pathname.slice(1)) : undefined
  return {
    host: host.replace(/^\[|\]$/g, ''),
    port,
    database,
    user: parsed.username ? decodeURIComponent(parsed.username) : undefined,
    password: parsed.password ? decodeURIComponent(parsed.password) : undefined,
  }
}
