import type { Cluster, Redis } from 'ioredis'
import { decodeStored, type KeyLayout } from '../bus/redis/codec'
import { ZERO_ID, type BusMessage } from '../bus/bus'
import { READ_LUA } from '../bus/redis/scripts'
import type { HistoryPage, HistoryReader } from './reader'

type Entries = Array<[string, string[]]>
type Client = (Redis | Cluster) & { ssePageRead?: (key: string, after: string, count: string) => Promise<[number, string, Entries]> }

/**
 * Reads pages straight from the history streams: READ_LUA (the bus's own staleness rule), and
 * only when that says the cursor is too old, a second read from the oldest retained entry.
 */
export class RedisHistoryReader implements HistoryReader {
  private readonly r: Client & Required<Pick<Client, 'ssePageRead'>>

  constructor (r: Redis | Cluster, private readonly keys: KeyLayout) {
    const c = r as Client
    if (c.ssePageRead === undefined) c.defineCommand('ssePageRead', { numberOfKeys: 1, lua: READ_LUA })
    this.r = c as typeof this.r
  }

  async page (channel: string, after: string | null, limit: number): Promise<HistoryPage> {
    const key = this.keys.history(channel)
    // One entry beyond the page tells whether there is more.
    const count = String(limit + 1)
    const [stale, head, entries] = await this.r.ssePageRead(key, after ?? ZERO_ID, count)
    let reset = false
    let got = entries
    if (stale === 1) {
      // Asked from the start of a trimmed history: not a reset, the page starts at the oldest retained.
      reset = after !== null
      got = head === ZERO_ID ? [] : await this.r.xrange(key, '-', '+', 'COUNT', count)
    }
    const messages: BusMessage[] = []
    for (const [id, fields] of got.slice(0, limit)) {
      const m = decodeStored(id, fields[1])
      if (m !== null) messages.push(m)
    }
    return { messages, head, reset, more: got.length > limit }
  }
}
