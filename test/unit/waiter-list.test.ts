import { describe, expect, it } from 'vitest'
import { type Waiter, WaiterList } from '../../src/pools/waiter-list.js'

function waiter(log: string[], name: string, list?: WaiterList): Waiter {
  return {
    prevWaiter: null,
    nextWaiter: null,
    abandon: (err) => {
      log.push(`${name}:${err.message}`)
      // A waiter settled while the list is being emptied may touch the list (no-op remove).
      list?.remove(waiters[name]!)
    },
  }
}
const waiters: Record<string, Waiter> = {}

describe('WaiterList', () => {
  it('removes from the head, middle and tail, and ignores a waiter not in it', () => {
    const log: string[] = []
    const list = new WaiterList()
    for (const n of ['a', 'b', 'c', 'd']) {
      waiters[n] = waiter(log, n)
      list.add(waiters[n]!)
    }
    expect(list.size).toBe(4)
    list.remove(waiters.b!) // middle
    list.remove(waiters.d!) // head (newest)
    list.remove(waiters.a!) // tail (oldest)
    list.remove(waiters.a!) // again: no-op
    list.remove(waiter(log, 'stranger'))
    expect(list.size).toBe(1)
    list.abandonAll(() => new Error('gone'))
    expect(log).toEqual(['c:gone'])
    expect(list.size).toBe(0)
  })

  it('abandonAll settles each waiter once, even when a settled waiter removes itself again', () => {
    const log: string[] = []
    const list = new WaiterList()
    for (const n of ['x', 'y', 'z']) {
      waiters[n] = waiter(log, n, list)
      list.add(waiters[n]!)
    }
    let i = 0
    list.abandonAll(() => new Error(`e${i++}`))
    expect(log).toEqual(['z:e0', 'y:e1', 'x:e2'])
    expect(list.size).toBe(0)
    // Re-added after being emptied, a waiter is tracked again.
    list.add(waiters.x!)
    expect(list.size).toBe(1)
  })
})
