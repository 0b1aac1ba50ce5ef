import { redact, TestClusterError } from './errors.js'
import { sleep } from './process-utils.js'

/** Thrown by a probe to end a wait at once (say, the server process exited). */
export class StopWaiting extends Error {
  override readonly name = 'StopWaiting'
}

/** How a wait is bounded and reported: the node it is about, its time, its poll interval. */
export interface WaitOptions {
  readonly node?: string
  readonly timeoutMs: number
  /** Default 50 ms. */
  readonly intervalMs?: number
  /** Added to the message of a wait that fails (say, the end of the server log). */
  readonly details?: () => Promise<string>
}

/** Milliseconds left until `deadline` (a `Date.now()` value); at least 1, so a bound stays valid. */
export function remaining(deadline: number): number {
  return Math.max(1, deadline - Date.now())
}

/**
 * Polls `probe` every `intervalMs` until it returns a value other than `undefined`, for at most
 * `timeoutMs`. Errors thrown by the probe (connection refused while a server starts, ...) count as
 * "not yet" and are remembered; `note` records what the probe saw, so a timeout says where it
 * stood. The error names the node and what did not happen.
 */
export async function waitFor<T>(
  what: string,
  opts: WaitOptions,
  probe: (note: (state: string) => void) => Promise<T | undefined>,
): Promise<T> {
  const started = Date.now()
  const interval = opts.intervalMs ?? 50
  let last = ''
  const note = (state: string): void => {
    last = state
  }
  for (;;) {
    try {
      const value = await probe(note)
      if (value !== undefined) return value
    } catch (err) {
      if (err instanceof StopWaiting) throw await failure(`failed: ${err.message}`)
      last = err instanceof Error ? err.message : String(err)
    }
    if (Date.now() - started >= opts.timeoutMs) {
      throw await failure(`did not happen within ${opts.timeoutMs} ms`)
    }
    await sleep(interval)
  }

  async function failure(why: string): Promise<TestClusterError> {
    const extra = opts.details ? await opts.details().catch(() => '') : ''
    const who = opts.node ? `${opts.node}: ` : ''
    return new TestClusterError(
      `pgsplit/testing: ${who}${what} ${why}` +
        (last ? ` (last seen: ${redact(last)})` : '') +
        (extra ? `\n${extra}` : ''),
      opts.node,
    )
  }
}
