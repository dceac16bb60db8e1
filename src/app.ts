import { STATUS_CODES } from 'node:http'
import { hostname } from 'node:os'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyServerOptions } from 'fastify'
import fastifyCors from '@fastify/cors'
import type { Config } from './config'
import { BusUnreachable, type Bus } from './bus/bus'
import { MAX_DATA_DEPTH, type MessageLimits } from './bus/frame'
import { MemoryStore, type Store } from './bus/store'
import { MemoryBus } from './bus/memory-bus'
import { RedisBus } from './bus/redis/redis-bus'
import { ClusterBus } from './bus/redis/cluster-bus'
import { Hub } from './delivery/hub'
import { createMetrics, type Metrics } from './metrics/metrics'
import authPlugin from './auth/plugin'
import { errors, GatewayError, isRejection, isUnexpected, toGatewayError } from './errors'
import frontDoor from './http1/front-door'
import { nextRequestId } from './http1/request-id'
import { loggerOptions } from './logger'
import eventsRoutes from './routes/events'
import publishRoutes from './routes/publish'
import ticketRoutes from './routes/tickets'
import healthRoutes from './routes/health'
import replicatePlugin, { type ReplicateOptions } from './routes/replicate'
import demoRoutes from './routes/demo'
import type { Tracing } from './otel'
import { createFeatures, type Features } from './features'
import channelRoutes from './routes/channels'
import disconnectRoutes from './routes/disconnect'
import adminRoutes from './routes/admin'

declare module 'fastify' {
  interface FastifyInstance {
    /** Trace export (OTEL_EXPORTER_OTLP_*), or null: off, and no OpenTelemetry code loaded. */
    tracing: Tracing | null
    config: Config
    bus: Bus
    store: Store
    hub: Hub
    metrics: Metrics
    /** What a message may be, checked where it enters (routes, every bus, delivery). */
    limits: MessageLimits
    features: Features
  }
}

export interface BuildOptions {
  config: Config
  /** A bus to use instead of the one the config describes (it is then not closed with the app). */
  bus?: Bus
  /** The store beside `bus` (default: one on the Redis bus's connection, else in memory). */
  store?: Store
  metrics?: Metrics
  /** A pino logger instance, or fastify logger options; defaults from config.logLevel. */
  logger?: FastifyServerOptions['loggerInstance'] | false
  /** Replicate proxy timings and fetch; the defaults suit production, tests shorten them. */
  replicate?: ReplicateOptions
}

/** The bus and the key-value store beside it; on Redis the store shares the bus's command connection. */
export interface Backend {
  bus: Bus
  store: Store
}

export function limitsOf (config: Config): MessageLimits {
  return { maxFrameBytes: config.maxFrameBytes, maxDepth: MAX_DATA_DEPTH }
}

export async function createBus (config: Config, metrics: Metrics, log?: { warn: (o: object, m: string) => void }): Promise<Bus> {
  const common = {
    prefix: config.channelPrefix,
    historySize: config.historySize,
    historyTtlS: config.historyTtlS,
    limits: limitsOf(config),
    onReconnect: () => metrics.busReconnects.inc(),
    onDropped: (reason: string) => metrics.droppedFor(reason).inc(),
    log
  }
  if (config.redisUrl !== undefined || config.redisClusterNodes !== undefined) {
    const bus = config.redisUrl !== undefined
      ? new RedisBus({ url: config.redisUrl, ...common })
      : new ClusterBus({ nodes: config.redisClusterNodes as Array<{ host: string, port: number }>, ...common })
    try {
      await bus.connect()
    } catch (err) {
      // One line naming the variable to fix, like a bad value in loadConfig.
      if (err instanceof BusUnreachable) throw new Error(`${config.redisUrl !== undefined ? 'REDIS_URL' : 'REDIS_CLUSTER_NODES'}: ${err.message}`)
      throw err
    }
    return bus
  }
  return new MemoryBus(common)
}

const CLIENT_ERRORS: Record<string, GatewayError> = {
  HPE_HEADER_OVERFLOW: new GatewayError(431, 'headers_too_large', 'the request headers are too large'),
  ERR_HTTP_REQUEST_TIMEOUT: new GatewayError(408, 'request_timeout', 'the request took too long to arrive')
}
const NOT_HTTP = errors.badRequest(400, 'the request is not valid HTTP')

/**
 * Requests Node's HTTP parser rejects never reach a route: answer them in the gateway's error
 * shape too (fastify's default writes its own), then drop the connection, which is unusable.
 */
function clientErrorHandler (this: FastifyInstance, err: Error & { code?: string }, socket: import('node:net').Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return
  const e = CLIENT_ERRORS[err.code ?? ''] ?? NOT_HTTP
  const body = JSON.stringify({ error: e.code, message: e.message })
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${e.statusCode} ${STATUS_CODES[e.statusCode] ?? ''}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`)
  }
  socket.destroy()
}

/** The store that belongs beside `bus`. */
export function storeBeside (bus: Bus): Store {
  return bus instanceof RedisBus || bus instanceof ClusterBus ? bus.createStore() : new MemoryStore()
}

export async function createBackend (config: Config, metrics: Metrics, log?: { warn: (o: object, m: string) => void }): Promise<Backend> {
  const bus = await createBus(config, metrics, log)
  return { bus, store: storeBeside(bus) }
}

/**
 * HTTP/2 over TLS (ALPN; HTTP/1.1 clients still served) when a certificate is configured, h2c
 * with HTTP2_CLEARTEXT, else HTTP/1.1. Routes, framing and limits are the same on all three;
 * only the write path differs (src/delivery/connection.ts).
 */
function serverOptions (config: Config): Record<string, unknown> {
  // An HTTP/2 session with no frame for this long is closed; heartbeats keep stream sessions busy.
  const http2SessionTimeout = Math.max(72000, config.heartbeatMs * 3)
  // On close, HTTP/2 sessions get a GOAWAY, which lets the requests in flight finish
  // (fastify's closeHttp2Sessions, made only when this is true).
  const h2 = { http2: true, http2SessionTimeout, forceCloseConnections: true }
  if (config.tls !== undefined) return { ...h2, https: { cert: config.tls.cert, key: config.tls.key, allowHTTP1: true } }
  if (config.http2Cleartext) return h2
  // close() ends idle keep-alive sockets at once but lets a request in flight finish: a
  // publish that reached the bus is answered, so its client never retries an applied batch
  // (`true` would cut it, and the retry would publish the batch twice).
  return { forceCloseConnections: 'idle' }
}

/** host:port this instance listens on, for the operator page. */
function listenName (app: FastifyInstance): string {
  const a = app.server.address()
  return a !== null && typeof a === 'object' ? `${hostname()}:${a.port}` : hostname()
}

export async function buildApp (opts: BuildOptions): Promise<FastifyInstance> {
  const { config } = opts
  const app = Fastify({
    ...(opts.logger === false ? { logger: false } : opts.logger !== undefined ? { loggerInstance: opts.logger } : { logger: loggerOptions(config.logLevel) }),
    requestIdHeader: 'x-request-id',
    genReqId: nextRequestId,
    // Channel names (up to 200 characters, percent-encoded) are path parameters of /channels/:channel/*.
    routerOptions: { maxParamLength: 2048 },
    bodyLimit: config.maxBodyBytes,
    // Streams live for hours; only the socket's own idleness ends them.
    requestTimeout: 0,
    // Answered by the onRequest hook below, in the gateway's error shape.
    return503OnClosing: false,
    clientErrorHandler,
    // Errors raised before routing (a malformed URL) skip setErrorHandler: same shape here.
    frameworkErrors: (err: Error & { code?: string }, _request: unknown, reply: FastifyReply) => {
      const e = errors.badRequest(400, err.code === 'FST_ERR_BAD_URL' ? 'the URL is malformed' : err.message)
      void reply.code(e.statusCode).send({ error: e.code, message: e.message })
    },
    ...serverOptions(config)
  }) as unknown as FastifyInstance
  const metrics = opts.metrics ?? createMetrics()
  const bus = opts.bus ?? await createBus(config, metrics, app.log)
  const limits = limitsOf(config)
  const store = opts.store ?? storeBeside(bus)
  // Loaded only when configured: with tracing off no OpenTelemetry module is ever required.
  // A require rather than import(): this is CommonJS, and import() would wrap it as ESM.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const tracing = config.otel !== undefined ? (require('./otel') as typeof import('./otel')).startTracing(config.otel) : null
  const hub = new Hub(bus, {
    limits,
    batchWindowMs: config.batchWindowMs,
    heartbeatMs: config.heartbeatMs,
    maxConnections: config.maxConnections,
    maxConnectionsPerUser: config.maxConnectionsPerUser,
    retryMs: config.retryMs,
    // Longer than a subscriber reconnect (ioredis retries after 100 ms, then 200, 400...), short
    // enough that a client facing a real outage gets its 503 + Retry-After promptly.
    busWaitMs: 1000,
    log: app.log,
    tracer: tracing?.delivery ?? null
  }, metrics)
  app.decorate('tracing', tracing)
  app.decorate('config', config)
  app.decorate('bus', bus)
  app.decorate('store', store)
  app.decorate('hub', hub)
  app.decorate('metrics', metrics)
  app.decorate('limits', limits)

  app.setErrorHandler((err: unknown, request, reply) => {
    const e = toGatewayError(err)
    if (isUnexpected(err, e)) request.log.error({ err }, 'request failed')
    if (request.url.startsWith('/events') && isRejection(e)) metrics.rejectedFor(e.code).inc()
    if (e.headers !== undefined) reply.headers(e.headers)
    return reply.code(e.statusCode).send({ error: e.code, message: e.message })
  })
  app.setNotFoundHandler((request, reply) => {
    const e = errors.noRoute(request.method, request.url.split('?')[0])
    reply.code(e.statusCode).send({ error: e.code, message: e.message })
  })

  let closing = false
  app.addHook('onRequest', async (request, reply) => {
    if (!closing) return
    const e = errors.draining(1)
    reply.code(e.statusCode).headers({ ...e.headers, connection: 'close' })
    return await reply.send({ error: e.code, message: e.message })
  })
  // A request that was in flight when close began: its socket closes after the answer, instead
  // of idling until keepAliveTimeout and holding close() for it.
  app.addHook('onSend', async (request, reply) => {
    if (closing) reply.header('connection', 'close')
  })

  if (config.corsOrigins !== undefined) {
    // `*` is any origin WITHOUT credentials (the literal `*`, which browsers never combine with
    // cookies); a list is those exact origins, with credentials. `null` is refused by config.
    const any = config.corsOrigins.includes('*')
    await app.register(fastifyCors, {
      origin: any ? '*' : config.corsOrigins,
      credentials: !any,
      allowedHeaders: ['authorization', 'content-type', 'last-event-id'],
      // The client honours Retry-After on 429/503 only if the browser lets it read the header.
      exposedHeaders: ['retry-after'],
      maxAge: 600
    })
  }
  const features = await createFeatures({ config, bus, store, hub, metrics, name: () => listenName(app), log: app.log })
  app.decorate('features', features)
  // The revocation check: two Map lookups on every authenticated request, no round trip.
  await app.register(authPlugin, { config, store, refuse: (claims) => features.revocations.check(claims) })
  await app.register(healthRoutes)
  await app.register(eventsRoutes)
  await app.register(frontDoor)
  await app.register(publishRoutes)
  await app.register(ticketRoutes)
  await app.register(replicatePlugin, opts.replicate ?? {})
  await app.register(demoRoutes)
  await app.register(channelRoutes)
  await app.register(disconnectRoutes)
  await app.register(adminRoutes)

  // Streams are hijacked responses: the HTTP server's close would wait for them forever, so
  // they end before it (preClose), and the bus closes after it (onClose).
  app.addHook('preClose', async () => {
    closing = true
    hub.close()
  })
  app.addHook('onClose', async () => {
    await features.close()
    if (opts.bus === undefined) await bus.close()
    // Last: exports the spans of everything above.
    await tracing?.shutdown()
  })
  return app
}
