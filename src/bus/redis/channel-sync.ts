import { compareIds, ZERO_ID, type BusMessage, type Listener, type ReadResult } from '../bus'

/**
 * The per-channel state machine of the Redis buses (redis-bus.ts on one Redis, cluster-bus.ts on
 * Redis Cluster). The bus owns the subscriber connection(s); this owns what keeps guarantee 3
 * (bus.ts) across anything that may have interrupted a subscription:
 *
 * 1. `suspend`: live messages of the channel wait in a buffer; fills still in flight give way.
 * 2. The bus (re)subscribes, and once the server has CONFIRMED the subscription it calls `fill`:
 *    read history after the last delivered id (or only the head on the first subscribe),
 *    deliver it, then release the buffer.
 * 3. `deliver` drops any id not above the last one delivered, so overlapping history and live
 *    messages, or a refill nobody needed, never duplicate anything.
 */
export interface ChannelState {
  listeners: Set<Listener>
  lastId: string
  /** Non-null while the channel is (re)synchronising: live messages wait here. */
  buffer: BusMessage[] | null
  /** lastId is the real head (the first fill finished). */
  known: boolean
  /** Bumped by each fill, so a fill overtaken by a reconnect's fill gives way. */
  gen: number
  ready: Promise<void>
  resolve: () => void
}

export interface ChannelSyncOptions {
  read: (channel: string, after: string) => Promise<ReadResult>
  head: (channel: string) => Promise<string>
  log?: { warn: (obj: object, msg: string) => void }
}

export class ChannelSync {
  readonly channels = new Map<string, ChannelState>()
  private closed = false

  constructor (private readonly opts: ChannelSyncOptions) {}

  /** Adds a listener. `created`: the channel's first one; the bus subscribes, then calls fill. */
  add (channel: string, listener: Listener): { st: ChannelState, created: boolean } {
    const existing = this.channels.get(channel)
    if (existing !== undefined) {
      existing.listeners.add(listener)
      return { st: existing, created: false }
    }
    let resolve!: () => void
    const ready = new Promise<void>(r => { resolve = r })
    const st: ChannelState = { listeners: new Set([listener]), lastId: ZERO_ID, buffer: [], known: false, gen: 0, ready, resolve }
    this.channels.set(channel, st)
    return { st, created: true }
  }

  /** Removes a listener; true when it was the channel's last (the bus then unsubscribes). */
  remove (channel: string, listener: Listener): boolean {
    const st = this.channels.get(channel)
    if (st === undefined || !st.listeners.delete(listener) || st.listeners.size > 0) return false
    this.channels.delete(channel)
    st.resolve()
    return true
  }

  get (channel: string): ChannelState | undefined {
    return this.channels.get(channel)
  }

  position (channel: string): string {
    return this.channels.get(channel)?.lastId ?? ZERO_ID
  }

  get size (): number {
    return this.channels.size
  }

  /** A live message: it waits while the channel (re)synchronises, else it is delivered. */
  live (st: ChannelState, msg: BusMessage): void {
    if (st.buffer !== null) st.buffer.push(msg)
    else this.deliver(st, msg)
  }

  deliver (st: ChannelState, msg: BusMessage): void {
    if (compareIds(msg.id, st.lastId) <= 0) return
    st.lastId = msg.id
    for (const l of st.listeners) l.onMessage(msg)
  }

  /** The subscription may have lapsed: buffer live messages until the next fill. */
  suspend (st: ChannelState): void {
    st.gen++ // any fill still in flight gives way to the one after the resubscribe
    if (st.buffer === null) st.buffer = []
  }

  /**
   * Brings a channel to live: reads history after `lastId` (or just the head on first
   * subscribe), delivers it, then whatever arrived live meanwhile, skipping ids already seen.
   * Call it only once the server has confirmed the subscription.
   */
  async fill (channel: string, st: ChannelState): Promise<void> {
    const gen = ++st.gen
    for (let attempt = 0; ; attempt++) {
      if (this.closed || this.channels.get(channel) !== st || st.gen !== gen) return
      try {
        if (!st.known) {
          const head = await this.opts.head(channel)
          if (st.gen !== gen) return
          st.lastId = head
          st.known = true
        } else {
          const r = await this.opts.read(channel, st.lastId)
          if (st.gen !== gen) return
          if (r.reset) {
            st.lastId = r.head
            for (const l of st.listeners) l.onReset?.(channel, r.head)
          } else {
            for (const m of r.messages) this.deliver(st, m)
          }
        }
        break
      } catch (err) {
        if (attempt === 0) this.opts.log?.warn({ err, channel }, 'history read failed; retrying')
        await new Promise(resolve => setTimeout(resolve, Math.min(100 * 2 ** attempt, 2000)))
      }
    }
    const buffered = st.buffer ?? []
    st.buffer = null
    for (const m of buffered) this.deliver(st, m)
    st.resolve()
  }

  close (): void {
    this.closed = true
    for (const st of this.channels.values()) st.resolve()
    this.channels.clear()
  }
}
