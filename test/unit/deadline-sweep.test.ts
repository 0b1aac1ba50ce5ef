import { describe, expect, it } from 'vitest'
import { IntrusiveList, type ListLinks } from '../../src/pools/intrusive-list.js'
import { DeadlineSweep } from '../../src/pools/statement-deadlines.js'

interface Wait extends ListLinks<Wait> {
  deadline: number
  expiredAt: number | null
  expire(): void
}
const wait = (deadline: number): Wait => {
  const w: Wait = {
    deadline,
    expiredAt: null,
    prevInList: null,
    nextInList: null,
    expire: () => {
      w.expiredAt = Date.now()
    },
  }
  return w
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe('DeadlineSweep (one timer for every wait of a list)', () => {
  it('expires items past their deadline, never early, skips items without one, and sweeps again once re-armed after the list emptied', async () => {
    const list = new IntrusiveList<Wait>()
    const sweep = new DeadlineSweep(list, 100)
    expect(sweep.periodMs).toBe(10)
    const now = Date.now()
    const soon = wait(now + 30)
    const later = wait(now + 200)
    const none = wait(0) // in the list (a caller connecting a new client) with no deadline
    for (const w of [soon, later, none]) list.add(w)
    sweep.arm()
    sweep.arm() // idempotent
    for (let i = 0; i < 200 && soon.expiredAt === null; i++) await sleep(5)
    expect(soon.expiredAt).not.toBeNull()
    expect(soon.expiredAt!).toBeGreaterThanOrEqual(soon.deadline)
    expect(later.expiredAt).toBeNull()
    expect(list.size).toBe(2)
    for (let i = 0; i < 400 && later.expiredAt === null; i++) await sleep(5)
    expect(later.expiredAt!).toBeGreaterThanOrEqual(later.deadline)
    expect(none.expiredAt).toBeNull()
    expect(list.first).toBe(none)
    list.remove(none)
    await sleep(40) // a sweep over the empty list clears the timer
    const again = wait(Date.now() + 20)
    list.add(again)
    sweep.arm() // a cleared sweep starts again
    for (let i = 0; i < 200 && again.expiredAt === null; i++) await sleep(5)
    expect(again.expiredAt!).toBeGreaterThanOrEqual(again.deadline)
    expect(list.size).toBe(0)
  })

  it('keeps the bound within a tenth of it: 5 ms to 1 s between sweeps', () => {
    const list = new IntrusiveList<Wait>()
    expect(new DeadlineSweep(list, 10).periodMs).toBe(5)
    expect(new DeadlineSweep(list, 5_000).periodMs).toBe(500)
    expect(new DeadlineSweep(list, 60_000).periodMs).toBe(1_000)
  })
})
