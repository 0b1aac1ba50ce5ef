import net from 'node:net'

/**
 * What the proxy does to the traffic.
 *
 * - `'pass'`: forward as is.
 * - `'blackhole'`: accept connections but forward nothing either way, like a network that drops
 *   every packet. Data is held (reading pauses, so TCP backpressure builds up) and flows again when
 *   the mode leaves `'blackhole'`, as retransmissions would after a partition heals.
 * - `'reset'`: existing and new connections are reset (TCP RST, the client sees `ECONNRESET`).
 * - `{ latencyMs }`: each chunk is delayed by `latencyMs`, in both directions, order kept.
 * - `{ closeAfterBytes }`: a connection is closed once it has forwarded that many bytes (both
 *   directions added up), counted from when the mode took effect on it.
 */
export type FaultMode = 'pass' | 'blackhole' | 'reset' | { latencyMs: number } | { closeAfterBytes: number }

export interface FaultProxyOptions {
  /** Where connections go: `{ host, port }`, `'host:port'` or a `postgres://` URL. */
  target: { host: string; port: number } | string
  /** Loopback address to listen on (127.0.0.0/8 only). Default `'127.0.0.1'`. */
  listenHost?: string
  /** Port to listen on; `0` (default) takes a free one. */
  port?: number
}

export interface FaultProxy {
  readonly host: string
  readonly port: number
  /** The target URL rewritten to go through the proxy (when the target was a postgres URL). */
  readonly url: string | undefined
  /** Rewrites any postgres URL's host and port to the proxy's. */
  urlFor(targetUrl: string): string
  readonly mode: FaultMode
  /** Applies to new AND existing connections. */
  setMode(mode: FaultMode): void
  /** Connections open through the proxy now. */
  readonly connectionCount: number
  /** Closes the listener and every socket. Idempotent. */
  close(): Promise<void>
}

interface Chunk {
  data: Buffer
  due: number
}

/** One direction of a proxied connection: bytes read from `from` are written to `to`. */
interface Flow {
  from: () => net.Socket | undefined
  to: () => net.Socket | undefined
  queue: Chunk[]
  timer: NodeJS.Timeout | undefined
  /** `to` asked us to wait for 'drain'. */
  backpressure: boolean
  /** `from` sent FIN; forward it once the queue is empty. */
  ended: boolean
  endSent: boolean
}

interface Conn {
  client: net.Socket
  upstream: net.Socket | undefined
  upstreamReady: boolean
  up: Flow
  down: Flow
  /** Bytes forwarded since the current closeAfterBytes mode took effect on this connection. */
  bytes: number
  closed: boolean
  graceTimer: NodeJS.Timeout | undefined
}

const LOOPBACK_V4 = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/

function checkListenHost(host: string): string {
  if (host === 'localhost') return '127.0.0.1'
  const m = LOOPBACK_V4.exec(host)
  if (m?.slice(1).every((part) => Number(part) <= 255)) return host
  throw new Error(
    `startFaultProxy: listenHost must be an IPv4 loopback address in 127.0.0.0/8 (got ${JSON.stringify(host)}); ` +
      'the proxy is for tests on this machine only',
  )
}

function stripBrackets(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host
}

function isPostgresUrl(s: string): boolean {
  return /^postgres(ql)?:\/\//i.test(s)
}

function parseTarget(target: FaultProxyOptions['target']): { host: string; port: number } {
  if (typeof target !== 'string') {
    if (!target.host || !Number.isInteger(target.port) || target.port <= 0 || target.port > 65535) {
      throw new Error(`startFaultProxy: invalid target ${JSON.stringify(target)}`)
    }
    return { host: target.host, port: target.port }
  }
  if (isPostgresUrl(target)) {
    let u: URL
    try {
      u = new URL(target)
    } catch {
      // Multi-host URLs (`host1:5432,host2:5432`) land here: the proxy has a single target.
      throw new Error(`startFaultProxy: cannot parse target URL (one host only): ${redact(target)}`)
    }
    if (!u.hostname) throw new Error(`startFaultProxy: target URL has no host: ${redact(target)}`)
    return { host: stripBrackets(u.hostname), port: u.port ? Number(u.port) : 5432 }
  }
  const i = target.lastIndexOf(':')
  const port = Number(target.slice(i + 1))
  if (i <= 0 || !Number.isInteger(port) || port <= 0 || port > 65535) {
    throw new Error(
      `startFaultProxy: target must be 'host:port' or a postgres URL, got ${JSON.stringify(target)}`,
    )
  }
  return { host: stripBrackets(target.slice(0, i)), port }
}

/** Hides the password of a URL for error messages. */
function redact(url: string): string {
  return url.replace(/(\/\/[^:/@]*:)[^@/]*@/, '$1***@')
}

function rewriteUrl(targetUrl: string, host: string, port: number): string {
  if (!isPostgresUrl(targetUrl))
    throw new Error(`FaultProxy.urlFor: not a postgres URL: ${redact(targetUrl)}`)
  let u: URL
  try {
    u = new URL(targetUrl)
  } catch {
    throw new Error(`FaultProxy.urlFor: cannot parse URL (one host only): ${redact(targetUrl)}`)
  }
  u.hostname = host
  u.port = String(port)
  // libpq-style `?host=`/`?port=` parameters would override the authority and bypass the proxy.
  u.searchParams.delete('host')
  u.searchParams.delete('hostaddr')
  u.searchParams.delete('port')
  return u.toString()
}

function checkMode(mode: FaultMode): FaultMode {
  if (mode === 'pass' || mode === 'blackhole' || mode === 'reset') return mode
  if (typeof mode === 'object' && mode !== null) {
    if ('latencyMs' in mode) {
      if (!Number.isFinite(mode.latencyMs) || mode.latencyMs < 0) {
        throw new Error(`FaultProxy: latencyMs must be a number >= 0, got ${mode.latencyMs}`)
      }
      return { latencyMs: mode.latencyMs }
    }
    if ('closeAfterBytes' in mode) {
      if (!Number.isInteger(mode.closeAfterBytes) || mode.closeAfterBytes < 0) {
        throw new Error(`FaultProxy: closeAfterBytes must be an integer >= 0, got ${mode.closeAfterBytes}`)
      }
      return { closeAfterBytes: mode.closeAfterBytes }
    }
  }
  throw new Error(`FaultProxy: unknown mode ${JSON.stringify(mode)}`)
}

class FaultProxyImpl implements FaultProxy {
  readonly host: string
  readonly port: number
  readonly url: string | undefined
  private currentMode: FaultMode = 'pass'
  private readonly conns = new Set<Conn>()
  private closing: Promise<void> | undefined

  constructor(
    private readonly server: net.Server,
    private readonly target: { host: string; port: number },
    address: net.AddressInfo,
    targetUrl: string | undefined,
  ) {
    this.host = address.address
    this.port = address.port
    this.url = targetUrl === undefined ? undefined : rewriteUrl(targetUrl, this.host, this.port)
    server.on('connection', (socket) => this.accept(socket))
    // A listener error after listen() (rare: EMFILE on accept) must not crash the test process.
    server.on('error', () => {})
  }

  get mode(): FaultMode {
    return this.currentMode
  }

  get connectionCount(): number {
    return this.conns.size
  }

  urlFor(targetUrl: string): string {
    return rewriteUrl(targetUrl, this.host, this.port)
  }

  setMode(mode: FaultMode): void {
    const next = checkMode(mode)
    this.currentMode = next
    for (const conn of [...this.conns]) {
      if (next === 'reset') {
        this.reset(conn)
        continue
      }
      if (typeof next === 'object' && 'closeAfterBytes' in next) conn.bytes = 0
      // Chunks delayed under an earlier latency are not held longer than the new mode asks.
      const latency = typeof next === 'object' && 'latencyMs' in next ? next.latencyMs : 0
      const limit = Date.now() + latency
      for (const flow of [conn.up, conn.down]) {
        for (const chunk of flow.queue) chunk.due = Math.min(chunk.due, limit)
      }
      if (next !== 'blackhole' && !conn.upstream) this.connectUpstream(conn)
      if (typeof next === 'object' && 'closeAfterBytes' in next && next.closeAfterBytes === 0) {
        this.finish(conn)
        continue
      }
      this.pump(conn, conn.up)
      this.pump(conn, conn.down)
      this.updateReading(conn)
    }
  }

  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.server.close(() => resolve())
      for (const conn of [...this.conns]) this.destroy(conn)
    })
    return this.closing
  }

  private accept(client: net.Socket): void {
    client.on('error', () => {})
    if (this.closing) {
      client.destroy()
      return
    }
    if (this.currentMode === 'reset') {
      client.resetAndDestroy()
      return
    }
    client.setNoDelay(true)
    const conn: Conn = {
      client,
      upstream: undefined,
      upstreamReady: false,
      up: newFlow(
        () => client,
        () => conn.upstream,
      ),
      down: newFlow(
        () => conn.upstream,
        () => client,
      ),
      bytes: 0,
      closed: false,
      graceTimer: undefined,
    }
    this.conns.add(conn)
    client.on('data', (data: Buffer) => this.onData(conn, conn.up, data))
    client.on('end', () => {
      conn.up.ended = true
      this.pump(conn, conn.up)
    })
    client.on('close', () => this.onSocketClose(conn))
    // In blackhole mode nothing reaches the server, not even the TCP handshake: connect later.
    if (this.currentMode !== 'blackhole') this.connectUpstream(conn)
    this.updateReading(conn)
  }

  private connectUpstream(conn: Conn): void {
    if (conn.upstream || conn.closed) return
    const upstream = net.connect({ host: this.target.host, port: this.target.port, allowHalfOpen: true })
    conn.upstream = upstream
    upstream.on('error', () => {})
    upstream.on('connect', () => {
      upstream.setNoDelay(true)
      conn.upstreamReady = true
      this.pump(conn, conn.up)
      this.updateReading(conn)
    })
    upstream.on('data', (data: Buffer) => this.onData(conn, conn.down, data))
    upstream.on('end', () => {
      conn.down.ended = true
      this.pump(conn, conn.down)
    })
    upstream.on('close', () => this.onSocketClose(conn))
    this.updateReading(conn)
  }

  private onData(conn: Conn, flow: Flow, data: Buffer): void {
    if (conn.closed) return
    const mode = this.currentMode
    const latency = typeof mode === 'object' && 'latencyMs' in mode ? mode.latencyMs : 0
    const last = flow.queue[flow.queue.length - 1]
    // Never earlier than the chunk before it: order is kept when the latency shrinks.
    const due = Math.max(Date.now() + latency, last ? last.due : 0)
    flow.queue.push({ data, due })
    this.pump(conn, flow)
  }

  /** Forwards the chunks of `flow` that are due, as far as the mode and the sockets allow. */
  private pump(conn: Conn, flow: Flow): void {
    if (conn.closed) return
    if (flow.timer) {
      clearTimeout(flow.timer)
      flow.timer = undefined
    }
    const to = flow.to()
    if (this.currentMode === 'blackhole' || !to || (to === conn.upstream && !conn.upstreamReady)) return
    while (flow.queue.length > 0 && !flow.backpressure) {
      const head = flow.queue[0]!
      const wait = head.due - Date.now()
      if (wait > 0) {
        flow.timer = setTimeout(() => {
          flow.timer = undefined
          this.pump(conn, flow)
        }, wait)
        flow.timer.unref()
        return
      }
      flow.queue.shift()
      let data = head.data
      const mode = this.currentMode
      const limit = typeof mode === 'object' && 'closeAfterBytes' in mode ? mode.closeAfterBytes : undefined
      if (limit !== undefined && conn.bytes + data.length >= limit) {
        data = data.subarray(0, limit - conn.bytes)
        conn.bytes = limit
        // Let the last bytes out with a FIN, then drop the connection both ways.
        to.end(data)
        this.finish(conn)
        return
      }
      conn.bytes += data.length
      if (!to.write(data)) {
        flow.backpressure = true
        to.once('drain', () => {
          flow.backpressure = false
          this.updateReading(conn)
          this.pump(conn, flow)
        })
      }
    }
    this.updateReading(conn)
    if (flow.queue.length === 0 && flow.ended && !flow.endSent) {
      flow.endSent = true
      to.end()
    }
  }

  /** Reading pauses under blackhole and backpressure so held data waits in the kernel, not in memory. */
  private updateReading(conn: Conn): void {
    if (conn.closed) return
    const hold = this.currentMode === 'blackhole'
    for (const flow of [conn.up, conn.down]) {
      const socket = flow.from()
      if (!socket || socket.destroyed) continue
      const waitUpstream = flow === conn.up && !conn.upstreamReady
      if (hold || flow.backpressure || waitUpstream) socket.pause()
      else socket.resume()
    }
  }

  private onSocketClose(conn: Conn): void {
    const clientGone = conn.client.destroyed
    const upstreamGone = !conn.upstream || conn.upstream.destroyed
    if (clientGone && upstreamGone) {
      this.destroy(conn)
      return
    }
    // Closing after closeAfterBytes: the grace timer of finish() ends what is left.
    if (conn.closed) return
    // One side closed: once the data heading to the other side has gone out, close that too.
    if (clientGone && conn.upstream) {
      if (conn.up.queue.length === 0 || this.currentMode === 'blackhole') conn.upstream.destroy()
      else conn.upstream.end()
    } else if (upstreamGone) {
      if (conn.down.queue.length === 0 || this.currentMode === 'blackhole') conn.client.destroy()
      else {
        conn.down.ended = true
        this.pump(conn, conn.down)
      }
    }
  }

  /** closeAfterBytes reached: close both sides (FIN), data already written still goes out. */
  private finish(conn: Conn): void {
    this.clearTimers(conn)
    conn.closed = true
    conn.up.queue.length = 0
    conn.down.queue.length = 0
    conn.client.end()
    conn.upstream?.end()
    // end() waits for the peer's FIN under allowHalfOpen; a bounded grace period, then destroy.
    conn.graceTimer = setTimeout(() => this.destroy(conn), 1_000)
    conn.graceTimer.unref()
  }

  private reset(conn: Conn): void {
    this.clearTimers(conn)
    conn.closed = true
    this.conns.delete(conn)
    if (!conn.client.destroyed) conn.client.resetAndDestroy()
    if (conn.upstream && !conn.upstream.destroyed) {
      if (conn.upstreamReady) conn.upstream.resetAndDestroy()
      else conn.upstream.destroy()
    }
  }

  private destroy(conn: Conn): void {
    this.clearTimers(conn)
    conn.closed = true
    this.conns.delete(conn)
    conn.client.destroy()
    conn.upstream?.destroy()
  }

  private clearTimers(conn: Conn): void {
    for (const flow of [conn.up, conn.down]) {
      if (flow.timer) clearTimeout(flow.timer)
      flow.timer = undefined
    }
    if (conn.graceTimer) clearTimeout(conn.graceTimer)
    conn.graceTimer = undefined
  }
}

function newFlow(from: () => net.Socket | undefined, to: () => net.Socket | undefined): Flow {
  return { from, to, queue: [], timer: undefined, backpressure: false, ended: false, endSent: false }
}

/**
 * Starts a TCP proxy on a loopback address whose faults a test switches at will: pass, blackhole,
 * reset, latency, close after N bytes.
 *
 * ```ts
 * const proxy = await startFaultProxy({ target: pg.primaryUrl })
 * const db = createCluster({ primary: proxy.url!, replicas: pg.replicaUrls })
 * proxy.setMode('blackhole')      // the primary is now unreachable, sockets hang
 * proxy.setMode('pass')
 * await proxy.close()
 * ```
 */
export async function startFaultProxy(options: FaultProxyOptions): Promise<FaultProxy> {
  const listenHost = checkListenHost(options.listenHost ?? '127.0.0.1')
  const target = parseTarget(options.target)
  const targetUrl =
    typeof options.target === 'string' && isPostgresUrl(options.target) ? options.target : undefined
  const port = options.port ?? 0
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`startFaultProxy: invalid port ${port}`)
  }
  // allowHalfOpen: a client's FIN is forwarded as a FIN, not turned into a full close.
  const server = net.createServer({ allowHalfOpen: true })
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => reject(err)
    server.once('error', onError)
    server.listen({ host: listenHost, port }, () => {
      server.off('error', onError)
      resolve()
    })
  })
  const address = server.address()
  if (!address || typeof address === 'string') {
    server.close()
    throw new Error('startFaultProxy: the listener has no TCP address')
  }
  return new FaultProxyImpl(server, target, address, targetUrl)
}
