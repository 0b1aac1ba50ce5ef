import net from 'node:net'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { type FaultProxy, startFaultProxy } from '../../src/testing/fault-proxy.js'

// A plain echo server stands in for PostgreSQL: the proxy only moves bytes.
let echo: net.Server
let echoPort: number
const echoSockets = new Set<net.Socket>()
let proxies: FaultProxy[] = []
let clients: net.Socket[] = []

beforeEach(async () => {
  echo = net.createServer((socket) => {
    echoSockets.add(socket)
    socket.on('error', () => {})
    socket.on('close', () => echoSockets.delete(socket))
    socket.pipe(socket)
  })
  await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve))
  echoPort = (echo.address() as net.AddressInfo).port
})

afterEach(async () => {
  for (const c of clients) c.destroy()
  clients = []
  await Promise.all(proxies.map((p) => p.close()))
  proxies = []
  for (const s of echoSockets) s.destroy()
  await new Promise<void>((resolve) => echo.close(() => resolve()))
})

async function proxy(): Promise<FaultProxy> {
  const p = await startFaultProxy({ target: { host: '127.0.0.1', port: echoPort } })
  proxies.push(p)
  return p
}

function connect(p: FaultProxy): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: p.host, port: p.port })
    clients.push(socket)
    socket.once('connect', () => resolve(socket))
    socket.once('error', reject)
  })
}

/** Resolves with the bytes read until `n` arrived, or rejects after `ms`. */
function readBytes(socket: net.Socket, n: number, ms: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let len = 0
    const timer = setTimeout(() => {
      cleanup()
      reject(new Error(`timeout after ${ms} ms with ${len} bytes`))
    }, ms)
    const onData = (d: Buffer) => {
      chunks.push(d)
      len += d.length
      if (len >= n) {
        cleanup()
        resolve(Buffer.concat(chunks))
      }
    }
    const onError = (err: Error) => {
      cleanup()
      reject(err)
    }
    const cleanup = () => {
      clearTimeout(timer)
      socket.off('data', onData)
      socket.off('error', onError)
    }
    socket.on('data', onData)
    socket.on('error', onError)
  })
}

/** Collects everything until the socket closes; records the error, if any. */
function readToClose(
  socket: net.Socket,
): Promise<{ data: Buffer; error: NodeJS.ErrnoException | undefined }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    let error: NodeJS.ErrnoException | undefined
    socket.on('data', (d: Buffer) => chunks.push(d))
    socket.on('error', (err: NodeJS.ErrnoException) => {
      error = err
    })
    socket.on('close', () => resolve({ data: Buffer.concat(chunks), error }))
  })
}

describe('startFaultProxy', () => {
  it('forwards both ways in pass mode', async () => {
    const p = await proxy()
    expect(p.mode).toBe('pass')
    const c = await connect(p)
    c.write('hello')
    expect((await readBytes(c, 5, 2_000)).toString()).toBe('hello')
    expect(p.connectionCount).toBe(1)
  })

  it('delays each chunk by the latency and keeps order', async () => {
    const p = await proxy()
    const c = await connect(p)
    p.setMode({ latencyMs: 150 })
    const started = Date.now()
    c.write('a')
    c.write('b')
    c.write('c')
    const got = await readBytes(c, 3, 5_000)
    const elapsed = Date.now() - started
    expect(got.toString()).toBe('abc')
    // Two hops (to the server and back): at least one latency, generous upper bound.
    expect(elapsed).toBeGreaterThanOrEqual(150 * 0.8)
    expect(elapsed).toBeLessThan(5_000)
  })

  it('moves megabytes intact under backpressure, latency switched on and off midway', async () => {
    const p = await proxy()
    const c = await connect(p)
    const payload = Buffer.alloc(8 * 1024 * 1024)
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 7 + (i >> 13)) & 0xff
    const reading = readBytes(c, payload.length, 20_000)
    c.write(payload.subarray(0, payload.length / 2))
    p.setMode({ latencyMs: 20 })
    c.write(payload.subarray(payload.length / 2))
    setTimeout(() => p.setMode('pass'), 30)
    const got = await reading
    expect(got.equals(payload)).toBe(true)
  })

  it('blackhole: connect succeeds but nothing answers; pass brings new connections back', async () => {
    const p = await proxy()
    p.setMode('blackhole')
    const c = await connect(p)
    c.write('ping')
    await expect(readBytes(c, 1, 300)).rejects.toThrow(/timeout/)
    p.setMode('pass')
    const c2 = await connect(p)
    c2.write('pong')
    expect((await readBytes(c2, 4, 2_000)).toString()).toBe('pong')
  })

  it('blackhole holds data of an existing connection and releases it on pass', async () => {
    const p = await proxy()
    const c = await connect(p)
    c.write('1')
    await readBytes(c, 1, 2_000)
    p.setMode('blackhole')
    c.write('2')
    await expect(readBytes(c, 1, 300)).rejects.toThrow(/timeout/)
    p.setMode('pass')
    expect((await readBytes(c, 1, 2_000)).toString()).toBe('2')
  })

  it('reset: existing and new connections see ECONNRESET', async () => {
    const p = await proxy()
    const c = await connect(p)
    c.write('x')
    await readBytes(c, 1, 2_000)
    const closed = readToClose(c)
    p.setMode('reset')
    expect((await closed).error?.code).toBe('ECONNRESET')
    expect(p.connectionCount).toBe(0)

    const c2 = net.connect({ host: p.host, port: p.port })
    clients.push(c2)
    const closed2 = readToClose(c2)
    c2.on('connect', () => c2.write('y'))
    const r2 = await closed2
    expect(r2.error?.code).toBe('ECONNRESET')
    expect(r2.data.length).toBe(0)
  })

  it('closeAfterBytes closes the connection after N bytes (both directions)', async () => {
    const p = await proxy()
    p.setMode({ closeAfterBytes: 15 })
    const c = await connect(p)
    const closed = readToClose(c)
    // 10 bytes to the server, their echo back: only 5 of it fit in the budget.
    c.write('0123456789')
    const r = await closed
    expect(r.data.toString()).toBe('01234')
    expect(r.error).toBeUndefined()
  })

  it('rewrites postgres URLs to go through the proxy', async () => {
    const p = await startFaultProxy({
      target: `postgres://app:s%40cret@127.0.0.1:${echoPort}/app?sslmode=disable`,
    })
    proxies.push(p)
    expect(p.url).toBe(`postgres://app:s%40cret@127.0.0.1:${p.port}/app?sslmode=disable`)
    expect(p.urlFor('postgresql://u@db.example:6543/x')).toBe(`postgresql://u@127.0.0.1:${p.port}/x`)
    const q = await proxy()
    expect(q.url).toBeUndefined()
    const r = await startFaultProxy({ target: `127.0.0.1:${echoPort}` })
    proxies.push(r)
    const c = await connect(r)
    c.write('z')
    expect((await readBytes(c, 1, 2_000)).toString()).toBe('z')
  })

  it('refuses to listen outside 127.0.0.0/8 and rejects bad modes', async () => {
    await expect(startFaultProxy({ target: `127.0.0.1:${echoPort}`, listenHost: '0.0.0.0' })).rejects.toThrow(
      /127\.0\.0\.0\/8/,
    )
    await expect(
      startFaultProxy({ target: `127.0.0.1:${echoPort}`, listenHost: '10.0.0.1' }),
    ).rejects.toThrow(/loopback/)
    const p = await proxy()
    expect(() => p.setMode({ latencyMs: -1 })).toThrow(/latencyMs/)
    expect(() => p.setMode({ closeAfterBytes: 1.5 })).toThrow(/closeAfterBytes/)
  })

  it('close() ends every socket and leaves no open handle; idempotent', async () => {
    const handles = () =>
      process.getActiveResourcesInfo().filter((r) => r.startsWith('TCP') || r === 'Timeout').length
    const before = handles()
    const p = await startFaultProxy({ target: { host: '127.0.0.1', port: echoPort } })
    const c1 = await connect(p)
    const closed1 = readToClose(c1)
    p.setMode({ latencyMs: 10_000 })
    c1.write('held in a timer')
    p.setMode('blackhole')
    const c2 = await connect(p)
    const closed2 = readToClose(c2)
    await new Promise((r) => setTimeout(r, 50))
    expect(p.connectionCount).toBe(2)
    await Promise.all([p.close(), p.close()])
    await p.close()
    await Promise.all([closed1, closed2])
    expect(p.connectionCount).toBe(0)
    // Echo-side sockets close when the proxy's upstream sockets do.
    const deadline = Date.now() + 2_000
    while (echoSockets.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    expect(echoSockets.size).toBe(0)
    await new Promise((r) => setImmediate(r))
    expect(handles()).toBeLessThanOrEqual(before)
    await expect(connect(p)).rejects.toThrow(/ECONNREFUSED/)
  })
})
