import { describe, expect, it } from 'vitest'
import { normalizeConfig } from '../../src/config.js'
import { ConfigError } from '../../src/errors.js'
import { memberInput } from '../../src/health/topology-source.js'

const node = 'postgres://app:secret@127.0.0.1:5432/app'

describe('patroni / nodes-function config', () => {
  it('normalizes patroni with defaults and hides the REST password', () => {
    const c = normalizeConfig({
      nodes: [node],
      patroni: { urls: ['http://127.0.0.1:8008'], username: 'u', password: 'pw' },
    })
    expect(c.patroni).toMatchObject({
      urls: ['http://127.0.0.1:8008'],
      username: 'u',
      intervalMs: 100,
      timeoutMs: 1000,
    })
    expect(c.patroni!.password).toBe('pw')
    expect(c.patroni!.template).toBe(node)
    // Neither the REST password nor the template's database password is in JSON.
    expect(JSON.stringify(c.patroni)).not.toContain('pw')
    expect(JSON.stringify(c.patroni)).not.toContain('secret')
  })

  it.each([
    [{ nodes: [node], patroni: { urls: [] } }, 'patroni.urls'],
    [{ nodes: [node], patroni: { urls: ['ftp://x'] } }, 'patroni.urls[0]'],
    [{ nodes: [node], patroni: { urls: ['http://x'], password: 'p' } }, 'patroni.password'],
    [{ nodes: [node], patroni: { urls: ['http://x'], intervalMs: 0 } }, 'patroni.intervalMs'],
    [{ nodes: [node], patroni: { urls: ['http://x'], bogus: 1 } }, 'patroni.bogus'],
    [{ patroni: { urls: ['http://x'] } }, 'primary'],
    [{ nodes: async () => [node], patroni: { urls: ['http://x'] } }, 'nodes'],
    [{ nodes: async () => [node], discovery: { intervalMs: -1 } }, 'discovery.intervalMs'],
  ])('rejects %j naming %s', (config, field) => {
    let err: unknown
    try {
      normalizeConfig(config as never)
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(ConfigError)
    expect((err as ConfigError).message).toContain(field)
    expect((err as ConfigError).message).not.toContain('secret')
  })

  it('takes nodes as a function', () => {
    const fn = async () => [node]
    const c = normalizeConfig({ nodes: fn, discovery: { intervalMs: 500 } })
    expect(c.nodes).toEqual([])
    expect(c.nodeSource).toBe(fn)
    expect(c.discovery.intervalMs).toBe(500)
    expect(normalizeConfig({ nodes: fn }).discovery.intervalMs).toBe(5_000)
  })

  it("builds a member's input from the template with the member's address", () => {
    expect(memberInput(node, '10.0.0.2', 5433, 'm2')).toEqual({
      url: 'postgres://app:secret@10.0.0.2:5433/app',
      name: 'm2',
    })
    expect(
      memberInput({ host: 'a', port: 1, user: 'u', password: 'p', database: 'd', name: 'x' }, 'b', 2, 'm'),
    ).toEqual({
      host: 'b',
      port: 2,
      user: 'u',
      password: 'p',
      database: 'd',
      name: 'm',
    })
    // A URL template: the address goes into the URL only (host/port beside a URL are refused).
    const fromUrl = memberInput({ url: node, name: 'node0', max: 5 }, '10.0.0.3', 6000, 'm3')
    expect(fromUrl).toEqual({ url: 'postgres://app:secret@10.0.0.3:6000/app', name: 'm3', max: 5 })
    expect(normalizeConfig({ nodes: [fromUrl] }).nodes[0]).toMatchObject({
      name: 'm3',
      address: { host: '10.0.0.3', port: 6000 },
    })
  })
})
