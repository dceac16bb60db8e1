import type { Cluster, Redis } from 'ioredis'
import type { Bus, Store } from './bus/bus'
import { KeyLayout } from './bus/redis/codec'
import type { Config } from './config'
import type { Hub } from './delivery/hub'
import { MemoryHistoryReader, type HistoryReader } from './history/reader'
import { RedisHistoryReader } from './history/redis'
import { Revocations } from './revocation/revocations'
import { createSideRedis } from './side-redis'

/** Presence, history pages and revocation: the parts that span instances beside the bus. */
export interface Features {
  revocations: Revocations
  history: HistoryReader
  close (): Promise<void>
}

export async function createFeatures (o: { config: Config, bus: Bus, store: Store, hub: Hub, log: { warn: (o: object, m: string) => void } }): Promise<Features> {
  const { config, bus, hub } = o
  const side: Redis | Cluster | null = await createSideRedis(config, bus.kind)
  const history: HistoryReader = side !== null
    ? new RedisHistoryReader(side, new KeyLayout(config.channelPrefix, bus.kind === 'redis-cluster'))
    : new MemoryHistoryReader(bus as Bus & { floor (channel: string): string })
  const revocations = new Revocations(bus, o.store, { streams: () => hub.connections, log: o.log })
  await revocations.start()
  return {
    revocations,
    history,
    async close () {
      revocations.close()
      if (side !== null) {
        await side.quit().catch(() => {})
        side.disconnect()
      }
    }
  }
}
