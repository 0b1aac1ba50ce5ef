import type { Cluster, ClusterEvents } from 'pgsplit'
import { Counter, Gauge, Registry } from 'prom-client'

/** Kind of a statement as the app sent it. */
export type QueryKind = 'read' | 'write'

/** Which node served the app's queries, by kind: also shown by GET /topology. */
export type ServedCounts = Record<string, Record<QueryKind, number>>

export interface AppMetrics {
  readonly registry: Registry
  /** Counts one of the app's queries, served by `node` (from inet_server_port(), see app.ts). */
  recordQuery(node: string, kind: QueryKind): void
  /** The counts recorded so far. */
  served(): ServedCounts
  /** Stops listening to the cluster (it may outlive the app). */
  close(): void
}

type Listener<K extends keyof ClusterEvents> = (...args: ClusterEvents[K]) => void

/**
 * Prometheus metrics of a pgsplit cluster and of the app's queries. Event counters come from the
 * cluster's events; the node gauges and per-node counters are read from `topology()` at scrape
 * time, so a scrape always shows the cluster as it is then.
 */
export function createMetrics(db: Cluster): AppMetrics {
  const registry = new Registry()
  const registers = [registry]
  const served: ServedCounts = {}

  const appQueries = new Counter({
    name: 'pgsplit_app_queries_total',
    help: "The app's queries by the node that served them and their kind (read or write)",
    labelNames: ['node', 'kind'],
    registers,
  })

  // Per-node counters kept by the cluster: increased by the difference since the last scrape.
  const seen = new Map<string, number>()
  const fromTopology = (name: string, help: string, field: 'queries' | 'errors' | 'retries') =>
    new Counter({
      name,
      help,
      labelNames: ['node'],
      registers,
      collect() {
        for (const node of db.topology().nodes) {
          const key = `${field}|${node.name}`
          const before = seen.get(key) ?? 0
          const now = node[field]
          // A smaller value: the node was removed and added again; its counter started over.
          const delta = now >= before ? now - before : now
          if (delta > 0) this.inc({ node: node.name }, delta)
          else this.inc({ node: node.name }, 0)
          seen.set(key, now)
        }
      },
    })
  fromTopology(
    'pgsplit_node_queries_total',
    // Kysely runs writes on pinned clients (db.connect()), whose statements the cluster cannot see.
    'Statements routed to each node by db.query() (not those on pinned clients from db.connect())',
    'queries',
  )
  fromTopology('pgsplit_node_errors_total', 'Statements that failed on each node', 'errors')
  fromTopology(
    'pgsplit_node_read_retries_total',
    'Reads that failed on a replica and ran elsewhere',
    'retries',
  )

  const failovers = new Counter({
    name: 'pgsplit_failovers_total',
    help: 'Primary changes seen by pgsplit',
    registers,
  })
  const failoverSeconds = new Gauge({
    name: 'pgsplit_last_failover_duration_seconds',
    help: 'From losing the primary to knowing the new one, for the last failover',
    registers,
  })
  const events = new Counter({
    name: 'pgsplit_events_total',
    help: 'Cluster events by name and node',
    labelNames: ['event', 'node'],
    registers,
  })

  const perNode = (
    name: string,
    help: string,
    value: (n: ReturnType<Cluster['topology']>['nodes'][number]) => number | null,
  ) =>
    new Gauge({
      name,
      help,
      labelNames: ['node'],
      registers,
      collect() {
        // Reset first: a node removed (or a replica promoted) leaves no stale series behind.
        this.reset()
        for (const node of db.topology().nodes) {
          const v = value(node)
          if (v !== null) this.set({ node: node.name }, v)
        }
      },
    })
  perNode('pgsplit_node_up', '1 when the health monitor sees the node up', (n) => (n.state === 'up' ? 1 : 0))
  perNode('pgsplit_node_primary', '1 for the node pgsplit sends writes to', (n) =>
    n.role === 'primary' && !n.fenced ? 1 : 0,
  )
  perNode('pgsplit_replica_lag_bytes', 'WAL bytes a replica has not replayed yet', (n) =>
    n.role === 'replica' ? n.lagBytes : null,
  )
  perNode('pgsplit_replica_lag_seconds', 'Time lag of a replica', (n) =>
    n.role === 'replica' && n.lagMs !== null ? n.lagMs / 1000 : null,
  )
  perNode('pgsplit_replica_lagging', '1 when a replica is beyond maxLag (takes no reads)', (n) =>
    n.role === 'replica' ? (n.lagging ? 1 : 0) : null,
  )
  perNode('pgsplit_node_in_flight', 'Statements running on the node now', (n) => n.inFlight)
  new Gauge({
    name: 'pgsplit_pool_connections',
    help: "Connections of each node's pool",
    labelNames: ['node', 'state'],
    registers,
    collect() {
      this.reset()
      for (const node of db.topology().nodes) {
        this.set({ node: node.name, state: 'total' }, node.pool.total)
        this.set({ node: node.name, state: 'idle' }, node.pool.idle)
        this.set({ node: node.name, state: 'waiting' }, node.pool.waiting)
      }
    },
  })
  new Gauge({
    name: 'pgsplit_primary_searching',
    help: '1 while the primary is lost and pgsplit looks for the new one',
    registers,
    collect() {
      this.set(db.topology().searching ? 1 : 0)
    },
  })

  const listeners: { [K in keyof ClusterEvents]?: Listener<K> } = {
    nodeDown: (e) => events.inc({ event: 'nodeDown', node: e.node }),
    nodeUp: (e) => events.inc({ event: 'nodeUp', node: e.node }),
    replicaLagging: (e) => events.inc({ event: 'replicaLagging', node: e.node }),
    replicaCaughtUp: (e) => events.inc({ event: 'replicaCaughtUp', node: e.node }),
    primaryLost: (e) => events.inc({ event: 'primaryLost', node: e.node }),
    readRetried: (e) => events.inc({ event: 'readRetried', node: e.from }),
    reclassified: (e) => events.inc({ event: 'reclassified', node: e.node }),
    splitBrain: (e) => events.inc({ event: 'splitBrain', node: e.primary ?? '' }),
    failover: (e) => {
      failovers.inc()
      failoverSeconds.set(e.durationMs / 1000)
      events.inc({ event: 'failover', node: e.to })
    },
  }
  const on = db.on.bind(db) as <K extends keyof ClusterEvents>(event: K, listener: Listener<K>) => Cluster
  const off = db.off.bind(db) as <K extends keyof ClusterEvents>(event: K, listener: Listener<K>) => Cluster
  for (const [event, listener] of Object.entries(listeners)) {
    on(event as keyof ClusterEvents, listener as Listener<keyof ClusterEvents>)
  }

  return {
    registry,
    recordQuery(node, kind) {
      appQueries.inc({ node, kind })
      served[node] ??= { read: 0, write: 0 }
      served[node][kind]++
    },
    served: () => structuredClone(served),
    close() {
      for (const [event, listener] of Object.entries(listeners)) {
        off(event as keyof ClusterEvents, listener as Listener<keyof ClusterEvents>)
      }
    },
  }
}
