import type { Store } from '../store'
import type { KeyLayout } from './codec'
import type { ClusterScriptClient, ScriptClient } from './scripts'

/**
 * The Store on Redis (or Redis Cluster: every operation is one key, so any slot will do). It
 * runs on the command connection of the bus it is made beside (`RedisBus.commands`,
 * `ClusterBus.commands`), so it costs no connection of its own and lives as long as that bus.
 */
export class RedisStore implements Store {
  constructor (private readonly r: ScriptClient | ClusterScriptClient, private readonly keys: KeyLayout) {}

  async set (key: string, value: string, ttlMs: number, nx = false): Promise<boolean> {
    const k = this.keys.store(key)
    const res = nx ? await this.r.set(k, value, 'PX', ttlMs, 'NX') : await this.r.set(k, value, 'PX', ttlMs)
    return res === 'OK'
  }

  async get (key: string): Promise<string | null> {
    return await this.r.get(this.keys.store(key))
  }

  async take (key: string): Promise<string | null> {
    return await this.r.getdel(this.keys.store(key))
  }

  async del (key: string): Promise<void> {
    await this.r.del(this.keys.store(key))
  }

  async refresh (key: string, value: string, ttlMs: number): Promise<boolean> {
    return (await this.r.sseRefresh(this.keys.store(key), value, String(ttlMs))) === 1
  }

  async release (key: string, value: string): Promise<boolean> {
    return (await this.r.sseRelease(this.keys.store(key), value)) === 1
  }
}
