/** Who a server is: the same physical cluster, and the same running server. */
export interface ServerIdentity {
  /** `pg_control_system().system_identifier`: equal on every member of one physical cluster. */
  systemIdentifier: string | null
  /** `pg_postmaster_start_time()`, microseconds: differs between any two running servers. */
  startedAt: string | null
  timeline: number | null
}

/**
 * True when two addresses reached the same running server: same cluster, same postmaster start
 * (to the microsecond) and same timeline. Two members of one cluster share the identifier but
 * never the start time.
 */
export function sameServer(a: ServerIdentity, b: ServerIdentity): boolean {
  return (
    a.systemIdentifier !== null &&
    a.startedAt !== null &&
    a.systemIdentifier === b.systemIdentifier &&
    a.startedAt === b.startedAt &&
    a.timeline === b.timeline
  )
}

/**
 * The cluster's `system_identifier` when none is established yet: the declared primary's if it
 * answered, else the one most answering nodes share; `null` on a tie (two clusters with as
 * many nodes each: nothing tells which one the application means).
 *
 * ```ts
 * clusterIdentifier([{ systemIdentifier: 'A' }, { systemIdentifier: 'A' }, { systemIdentifier: 'B' }], null) // 'A'
 * ```
 */
export function clusterIdentifier(
  nodes: readonly { systemIdentifier: string | null }[],
  declaredPrimary: string | null,
): string | null {
  if (declaredPrimary !== null) return declaredPrimary
  const counts = new Map<string, number>()
  for (const n of nodes) {
    if (n.systemIdentifier !== null) counts.set(n.systemIdentifier, (counts.get(n.systemIdentifier) ?? 0) + 1)
  }
  let best: string | null = null
  let bestCount = 0
  let tie = false
  for (const [id, count] of counts) {
    if (count > bestCount) {
      best = id
      bestCount = count
      tie = false
    } else if (count === bestCount) {
      tie = true
    }
  }
  return tie ? null : best
}
