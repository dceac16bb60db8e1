import { Redis, Cluster, type RedisOptions } from 'ioredis'
import { compareIds, ZERO_ID, type Bus, type BusMessage, type Envelope, type Listener, type ReadResult, type Store } from './bus'
import { decodePublished, decodeStored, encodeEnvelope, KeyLayout } from './codec'
import { PUBLISH_LUA, READ_LUA, REFRESH_LUA, RELEASE_LUA } from './scripts'

export interface RedisBusOptions {
  url: string
  prefix: string
  historySize: number
  historyTtlS: number
  onReconnect?: () => void
  onDropped?: (reason: string) => void
  log?: { warn: (obj: object, msg: string) => void }
}

interface ChannelState {
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

type ScriptClient = Redis & {
  ssePublish (numKeys: number, ...args: string[]): Promise<string[]>
  sseRead (key: string, after: string, count: string): Promise<[number, string, Array<[string, string[]]>]>
  sseRefresh (key: string, value: string, ttl: string): Promise<number>
  sseRelease (key: string, value: string): Promise<number>
}

export function defineScripts (r: Redis | Cluster): void {
  r.defineCommand('ssePublish', { lua: PUBLISH_LUA })
  r.defineCommand('sseRead', { numberOfKeys: 1, lua: READ_LUA })
  r.defineCommand('sseRefresh', { numberOfKeys: 1, lua: REFRESH_LUA })
  r.defineCommand('sseRelease', { numberOfKeys: 1, lua: RELEASE_LUA })
}

/** Builds the argument list of PUBLISH_LUA; shared with the publisher helper. */
export function publishArgs (keys: KeyLayout, messages: Envelope[], historySize: number, ttlS: number): string[] {
  const args: string[] = [String(messages.length)]
  for (const m of messages) args.push(keys.history(m.channel))
  args.push(String(historySize), String(ttlS))
  for (const m of messages) args.push(keys.pubsub(m.channel), encodeEnvelope(m))
  return args
}

/**
 * The multi-instance bus: one command connection and ONE subscriber connection per instance,
 * whatever the number of streams. Channel subscriptions are reference-counted by listener.
 */
export class RedisBus implements Bus {
  readonly kind = 'redis'
  readonly store: Store
  private readonly cmd: ScriptClient
  private readonly sub: Redis
  private readonly keys: KeyLayout
  private readonly channels = new Map<string, ChannelState>()
  private readonly opts: RedisBusOptions
  private closed = false
  private everReady = false

  constructor (opts: RedisBusOptions) {
    this.opts = opts
    this.keys = new KeyLayout(opts.prefix)
    const base: RedisOptions = { lazyConnect: true, maxRetriesPerRequest: 2, retryStrategy: (n: number) => Math.min(50 * 2 ** n, 2000) }
    // Commands fail fast while Redis is away: a publish answers 503 instead of hanging.
    this.cmd = new Redis(opts.url, { ...base, enableOfflineQueue: false, connectionName: 'sse-gateway:cmd' }) as ScriptClient
    // We resubscribe ourselves so that each channel's gap is refilled from history first.
    this.sub = new Redis(opts.url, { ...base, autoResubscribe: false, connectionName: 'sse-gateway:sub' })
    defineScripts(this.cmd)
    this.store = new RedisStore(this.cmd, this.keys)
    this.sub.on('message', (ch: string, payload: string) => this.onPubsub(ch, payload))
    this.sub.on('ready', () => {
      if (this.everReady) this.resync()
      this.everReady = true
    })
    const quiet = (): void => {} // ioredis logs connection errors itself when unhandled; readiness reports them
    this.cmd.on('error', quiet)
    this.sub.on('error', quiet)
  }

  async connect (): Promise<void> {
    await Promise.all([this.cmd.connect(), this.sub.connect()])
  }

  async publish (messages: Envelope[]): Promise<string[]> {
    if (messages.length === 0) return []
    return await this.cmd.ssePublish(...(publishArgs(this.keys, messages, this.opts.historySize, this.opts.historyTtlS) as [number, ...string[]]))
  }

  subscribe (channel: string, listener: Listener): Promise<void> {
    const existing = this.channels.get(channel)
    if (existing !== undefined) {
      existing.listeners.add(listener)
      return existing.ready
    }
    let resolve!: () => void
    const ready = new Promise<void>(r => { resolve = r })
    const st: ChannelState = { listeners: new Set([listener]), lastId: ZERO_ID, buffer: [], known: false, gen: 0, ready, resolve }
    this.channels.set(channel, st)
    this.sub.subscribe(this.keys.pubsub(channel))
      .then(() => this.fill(channel, st))
      .catch(() => { /* a lost connection resyncs every channel on 'ready' */ })
    return ready
  }

  unsubscribe (channel: string, listener: Listener): void {
    const st = this.channels.get(channel)
    if (st === undefined || !st.listeners.delete(listener) || st.listeners.size > 0) return
    this.channels.delete(channel)
    st.resolve()
    this.sub.unsubscribe(this.keys.pubsub(channel)).catch(() => {})
  }

  position (channel: string): string {
    return this.channels.get(channel)?.lastId ?? ZERO_ID
  }

  async read (channel: string, after: string): Promise<ReadResult> {
    const count = this.opts.historySize + 1
    const messages: BusMessage[] = []
    let cursor = after
    for (;;) {
      const [reset, head, entries] = await this.cmd.sseRead(this.keys.history(channel), cursor, String(count))
      if (reset === 1) return { messages: [], head, reset: true }
      for (const [id, fields] of entries) {
        const m = decodeStored(id, fields[1])
        if (m !== null) messages.push(m)
        else this.opts.onDropped?.('malformed')
        cursor = id
      }
      if (entries.length < count) return { messages, head, reset: false }
    }
  }

  isReady (): boolean {
    return !this.closed && this.cmd.status === 'ready' && this.sub.status === 'ready'
  }

  subscriptionCount (): number {
    return this.channels.size
  }

  async close (): Promise<void> {
    this.closed = true
    for (const st of this.channels.values()) st.resolve()
    this.channels.clear()
    await Promise.allSettled([this.cmd.quit(), this.sub.quit()])
    this.cmd.disconnect()
    this.sub.disconnect()
  }

  private onPubsub (pubsub: string, payload: string): void {
    const st = this.channels.get(this.keys.channelOf(pubsub))
    if (st === undefined) return
    const msg = decodePublished(payload)
    if (msg === null) {
      this.opts.onDropped?.('malformed')
      return
    }
    if (st.buffer !== null) st.buffer.push(msg)
    else this.deliver(st, msg)
  }

  private deliver (st: ChannelState, msg: BusMessage): void {
    if (compareIds(msg.id, st.lastId) <= 0) return
    st.lastId = msg.id
    for (const l of st.listeners) l.onMessage(msg)
  }

  /**
   * Brings a channel to live: reads history after `after` (or just the head on first
   * subscribe), delivers it, then whatever arrived live meanwhile, skipping ids already seen.
   */
  private async fill (channel: string, st: ChannelState): Promise<void> {
    const gen = ++st.gen
    for (let attempt = 0; ; attempt++) {
      if (this.closed || this.channels.get(channel) !== st || st.gen !== gen) return
      try {
        if (!st.known) {
          const r = await this.read(channel, '')
          if (st.gen !== gen) return
          st.lastId = r.head
          st.known = true
        } else {
          const r = await this.read(channel, st.lastId)
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

  private resync (): void {
    this.opts.onReconnect?.()
    const all = [...this.channels.entries()]
    if (all.length === 0) return
    for (const [, st] of all) {
      st.gen++ // any fill still in flight gives way to the one below
      if (st.buffer === null) st.buffer = []
    }
    this.sub.subscribe(...all.map(([c]) => this.keys.pubsub(c)))
      .then(() => {
        for (const [channel, st] of all) void this.fill(channel, st)
      })
      .catch(() => { /* the next 'ready' tries again */ })
  }
}

export class RedisStore implements Store {
  constructor (private readonly r: ScriptClient | (Cluster & Omit<ScriptClient, keyof Redis>), private readonly keys: KeyLayout) {}

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
