import { spawn } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { readdir, readFile } from 'node:fs/promises'
import { basename } from 'node:path'
import { redact, TestClusterError } from './errors.js'

/** The OS user that runs the servers when this process is root (PostgreSQL refuses to run as root). */
export interface OsUser {
  readonly name: string
  readonly uid: number
  readonly gid: number
  readonly home: string
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * `undefined` when this process may run the servers itself; the `postgres` OS user when it is
 * root. Looked up in /etc/passwd: the Debian/Ubuntu package creates that user.
 */
export function serverOsUser(): OsUser | undefined {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return undefined
  let passwd = ''
  try {
    passwd = readFileSync('/etc/passwd', 'utf8')
  } catch {
    // Handled below: no passwd file means no postgres user we can find.
  }
  for (const line of passwd.split('\n')) {
    const [name, , uid, gid, , home] = line.split(':')
    if (name === 'postgres' && uid && gid) {
      return { name, uid: Number(uid), gid: Number(gid), home: home || '/' }
    }
  }
  throw new TestClusterError(
    'pgsplit/testing: this process runs as root and PostgreSQL refuses to; the `postgres` OS user ' +
      'that would run the servers does not exist (the postgresql package creates it). Create it ' +
      '(`useradd --system postgres`) or run the tests as a non-root user.',
  )
}

/**
 * The environment for the tools and servers: the caller's, without any libpq variable
 * (PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD, PGSSLMODE, PGSERVICE, ...) that would send a
 * tool to another server or change its behaviour, and with C messages so logs are predictable.
 */
export function toolEnv(user: OsUser | undefined): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('PG')) env[key] = value
  }
  env.LC_ALL = 'C'
  if (user) {
    env.HOME = user.home
    env.USER = user.name
    env.LOGNAME = user.name
  }
  return env
}

/** uid/gid options for `spawn` so the child runs as `user` (the same as `runuser -u postgres`). */
export function spawnIdentity(user: OsUser | undefined): { uid?: number; gid?: number } {
  return user ? { uid: user.uid, gid: user.gid } : {}
}

export interface ToolResult {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/**
 * Runs a PostgreSQL tool to completion as `user`, from `/` (a cwd the postgres user can read),
 * with the cleaned environment. Rejects with a {@link TestClusterError} naming the tool and its
 * last output lines when it fails or outlives `timeoutMs`.
 */
export function runTool(
  file: string,
  args: readonly string[],
  opts: { user: OsUser | undefined; timeoutMs: number; node?: string },
): Promise<ToolResult> {
  const tool = basename(file)
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      cwd: '/',
      env: toolEnv(opts.user),
      stdio: ['ignore', 'pipe', 'pipe'],
      ...spawnIdentity(opts.user),
    })
    let stdout = ''
    let stderr = ''
    // Bounded buffers: only the tail matters for error messages.
    child.stdout.on('data', (chunk: Buffer) => {
      stdout = (stdout + chunk.toString()).slice(-16_384)
    })
    child.stderr.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-16_384)
    })
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, opts.timeoutMs)
    child.once('error', (err) => {
      clearTimeout(timer)
      reject(
        new TestClusterError(`pgsplit/testing: could not run ${tool}: ${err.message}`, opts.node, {
          cause: err,
        }),
      )
    })
    child.once('close', (code, signal) => {
      clearTimeout(timer)
      if (code === 0) {
        resolve({ code, stdout, stderr })
        return
      }
      const why = timedOut
        ? `did not finish within ${opts.timeoutMs} ms`
        : `exited with ${code === null ? `signal ${signal}` : `code ${code}`}`
      const output = lastLines(`${stderr}\n${stdout}`, 15)
      reject(
        new TestClusterError(
          `pgsplit/testing: ${tool}${opts.node ? ` for ${opts.node}` : ''} ${why}${output ? `:\n${output}` : ''}`,
          opts.node,
        ),
      )
    })
  })
}

/** The last `n` non-empty lines of `text`, indented, passwords removed. */
export function lastLines(text: string, n: number): string {
  return redact(
    text
      .split('\n')
      .filter((l) => l.trim() !== '')
      .slice(-n)
      .map((l) => `  ${l}`)
      .join('\n'),
  )
}

/** The last `n` lines of a file, or '' when it cannot be read. */
export async function fileTail(path: string, n: number): Promise<string> {
  try {
    return lastLines(await readFile(path, 'utf8'), n)
  } catch {
    return ''
  }
}

/**
 * Process state from /proc: 'gone' (no such process), 'zombie' (exited, not reaped yet), 'alive'.
 * Where /proc is missing, `kill(pid, 0)` tells alive from gone.
 */
export async function processState(pid: number): Promise<'alive' | 'zombie' | 'gone'> {
  try {
    return parseStat(await readFile(`/proc/${pid}/stat`, 'utf8')).state === 'Z' ? 'zombie' : 'alive'
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return killZeroState(pid)
    return existsProc() ? 'gone' : killZeroState(pid)
  }
}

/** PIDs of the direct children of `pid` (the server's backends and auxiliary processes). */
export async function childPids(pid: number): Promise<number[]> {
  if (!existsProc()) return []
  const children: number[] = []
  let entries: string[]
  try {
    entries = await readdir('/proc')
  } catch {
    return []
  }
  await Promise.all(
    entries
      .filter((e) => /^\d+$/.test(e))
      .map(async (e) => {
        try {
          if (parseStat(await readFile(`/proc/${e}/stat`, 'utf8')).ppid === pid) children.push(Number(e))
        } catch {
          // The process ended while we looked: not a child any more.
        }
      }),
  )
  return children
}

/** Sends `signal` to `pid`; false when there is no such process. Never throws. */
export function signalProcess(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(pid, signal)
    return true
  } catch {
    return false
  }
}

function parseStat(stat: string): { state: string; ppid: number } {
  // The command name is in parentheses and may itself hold spaces or ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return { state: rest[0] ?? '', ppid: Number(rest[1]) }
}

let procMounted: boolean | undefined
function existsProc(): boolean {
  if (procMounted === undefined) {
    try {
      procMounted = readdirSync('/proc/self').length > 0
    } catch {
      procMounted = false
    }
  }
  return procMounted
}

function killZeroState(pid: number): 'alive' | 'gone' {
  try {
    process.kill(pid, 0)
    return 'alive'
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM' ? 'alive' : 'gone'
  }
}
