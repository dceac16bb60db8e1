import { Redis, type RedisOptions } from 'ioredis'
import { SpanKind, SpanStatusCode, trace } from '@opentelemetry/api'
import type { Envelope } from './bus/bus'
import { KeyLayout } from './bus/redis/codec'
import { defineScripts, publishArgs } from './bus/redis/scripts'
import { DEFAULT_LIMITS, MAX_DATA_DEPTH } from './bus/frame'
import { parsePublishBody } from './bus/validate'
import { orThrow } from './errors'
import { toTraceparent } from './trace-context'

export interface PublisherOptions {
  /** Redis URL, or an ioredis client you own (it is not closed by close()). */
  redis: string | Redis
  /** Same as the gateway's CHANNEL_PREFIX. */
  prefix?: string
  /** Same as the gateway's HISTORY_SIZE / HISTORY_TTL_S. */
  historySize?: number
  historyTtlS?: number
  /** Same as the gateway's MAX_FRAME_BYTES: a bigger message is refused here, not dropped there. */
  maxFrameBytes?: number
  redisOptions?: RedisOptions
}

export interface PublishInput {
  channel?: string
  channels?: string[]
  event?: string
  data: unknown
  key?: string
  /** W3C trace context to continue; by default the publish span's (see below). */
  traceparent?: string
}

export interface Publisher {
  /** Publishes one message or many, atomically, with history; resolves with the ids. */
  publish (input: PublishInput | PublishInput[]): Promise<string[]>
  close (): Promise<void>
}

/**
 * Publishes straight into the gateway's Redis, exactly as POST /publish does (same validation,
 * same atomic history-plus-live script), for backends that already hold a Redis connection.
 */
export function createPublisher (opts: PublisherOptions): Publisher {
  const own = typeof opts.redis === 'string'
  const redis = typeof opts.redis === 'string' ? new Redis(opts.redis, opts.redisOptions ?? {}) : opts.redis
  defineScripts(redis)
  const keys = new KeyLayout(opts.prefix ?? 'sse:')
  const size = opts.historySize ?? 1000
  const ttl = opts.historyTtlS ?? 86400
  const limits = { maxFrameBytes: opts.maxFrameBytes ?? DEFAULT_LIMITS.maxFrameBytes, maxDepth: MAX_DATA_DEPTH }
  return {
    async publish (input) {
      // Throws (a 400/413 GatewayError naming the field) before anything reaches Redis.
      const messages: Envelope[] = orThrow(parsePublishBody(input, Date.now(), limits))
      // The OpenTelemetry API, not an SDK: in a backend that registered one, this is a
      // producer span under the active one (the backend's request), and its context travels in
      // each envelope to the gateways' delivery spans. Without an SDK it is a no-op.
      const span = trace.getTracer('sse-gateway/publisher').startSpan('publish', {
        kind: SpanKind.PRODUCER,
        attributes: { 'messaging.system': 'sse-gateway', 'messaging.operation.type': 'send', 'messaging.operation.name': 'publish', 'messaging.batch.message_count': messages.length, 'sse.source': 'publisher' }
      })
      const tp = toTraceparent(span.spanContext())
      if (tp !== undefined) for (const m of messages) if (m.traceparent === undefined) m.traceparent = tp
      try {
        const ids: string[] = await (redis as any).ssePublish(...publishArgs(keys, messages, size, ttl))
        if (ids.length === 1) span.setAttribute('messaging.message.id', ids[0])
        span.setAttribute('sse.message_ids', ids.slice(0, 100))
        return ids
      } catch (err) {
        span.recordException(err as Error)
        span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message })
        throw err
      } finally {
        span.end()
      }
    },
    async close () {
      if (own) await redis.quit()
    }
  }
}
