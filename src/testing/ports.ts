import { createServer, type Server } from 'node:net'

/**
 * Returns `count` distinct TCP ports that were free on `host` a moment ago: the kernel picks them
 * (bind to port 0), and all listeners stay open until every port is known, so the ports differ.
 * Another process may still take one before the server binds it; the caller retries on that.
 */
export async function findFreePorts(count: number, host = '127.0.0.1'): Promise<number[]> {
  const servers: Server[] = []
  try {
    const ports: number[] = []
    for (let i = 0; i < count; i++) {
      const server = createServer()
      servers.push(server)
      ports.push(await listen(server, host))
    }
    return ports
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))))
  }
}

/** One free TCP port on `host`; see {@link findFreePorts}. */
export async function findFreePort(host = '127.0.0.1'): Promise<number> {
  const [port] = await findFreePorts(1, host)
  return port!
}

function listen(server: Server, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen({ port: 0, host, exclusive: true }, () => {
      const address = server.address()
      if (address && typeof address === 'object') resolve(address.port)
      else reject(new Error('pgsplit/testing: could not read the port of a listening socket'))
    })
  })
}
