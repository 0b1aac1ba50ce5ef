import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { readCallgrind } from '../../bench/lib/callgrind.js'

const dir = mkdtempSync(join(tmpdir(), 'pgsplit-callgrind-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

// The shape callgrind 3.19 writes with --dump-instr=no: compressed names, relative positions,
// and call costs (inclusive, after calls=) that belong to the callee, not the caller.
const SAMPLE = `# callgrind format
version: 1
positions: line
events: Ir
summary: 10000

ob=(1) /usr/bin/node
fl=(1) ???
fn=(1) v8::internal::Scavenger::ScavengePage(v8::internal::MemoryChunk*)
0 300
+2 200
cfn=(2) Builtins_LoadIC
calls=4 0
0 999
fn=(2)
0 50
fn=(3) v8::internal::compiler::GraphReducer::ReduceTop()
0 70
fn=(4) sha256_block_data_order_avx2
* 40
fn=(5) 0x000000000d112b40
0 1000
cfn=(1)
calls=1 0
0 5000
fn=(1)
0 7
fn=(6) v8::internal::HandleApiCallHelper<true>(v8::internal::Isolate*, v8::internal::HeapObject)
0 600
`

describe('readCallgrind (bench/lib/callgrind.ts)', () => {
  it('sums self costs by kind, resolves compressed names, and leaves call costs to the callee', () => {
    const path = join(dir, 'sample.cg')
    writeFileSync(path, SAMPLE)
    expect(readCallgrind(path)).toEqual({ total: 10_000, gc: 507, jit: 70, scram: 40 })
  })
})
