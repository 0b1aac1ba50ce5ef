import { describe, expect, it } from 'vitest'
import { IntrusiveList, type ListLinks } from '../../src/pools/intrusive-list.js'

interface Item extends ListLinks<Item> {
  name: string
}
const item = (name: string): Item => ({ name, prevInList: null, nextInList: null })
const names = (list: IntrusiveList<Item>): string[] => {
  const out: string[] = []
  for (let i = list.first; i !== null; i = i.nextInList) out.push(i.name)
  return out
}

describe('IntrusiveList', () => {
  it('removes from the head, middle and tail, and ignores an item not in it', () => {
    const list = new IntrusiveList<Item>()
    const [a, b, c, d] = ['a', 'b', 'c', 'd'].map(item) as [Item, Item, Item, Item]
    for (const i of [a, b, c, d]) list.add(i)
    expect(names(list)).toEqual(['d', 'c', 'b', 'a'])
    list.remove(b) // middle
    list.remove(d) // head (newest)
    list.remove(a) // tail (oldest)
    list.remove(a) // again: a no-op
    list.remove(item('stranger'))
    expect(names(list)).toEqual(['c'])
    expect(list.size).toBe(1)
    list.remove(c)
    expect(list.size).toBe(0)
    expect(list.first).toBeNull()
  })

  it('drain hands over what it picks, once, and leaves what fn adds for the next pass', () => {
    const list = new IntrusiveList<Item>()
    const items = ['x', 'y', 'z', 'w'].map(item)
    for (const i of items) list.add(i)
    const seen: string[] = []
    list.drain(
      (i) => i.name !== 'y',
      (i) => {
        seen.push(i.name)
        // Settling one may add another (a caller that asks again): not visited in this pass.
        if (i.name === 'z') list.add(item('late'))
      },
    )
    expect(seen).toEqual(['w', 'z', 'x'])
    expect(names(list)).toEqual(['late', 'y'])
    expect(list.size).toBe(2)
  })
})
