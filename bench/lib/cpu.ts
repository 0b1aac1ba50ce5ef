import { execFileSync } from 'node:child_process'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { TestCluster } from '../../src/testing/index.js'

let ticksPerSecond: number | undefined
function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
    } catch {
      ticksPerSecond = 100
    }
  }
  return ticksPerSecond
}

interface ProcStat {
  ppid: number
  /** utime + stime, clock ticks. */
  ticks: number
}

async function readStats(): Promise<Map<number, ProcStat>> {
  const out = new Map<number, ProcStat>()
  let entries: string[]
  try {
    entries = await readdir('/proc')
  } catch {
    return out
  }
  await Promise.all(
    entries
      .filter((e) => /^\d+$/.test(e))
      .map(async (e) => {
        try {
          const stat = await readFile(`/proc/${e}/stat`, 'utf8')
          const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
          // After the command: state(0) ppid(1) ... utime(11) stime(12)
          out.set(Number(e), { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) })
        } catch {
          // gone
        }
      }),
  )
  return out
}

/**
 * CPU time (µs) used so far by the server side: every process under `roots()` (postmasters and
 * their backends, pgpool and its children). Sampled before and after a run: CPU per operation
 * of the whole stack is steadier than throughput on a machine shared with other work. Linux only
 * (/proc); 10 ms resolution per process.
 */
export type CpuSampler = () => Promise<number>

export function serverCpuSampler(roots: () => Promise<number[]>): CpuSampler {
  return async () => {
    const rootPids = new Set(await roots())
    if (rootPids.size === 0) return Number.NaN
    const stats = await readStats()
    let ticks = 0
    for (const [pid, s] of stats) {
      // A process counts if it is a root or its parent is (backends and pgpool children are direct children).
      if (rootPids.has(pid) || rootPids.has(s.ppid)) ticks += s.ticks
    }
    return (ticks * 1e6) / clockTicks()
  }
}

/** PIDs of the running postmasters of a local test cluster (from each data directory's postmaster.pid). */
export async function postmasterPids(cluster: TestCluster): Promise<number[]> {
  const baseDir = (cluster as unknown as { baseDir?: string }).baseDir
  if (typeof baseDir !== 'string') return []
  const pids: number[] = []
  for (const node of cluster.nodes) {
    try {
      const text = await readFile(join(baseDir, node.name, 'postmaster.pid'), 'utf8')
      const pid = Number(text.split('\n')[0])
      if (pid > 0) pids.push(pid)
    } catch {
      // stopped
    }
  }
  return pids
}
