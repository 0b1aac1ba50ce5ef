import { readFileSync } from 'node:fs'
import { redact } from '../index.js'
import {
  collectStatus,
  defaultNodeName,
  formatStatus,
  type StatusReport,
  type StatusTarget,
} from './status.js'

/** Where the command writes; the demo and tests pass their own. */
export interface CliIo {
  out: (text: string) => void
  err: (text: string) => void
  /** Ends `--watch` (the bin wires it to SIGINT/SIGTERM). */
  signal?: AbortSignal
  /** Whether `out` is a terminal (`--watch` then clears the screen between rounds). */
  isTTY?: boolean
  env?: Record<string, string | undefined>
}

export const EXIT_OK = 0
export const EXIT_NO_PRIMARY = 1
export const EXIT_USAGE = 2

export const HELP = `pgsplit: tools for a PostgreSQL streaming-replication cluster

Usage:
  pgsplit status --primary URL [--replica URL ...] [options]
  pgsplit status --nodes URL,URL,... [options]
  pgsplit --help | --version

status asks every node, directly and in parallel, for its role, timeline, LSN,
replication lag and replay state, and the primary for pg_stat_replication.

Nodes:
  --primary URL        the primary as you know it (its real role is checked)
  --replica URL        a replica; repeat for more
  --nodes LIST         comma-separated URLs of nodes of unknown role; may repeat
                       A URL may be prefixed with NAME= to name it (default host:port).
                       Without any of these: $PGSPLIT_PRIMARY_URL, $PGSPLIT_REPLICA_URLS
                       (comma-separated) or $PGSPLIT_NODES.
Options:
  --json               JSON instead of a table (one line per round with --watch)
  --watch [SECONDS]    refresh every SECONDS (default 2) until Ctrl-C
  --timeout MS         bound for each node's connect and queries (default 3000)
  -h, --help           this text

Exit status: 0 when a primary answered, 1 when none did, 2 on a usage error.
Passwords are never printed.
`

class UsageError extends Error {}

/** pgsplit's redact (postgres URLs, key=value) plus the password of any other URL a user mistypes. */
function hide(text: string): string {
  return redact(text).replace(/([a-z][a-z0-9+.-]*:\/\/[^:/@\s]*:)\S*?@(?=[^@\s/]*(?:[/\s]|$))/gi, '$1***@')
}

interface StatusArgs {
  targets: StatusTarget[]
  json: boolean
  watchSeconds: number | null
  timeoutMs: number
}

const URL_START = /,(?=\s*(?:[A-Za-z0-9_.-]+=)?postgres(?:ql)?:\/\/)/

/** `NAME=postgres://...` or a bare URL. */
function target(spec: string, declared: StatusTarget['declared']): StatusTarget {
  const text = spec.trim()
  const named = /^([A-Za-z0-9_.-]+)=(postgres(?:ql)?:\/\/.*)$/s.exec(text)
  const url = named?.[2] ?? text
  if (!/^postgres(?:ql)?:\/\//.test(url)) {
    throw new UsageError(`not a postgres:// URL: ${JSON.stringify(hide(url))}`)
  }
  try {
    new URL(url)
  } catch {
    throw new UsageError(`not a valid URL: ${JSON.stringify(hide(url))}`)
  }
  return { name: named?.[1] ?? defaultNodeName(url), url, declared }
}

/** URLs of a comma-separated list; commas inside a URL (multi-host) are not split on. */
function list(value: string, declared: StatusTarget['declared']): StatusTarget[] {
  return value
    .split(URL_START)
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map((s) => target(s, declared))
}

function parseStatusArgs(args: string[], env: Record<string, string | undefined>): StatusArgs {
  const targets: StatusTarget[] = []
  let json = false
  let watchSeconds: number | null = null
  let timeoutMs = 3000
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? ''
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1
    const flag = eq === -1 ? arg : arg.slice(0, eq)
    const inline = eq === -1 ? undefined : arg.slice(eq + 1)
    const value = (): string => {
      if (inline !== undefined) return inline
      const next = args[i + 1]
      if (next === undefined || next.startsWith('--')) throw new UsageError(`${flag} needs a value`)
      i++
      return next
    }
    switch (flag) {
      case '--primary':
        targets.push(target(value(), 'primary'))
        break
      case '--replica':
      case '--replicas':
        targets.push(...list(value(), 'replica'))
        break
      case '--nodes':
      case '--node':
        targets.push(...list(value(), 'unknown'))
        break
      case '--json':
        json = true
        break
      case '--watch': {
        // The number is optional: take the next argument only when it is one.
        let text = inline
        if (text === undefined && /^\d+(\.\d+)?$/.test(args[i + 1] ?? '')) text = args[++i]
        const seconds = text === undefined ? 2 : Number(text)
        if (!Number.isFinite(seconds) || seconds <= 0)
          throw new UsageError('--watch takes a number of seconds > 0')
        watchSeconds = seconds
        break
      }
      case '--timeout': {
        const ms = Number(value())
        if (!Number.isInteger(ms) || ms <= 0)
          throw new UsageError('--timeout takes a whole number of milliseconds > 0')
        timeoutMs = ms
        break
      }
      default:
        throw new UsageError(`unknown argument ${JSON.stringify(hide(arg))}`)
    }
  }
  if (targets.length === 0) {
    if (env.PGSPLIT_NODES) targets.push(...list(env.PGSPLIT_NODES, 'unknown'))
    else if (env.PGSPLIT_PRIMARY_URL) {
      targets.push(target(env.PGSPLIT_PRIMARY_URL, 'primary'))
      if (env.PGSPLIT_REPLICA_URLS) targets.push(...list(env.PGSPLIT_REPLICA_URLS, 'replica'))
    }
  }
  if (targets.length === 0) throw new UsageError('no nodes: give --primary/--replica or --nodes')
  const names = new Set<string>()
  for (const t of targets) {
    if (names.has(t.name)) throw new UsageError(`node ${t.name} is given twice`)
    names.add(t.name)
  }
  return { targets, json, watchSeconds, timeoutMs }
}

function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      version?: string
    }
    return pkg.version ?? 'unknown'
  } catch {
    return 'unknown'
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve()
    const timer = setTimeout(done, ms)
    function done() {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    signal?.addEventListener('abort', done, { once: true })
  })
}

function exitCodeOf(report: StatusReport): number {
  return report.primary === null ? EXIT_NO_PRIMARY : EXIT_OK
}

async function status(args: StatusArgs, io: CliIo): Promise<number> {
  const caughtUpAt = new Map<string, number>()
  let code = EXIT_NO_PRIMARY
  for (;;) {
    const report = await collectStatus(args.targets, { timeoutMs: args.timeoutMs, caughtUpAt })
    code = exitCodeOf(report)
    if (args.json) {
      io.out(args.watchSeconds === null ? JSON.stringify(report, null, 2) : JSON.stringify(report))
    } else if (args.watchSeconds === null) {
      io.out(formatStatus(report))
    } else {
      const clear = io.isTTY ? '\x1b[2J\x1b[H' : ''
      io.out(
        `${clear}pgsplit status  ${report.at}  every ${args.watchSeconds} s (Ctrl-C to stop)\n\n${formatStatus(report)}\n`,
      )
    }
    if (args.watchSeconds === null || io.signal?.aborted) return code
    await sleep(args.watchSeconds * 1000, io.signal)
    if (io.signal?.aborted) return code
  }
}

/**
 * The `pgsplit` command. Returns the exit status instead of exiting, so it runs in-process too
 * (the demo prints its status table this way).
 *
 * ```ts
 * const code = await main(['status', '--nodes', urls.join(',')], { out: console.log, err: console.error })
 * ```
 */
export async function main(argv: string[], io: CliIo): Promise<number> {
  const [command, ...rest] = argv
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    io.out(HELP)
    return command === undefined ? EXIT_USAGE : EXIT_OK
  }
  if (command === '--version' || command === '-v') {
    io.out(version())
    return EXIT_OK
  }
  if (command !== 'status') {
    io.err(`pgsplit: unknown command ${JSON.stringify(hide(command))}\n\n${HELP}`)
    return EXIT_USAGE
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    io.out(HELP)
    return EXIT_OK
  }
  let args: StatusArgs
  try {
    args = parseStatusArgs(rest, io.env ?? {})
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`pgsplit status: ${err.message}\nRun 'pgsplit --help' for usage.`)
      return EXIT_USAGE
    }
    throw err
  }
  return status(args, io)
}
