/**
 * Reads a callgrind output file (`--dump-instr=no`, positions: line): instructions executed, in
 * all and in the functions of V8's garbage collector, of its compilers and of SCRAM's hashing. Function names may be
 * compressed (`fn=(12) name` once, `fn=(12)` after); a cost line that follows `calls=` is the
 * inclusive cost of a call, counted at the callee, not here.
 */
import { readFileSync } from 'node:fs'

export interface CallgrindCounts {
  /** Every instruction of the process (callgrind's `summary`). */
  total: number
  /** In V8's heap: scavenges, marking, sweeping, write barriers. */
  gc: number
  /** In V8's optimizing compilers (code being tiered up while measured). */
  jit: number
  /** In SHA-256 / HMAC / PBKDF2: a connection's SCRAM handshake (should be ~0 while measuring). */
  scram: number
}

const GC = /Scaveng|Heap::|heap::|MarkCompact|Marking|Sweep|RecordWrite|IterateObjectCache|Evacuat/
const JIT = /compiler::|maglev::|Maglev|Turbofan|turboshaft|baseline::|Compile/
const SCRAM = /sha256|SHA256|EVP_|OPENSSL_cleanse|HMAC|hmac|pbkdf2|PBKDF2/

export function readCallgrind(path: string): CallgrindCounts {
  const names = new Map<string, string>()
  const nameOf = (spec: string): string => {
    const m = /^\((\d+)\)(?:\s+(.*))?$/.exec(spec)
    if (m === null) return spec
    if (m[2] !== undefined) names.set(m[1]!, m[2])
    return names.get(m[1]!) ?? '?'
  }
  let total = 0
  let gc = 0
  let jit = 0
  let scram = 0
  let kind: 'gc' | 'jit' | 'scram' | null = null
  let callCost = false
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (line.startsWith('summary:')) total = Number(line.slice(8).trim())
    else if (line.startsWith('fn=')) {
      // By the function's name, not its parameter types: `HandleApiCallHelper(..., HeapObject)`
      // is an API call, not the collector.
      const name = nameOf(line.slice(3).trim()).split('(')[0]!
      kind = GC.test(name) ? 'gc' : JIT.test(name) ? 'jit' : SCRAM.test(name) ? 'scram' : null
    } else if (line.startsWith('cfn=')) nameOf(line.slice(4).trim())
    else if (line.startsWith('calls=')) callCost = true
    else if (/^[0-9+\-*]/.test(line)) {
      if (callCost) {
        callCost = false
        continue
      }
      if (kind === null) continue
      const cost = Number(line.split(' ')[1] ?? 0)
      if (kind === 'gc') gc += cost
      else if (kind === 'jit') jit += cost
      else scram += cost
    }
  }
  return { total, gc, jit, scram }
}
