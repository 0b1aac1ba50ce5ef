/** The links an item of an {@link IntrusiveList} carries itself. */
export interface ListLinks<T> {
  prevInList: T | null
  nextInList: T | null
}

/**
 * A doubly-linked list whose items carry their own links: O(1) add and remove, no allocation.
 * Every checkout and every statement passes through one (callers waiting for a client, statements
 * under a deadline); a `Set` of short-lived items made V8 reallocate its table under churn
 * (measured: scavenges promoted 15 times more, and GC took 2.5 µs more per query than a raw
 * `pg.Pool`). An item is in at most one list at a time.
 */
export class IntrusiveList<T extends ListLinks<T>> {
  #head: T | null = null
  #size = 0

  get size(): number {
    return this.#size
  }

  get first(): T | null {
    return this.#head
  }

  add(item: T): void {
    item.prevInList = null
    item.nextInList = this.#head
    if (this.#head !== null) this.#head.prevInList = item
    this.#head = item
    this.#size++
  }

  /** Removes `item` if it is in the list (a no-op otherwise). */
  remove(item: T): void {
    const prev = item.prevInList
    const next = item.nextInList
    if (prev === null && this.#head !== item) return
    if (prev !== null) prev.nextInList = next
    else this.#head = next
    if (next !== null) next.prevInList = prev
    item.prevInList = null
    item.nextInList = null
    this.#size--
  }

  /**
   * Removes and hands to `fn` every item `pick` selects, newest first. Bounded by the count taken
   * before the first call: an item `fn` adds is left for the next pass.
   */
  drain(pick: (item: T) => boolean, fn: (item: T) => void): void {
    let item = this.#head
    for (let n = this.#size; n > 0 && item !== null; n--) {
      const next = item.nextInList
      if (pick(item)) {
        this.remove(item)
        fn(item)
      }
      item = next
    }
  }
}
