import type { ClusterNode } from './node.js'

/** How an aborted statement is stopped on its server. */
export type AbortHow = 'cancel' | 'terminate'

/**
 * The one way a caller stops a statement pgsplit runs for it: a caller's `AbortSignal`
 * (`db.query(..., { signal })`) and Kysely's `cancelQuery` / `killSession` both end here. The
 * path that runs the statement attaches the backend it runs on; aborting then cancels or ends
 * that backend on its node, and a statement aborted before it was sent is not sent (nor retried).
 * A plain object, reusable: an `AbortSignal` per statement cost ~4 µs of client CPU (the first
 * listener on a fresh EventTarget), more than pgsplit's whole routing.
 */
export class StatementHandle {
  #node: ClusterNode | null = null
  #pid: number | null = null
  #how: AbortHow | null = null
  /** What the caller gave as the reason (an AbortSignal's `reason`). */
  cause: unknown = undefined

  get aborted(): boolean {
    return this.#how !== null
  }

  /** Aborts the statement: signals its backend if it runs, or keeps it from being sent. Once. */
  abort(how: AbortHow, cause?: unknown): void {
    if (this.#how !== null) return
    this.#how = how
    this.cause = cause
    if (this.#node !== null && this.#pid !== null) this.#node.signalBackend(this.#pid, how)
  }

  /** The statement is now sent to backend `pid` of `node` (see runStatement). */
  attach(node: ClusterNode, pid: number | null): void {
    this.#node = node
    this.#pid = pid
  }

  /** The statement on that backend is over: an abort from now on signals nothing. */
  detach(): void {
    this.#node = null
    this.#pid = null
  }

  /** Ready for the next statement of the same caller (a Kysely connection runs one at a time). */
  reset(): void {
    this.detach()
    this.#how = null
    this.cause = undefined
  }
}

/** A handle driven by `signal`: its listener is removed by the returned function. */
export function handleOfSignal(signal: AbortSignal): { handle: StatementHandle; dispose: () => void } {
  const handle = new StatementHandle()
  const how = (): AbortHow => (signal.reason === 'terminate' ? 'terminate' : 'cancel')
  if (signal.aborted) {
    handle.abort(how(), signal.reason)
    return { handle, dispose: () => undefined }
  }
  const onAbort = () => handle.abort(how(), signal.reason)
  signal.addEventListener('abort', onAbort, { once: true })
  return { handle, dispose: () => signal.removeEventListener('abort', onAbort) }
}
