import { performance } from 'node:perf_hooks'
import { quantileSorted, sortedCopy } from './stats.js'

/** One run of a closed-loop load: `concurrency` callers, each issuing its next operation as soon as the last one ends. */
export interface LoadOptions {
  concurrency: number
  durationMs: number
  /** CPU used so far by the servers (µs), sampled before and after the run. */
  serverCpu?: () => Promise<number>
}

export interface LoadResult {
  /** Operations that completed without an error. */
  ops: number
  errors: number
  /** Errors counted by constructor name and SQLSTATE, e.g. `DatabaseError/40001`. */
  errorKinds: Record<string, number>
  elapsedMs: number
  opsPerSec: number
  p50Ms: number
  p99Ms: number
  meanMs: number
  /** CPU time of this whole process (user + system) per successful operation, microseconds. */
  cpuUsPerOp: number
  /** CPU of the server processes (PostgreSQL, pgpool) per operation, µs; NaN when not sampled. */
  serverCpuUsPerOp: number
  /** Client + server CPU per operation, µs. */
  stackCpuUsPerOp: number
}

/** A short name for an error: its class, and its SQLSTATE or errno code when it has one. */
export function errorKind(err: unknown): string {
  if (!(err instanceof Error)) return typeof err
  const code = (err as { code?: unknown }).code
  return typeof code === 'string' ? `${err.constructor.name}/${code}` : err.constructor.name
}

/**
 * Runs `op` from `concurrency` callers for `durationMs` (fixed duration; no caller starts an
 * operation after the deadline, and the ones in flight are waited for). `op(worker, i)` gets the
 * caller's index and its own iteration count. Latency is measured per successful operation.
 */
export async function runLoad(
  op: (worker: number, iteration: number) => Promise<unknown>,
  options: LoadOptions,
): Promise<LoadResult> {
  const latencies: number[] = []
  const errorKinds: Record<string, number> = {}
  let errors = 0
  const server0 = options.serverCpu ? await options.serverCpu() : Number.NaN
  const cpu0 = process.cpuUsage()
  const start = performance.now()
  const deadline = start + options.durationMs
  const worker = async (w: number): Promise<void> => {
    for (let i = 0; performance.now() < deadline; i++) {
      const t0 = performance.now()
      try {
        await op(w, i)
        latencies.push(performance.now() - t0)
      } catch (err) {
        errors++
        const kind = errorKind(err)
        errorKinds[kind] = (errorKinds[kind] ?? 0) + 1
      }
    }
  }
  await Promise.all(Array.from({ length: options.concurrency }, (_, w) => worker(w)))
  const elapsedMs = performance.now() - start
  const cpu = process.cpuUsage(cpu0)
  const server = options.serverCpu ? (await options.serverCpu()) - server0 : Number.NaN
  const ops = Math.max(1, latencies.length)
  const sorted = sortedCopy(latencies)
  let sum = 0
  for (const v of latencies) sum += v
  return {
    ops: latencies.length,
    errors,
    errorKinds,
    elapsedMs,
    opsPerSec: (latencies.length / elapsedMs) * 1000,
    p50Ms: quantileSorted(sorted, 0.5),
    p99Ms: quantileSorted(sorted, 0.99),
    meanMs: latencies.length === 0 ? Number.NaN : sum / latencies.length,
    cpuUsPerOp: (cpu.user + cpu.system) / ops,
    serverCpuUsPerOp: server / ops,
    stackCpuUsPerOp: (cpu.user + cpu.system + server) / ops,
  }
}
