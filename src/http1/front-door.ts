// The stream front door: a plain HTTP/1.1 `GET /events` is served off the bare socket, before
// node:http builds a parser, a request, a response and their listeners for it. Those cost
// about 70 µs of CPU per connect and 7 KiB per idle stream (bench/README.md, "Issue 15"),
// which is what a reconnect storm pays 10,000 times. Every other request, and every request
// the head parser is not certain of (./head.ts), goes to node:http and fastify unchanged, with
// the bytes already read put back; so does everything on a socket after its first request.
// The stream itself (auth, channels, limits, the hub) is the same code as the fastify route's.
import { Server } from 'node:http'
import type { Socket } from 'node:net'
import fp from 'fastify-plugin'
import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import { parse as parseQuery } from 'fast-querystring'
import { errors, isRejection, isUnexpected, sendError, toGatewayError } from '../errors'
import { eventsSpec } from '../routes/events'
import { SSE_HEADERS, startStream, type StreamLog, type StreamRequest } from '../routes/stream'
import { parseHead } from './head'
import { nextRequestId } from './request-id'
import { SocketResponse } from './socket-response'

const noop = (): void => {}

/** A logger without isLevelEnabled (fastify's abstract one) takes every line. */
function enabled (log: FastifyBaseLogger, level: string): boolean {
  const check = (log as { isLevelEnabled?: (level: string) => boolean }).isLevelEnabled
  return check === undefined || check.call(log, level)
}

/**
 * Lines under the request id, as fastify's request.log writes them; a pino child per stream
 * would cost its bindings (and the peer address a syscall) even when the level is off.
 */
class RequestLog implements StreamLog {
  constructor (private readonly base: FastifyBaseLogger, private readonly reqId: string) {}
  info (o: object, msg: string): void {
    if (enabled(this.base, 'info')) this.base.info({ reqId: this.reqId, ...o }, msg)
  }

  warn (o: object, msg: string): void {
    if (enabled(this.base, 'warn')) this.base.warn({ reqId: this.reqId, ...o }, msg)
  }

  error (o: object, msg: string): void {
    this.base.error({ reqId: this.reqId, ...o }, msg)
  }
}

/** The CORS headers @fastify/cors (configured in app.ts) puts on a simple GET, for the same config. */
export function corsHeaders (origins: readonly string[] | undefined, origin: string | undefined): Record<string, string> {
  if (origins === undefined) return {}
  if (origins.includes('*')) return { 'access-control-allow-origin': '*', 'access-control-expose-headers': 'retry-after' }
  const h: Record<string, string> = { vary: 'Origin' }
  if (origin !== undefined && origins.includes(origin)) h['access-control-allow-origin'] = origin
  h['access-control-allow-credentials'] = 'true'
  h['access-control-expose-headers'] = 'retry-after'
  return h
}

async function frontDoor (app: FastifyInstance): Promise<void> {
  const server = app.server
  // TLS and HTTP/2 (h2c) servers are not node:http's Server: their streams stay node's.
  if (!(server instanceof Server)) return
  // node:http's own listener, which builds its parser: it gets every socket that is not ours.
  const nodeConnection = server.listeners('connection')[0] as (socket: Socket) => void
  server.off('connection', nodeConnection)
  const origins = app.config.corsOrigins
  // The sockets that are ours (waiting for a head, or serving a stream): node:http does not
  // know them, so server.close()'s closeIdleConnections (after preClose ended the streams)
  // must close them too, or close() would wait for them forever. None has a request in flight.
  const sockets = new Set<Socket>()
  const closeOurs = (): void => {
    for (const socket of sockets) socket.destroy()
    sockets.clear()
  }
  for (const name of ['closeIdleConnections', 'closeAllConnections'] as const) {
    const nodes = server[name].bind(server)
    server[name] = () => {
      nodes()
      closeOurs()
    }
  }

  const stopHeadTimer = (socket: Socket): void => {
    socket.setTimeout(0)
    socket.off('timeout', onHeadTimeout)
  }

  const handOff = (socket: Socket, chunk: Buffer | null): void => {
    sockets.delete(socket)
    socket.off('close', forget)
    socket.off('error', noop)
    stopHeadTimer(socket)
    if (chunk !== null) {
      socket.pause()
      socket.unshift(chunk)
    }
    nodeConnection.call(server, socket)
    if (chunk !== null) socket.resume()
  }

  function onHeadTimeout (this: Socket): void {
    this.destroy()
  }

  // A client that half-closes gets the rest of its stream ended too.
  function endToo (this: Socket): void {
    this.end()
  }

  function forget (this: Socket): void {
    sockets.delete(this)
  }

  server.on('connection', (socket: Socket) => {
    // Until a stream owns it, an error (a reset) must not become an uncaught exception.
    socket.on('error', noop)
    sockets.add(socket)
    socket.on('close', forget)
    // Node's own limit for a head to arrive (headersTimeout) applies while we wait for it too.
    socket.setTimeout(server.headersTimeout)
    socket.on('timeout', onHeadTimeout)
    socket.once('data', (chunk: Buffer) => {
      const head = parseHead(chunk, '/events')
      if (head === null) return handOff(socket, chunk)
      stopHeadTimer(socket)
      void serve(socket, head.url, head.headers)
    })
  })

  async function serve (socket: Socket, url: string, headers: Record<string, string>): Promise<void> {
    // Nothing more is read as a request on this socket; reading on is how its close is seen.
    socket.on('data', noop)
    socket.on('end', endToo)
    const given = headers['x-request-id']
    const id = given !== undefined && given.length > 0 ? given : nextRequestId()
    const log = new RequestLog(app.log, id)
    const q = url.indexOf('?')
    const cookie = headers.cookie
    const request: StreamRequest = {
      id,
      method: 'GET',
      url,
      headers,
      query: q === -1 ? {} : parseQuery(url.slice(q + 1)),
      cookies: cookie !== undefined ? app.parseCookie(cookie) : {},
      log
    }
    // Only what the req serializer (src/logger.ts) reads: never the credential headers, whatever
    // logger the app was given.
    if (enabled(app.log, 'info')) log.info({ req: { method: 'GET', url, ip: socket.remoteAddress, headers: { 'user-agent': headers['user-agent'] } } }, 'incoming request')
    const cors = corsHeaders(origins, headers.origin)
    try {
      // As app.ts's onRequest hook answers every request once the app is closing.
      if (app.hub.draining) throw errors.draining(1)
      const spec = await eventsSpec(app, request)
      await startStream(app, request, spec, () => {
        const res = new SocketResponse(socket)
        return {
          res,
          writeHead: () => {
            res.writeHead(200, { ...cors, ...SSE_HEADERS, connection: 'keep-alive' })
            // The gateway batches by itself; Nagle would only add delay on top of the window.
            socket.setNoDelay(true)
          }
        }
      })
    } catch (err) {
      refuse(socket, err, cors, log)
    }
  }

  /** The error answer app.ts's error handler gives, then the socket closes. */
  function refuse (socket: Socket, err: unknown, cors: Record<string, string>, log: StreamLog): void {
    const e = toGatewayError(err)
    if (isRejection(e)) app.metrics.rejectedFor(e.code).inc()
    if (isUnexpected(err, e)) log.error({ err }, 'request failed')
    log.info({ res: { statusCode: e.statusCode } }, 'request completed')
    if (!socket.destroyed) sendError(new SocketResponse(socket), e, cors)
  }
}

export default fp(frontDoor, { name: 'stream-front-door', fastify: '5.x', dependencies: ['auth'] })
