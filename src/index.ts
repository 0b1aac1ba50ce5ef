export {
  Cluster,
  type ClusterEvents,
  type ConnectOptions,
  createCluster,
  type IsolationLevel,
  type QueryOptions,
  type RoleTarget,
  type RouteRole,
  type SessionOptions,
  type TopologySnapshot,
  type TransactionOptions,
} from './cluster.js'
export type {
  ClusterConfig,
  ConsistencyMode,
  HealthCheckConfig,
  MaxLag,
  NodeConfig,
  NodeInput,
  PatroniConfig,
  PoolOptions,
  ReadCandidate,
  ReadStrategy,
  ReadStrategyFunction,
  ReadStrategyName,
  TokensConfig,
} from './config.js'
export {
  ClusterEndedError,
  ConfigError,
  InvalidTokenError,
  type InvalidTokenReason,
  NoPrimaryError,
  NoReplicaAvailableError,
  PgsplitError,
  PoolExhaustedError,
  PrimaryReadOnlyError,
  TimeoutError,
  TokenAheadError,
  TransactionStatementError,
  WriteOutcomeUnknownError,
} from './errors.js'
export type { SourceSnapshot } from './health/topology-follower.js'
export { redact } from './pools/connection-string.js'
export type { NodeRole, NodeSnapshot, NodeState } from './pools/node.js'
export {
  type Classification,
  type ClassifyOptions,
  classify,
  hasPrimaryHint,
  PRIMARY_HINT,
  StatementClassifier,
  type StatementKind,
} from './router/classify.js'
export { formatToken, parseToken, type WriteToken } from './router/consistency.js'
