import { dockerUnavailableReason } from '../../src/testing/docker-backend.js'
import { describeClusterScenario } from '../support/cluster-scenario.js'

// The docker backend against a real engine: the same scenario as the local backend's test. Where
// no engine answers (or testcontainers cannot load), the block is skipped and says why.

const unavailable = await dockerUnavailableReason()
if (unavailable) console.log(`testing-docker: skipped: ${unavailable}`)

describeClusterScenario({
  backend: 'docker',
  skip: unavailable,
  // The first run pulls the image: more time than an operation needs.
  options: { timeoutMs: 120_000 },
  startTimeoutMs: 600_000,
  destroyTimeoutMs: 120_000,
  replicationTimeoutMs: 15_000,
  pollMs: 100,
  // The standbys reach their upstream by its name on the cluster network.
  senderOf: (up) => ({ sender_host: up.name }),
})
