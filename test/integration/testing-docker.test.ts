import { describe, expect, it } from 'vitest'
import { dockerUnavailableReason } from '../../src/testing/docker-backend.js'
import { TestClusterError } from '../../src/testing/errors.js'
import { startCluster } from '../../src/testing/index.js'
import { describeClusterScenario } from '../support/cluster-scenario.js'
import { skipUnlessCi, testImage } from '../support/docker.js'

// The docker backend against a real engine: the same scenario as the local backend's test, on
// the image of PGSPLIT_TEST_DOCKER_IMAGE (scripts/docker-setup.sh sets it), else of
// PGSPLIT_DOCKER_IMAGE, else postgres:16-alpine, passed as the `image` option. Where no engine answers (or the image cannot be had) the block is
// skipped and says why; on CI (CI=true) the file fails instead.

const image = testImage()
const unavailable = skipUnlessCi('testing-docker.test.ts', await dockerUnavailableReason(undefined, image))

describeClusterScenario({
  backend: 'docker',
  skip: unavailable,
  // The first run may pull the image: more time than an operation needs.
  options: { timeoutMs: 120_000, image },
  startTimeoutMs: 600_000,
  destroyTimeoutMs: 120_000,
  replicationTimeoutMs: 15_000,
  pollMs: 100,
  // The standbys reach their upstream by its name on the cluster network.
  senderOf: (up) => ({ sender_host: up.name }),
})

describe.skipIf(unavailable !== undefined)('the docker backend without its image', () => {
  const missing = 'pgsplit-test/no-such-image:0'

  it("backend: 'docker' throws a TestClusterError naming the image and the ways out", async () => {
    const err = await startCluster({ backend: 'docker', image: missing, replicas: 0 }).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(err).toBeInstanceOf(TestClusterError)
    const message = (err as Error).message
    expect(message).toContain(missing)
    expect(message).toContain('PGSPLIT_DOCKER_IMAGE')
    expect(message).toContain("backend: 'local'")
  })

  it("backend: 'auto' falls back to the local backend and says why", async () => {
    const lines: string[] = []
    const cluster = await startCluster({
      backend: 'auto',
      image: missing,
      replicas: 0,
      log: (l) => lines.push(l),
    })
    try {
      expect(cluster.backend).toBe('local')
      expect(lines.some((l) => l.includes('using the local backend') && l.includes(missing))).toBe(true)
    } finally {
      await cluster.destroy()
    }
  }, 120_000)

  it('says what to do when Ryuk is enabled and its image cannot be had', async () => {
    const saved = {
      disabled: process.env.TESTCONTAINERS_RYUK_DISABLED,
      image: process.env.RYUK_CONTAINER_IMAGE,
    }
    process.env.TESTCONTAINERS_RYUK_DISABLED = 'false'
    process.env.RYUK_CONTAINER_IMAGE = 'pgsplit-test/no-such-ryuk:0'
    try {
      const reason = await dockerUnavailableReason(undefined, image)
      expect(reason).toContain('pgsplit-test/no-such-ryuk:0')
      expect(reason).toContain('TESTCONTAINERS_RYUK_DISABLED=true')
    } finally {
      for (const [k, v] of [
        ['TESTCONTAINERS_RYUK_DISABLED', saved.disabled],
        ['RYUK_CONTAINER_IMAGE', saved.image],
      ] as const) {
        if (v === undefined) delete process.env[k]
        else process.env[k] = v
      }
    }
  })
})
