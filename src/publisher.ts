import { Redis, type RedisOptions } from 'ioredis'
import type { Envelope } from './bus/bus'
import { KeyLayout } from './bus/redis/codec'
import { defineScripts, publishArgs } from './bus/redis/scripts'
import { parsePublishBody } from './bus/validate'
import { orThrow } from './errors'

export interface PublisherOptions {
  /** Redis URL, or an ioredis client you own (it is not closed by close()). */
  redis: string | Redis
  /** Same as the gateway's CHANNEL_PREFIX. */
  prefix?: string
  /** Same as the gateway's HISTORY_SIZE / HISTORY_TTL_S. */
  historySize?: number
  historyTtlS?: number
  redisOptions?: RedisOptions
}

export interface PublishInput {
  channel?: string
  channels?: string[]
  event?: string
  data: unknown
  key?: string
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
  return {
    async publish (input) {
      const messages: Envelope[] = orThrow(parsePublishBody(input, Date.now()))
      return await (redis as any).ssePublish(...publishArgs(keys, messages, size, ttl))
    },
    async close () {
      if (own) await redis.quit()
    }
  }
}
