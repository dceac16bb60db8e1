import { Redis, Cluster } from 'ioredis'
import type { Config } from './config'

/**
 * A second command connection beside the bus, for what the bus contract has no verb for
 * (presence hashes, history pages from the oldest entry). Null on the memory bus.
 */
export async function createSideRedis (config: Config, busKind: string): Promise<Redis | Cluster | null> {
  if (busKind === 'memory') return null
  const base = { lazyConnect: true, maxRetriesPerRequest: 2, enableOfflineQueue: false, connectionName: 'sse-gateway:side' }
  const client = config.redisUrl !== undefined
    ? new Redis(config.redisUrl, { ...base, retryStrategy: (n: number) => Math.min(50 * 2 ** n, 2000) })
    : new Cluster(config.redisClusterNodes ?? [], { enableOfflineQueue: false, redisOptions: { connectionName: 'sse-gateway:side', maxRetriesPerRequest: 2 }, lazyConnect: true })
  client.on('error', () => { /* readiness and the calls themselves report it */ })
  await client.connect()
  return client
}
