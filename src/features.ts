import type { Cluster, Redis } from 'ioredis'
import type { Bus, Store } from './bus/bus'
import { KeyLayout } from './bus/redis/codec'
import type { Config } from './config'
import type { Hub } from './delivery/hub'
import { MemoryHistoryReader, type HistoryReader } from './history/reader'
import { RedisHistoryReader } from './history/redis'
import { Revocations } from './revocation/revocations'
import { createSideRedis } from './side-redis'
import type { Metrics } from './metrics/metrics'
import { Presence } from './presence/presence'
import { MemoryPresenceBackend } from './presence/memory'
import { RedisPresenceBackend } from './presence/redis'
import { randomBytes } from 'node:crypto'
import { AuthHook } from './auth/hook'
import { StatsPublisher } from './admin/stats'

/** Presence, history pages and revocation: the parts that span instances beside the bus. */
export interface Features {
  revocations: Revocations
  history: HistoryReader
  presence: Presence
  /** AUTH_HOOK_URL, or null. */
  authHook: AuthHook | null
  /** This process among the instances (presence entries, admin stats). */
  instance: string
  close (): Promise<void>
}

export async function createFeatures (o: { config: Config, bus: Bus, store: Store, hub: Hub, metrics: Metrics, name: () => string, log: { warn: (o: object, m: string) => void } }): Promise<Features> {
  const { config, bus, hub, metrics } = o
  const instance = randomBytes(6).toString('hex')
  const side: Redis | Cluster | null = await createSideRedis(config, bus.kind)
  const history: HistoryReader = side !== null
    ? new RedisHistoryReader(side, new KeyLayout(config.channelPrefix, bus.kind === 'redis-cluster'))
    : new MemoryHistoryReader(bus as Bus & { floor (channel: string): string })
  const revocations = new Revocations(bus, o.store, { streams: () => hub.connections, onRevoked: () => metrics.revocations.inc(), log: o.log })
  await revocations.start()
  const presence = new Presence(
    side !== null ? new RedisPresenceBackend(side, config.channelPrefix, instance, config.presence.ttlS) : new MemoryPresenceBackend(),
    bus,
    {
      ttlS: config.presence.ttlS,
      events: config.presence.events,
      maxMembers: config.presence.maxMembers,
      onChange: (members, channels) => {
        metrics.presenceMembers.set(members)
        metrics.presenceChannels.set(channels)
      },
      onEvent: (event, n) => metrics.presenceEventsOf(event).inc(n),
      log: o.log
    })
  hub.observer = presence
  const stats = config.admin.enabled
    ? new StatsPublisher(bus, {
      instance,
      name: o.name,
      connections: () => hub.connections.size,
      subscriptions: () => bus.subscriptionCount(),
      channelSizes: () => hub.channelSizes(),
      presenceMembers: () => presence.size,
      counters: async () => {
        const latency = (await metrics.latency.get()).values.filter(v => v.metricName.endsWith('_bucket'))
        return {
          delivered: (await metrics.delivered.get()).values[0]?.value ?? 0,
          published: (await metrics.published.get()).values.reduce((n, v) => n + v.value, 0),
          latency: { le: latency.map(v => v.labels.le), counts: latency.map(v => v.value) }
        }
      }
    }, o.log)
    : null
  return {
    revocations,
    history,
    presence,
    authHook: config.authHook !== undefined ? new AuthHook(config.authHook.url, config.authHook.cacheS) : null,
    instance,
    async close () {
      stats?.close()
      revocations.close()
      await presence.close()
      if (side !== null) {
        await side.quit().catch(() => {})
        side.disconnect()
      }
    }
  }
}
