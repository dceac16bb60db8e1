import { Redis, type RedisOptions } from 'ioredis'
import { connectOrExplain, type Bus, type Envelope, type Listener, type ReadResult } from '../bus'
import { DEFAULT_LIMITS, type MessageLimits } from '../frame'
import { checkEnvelopes } from '../validate'
import type { Store } from '../store'
import { ChannelSync, type ChannelState } from './channel-sync'
import { decodePublished, KeyLayout } from './codec'
import { defineScripts, headOf, publishArgs, readHistory, type ReadReply, type ScriptClient } from './scripts'
import { RedisStore } from './store'

export interface RedisBusOptions {
  url: string
  prefix: string
  historySize: number
  historyTtlS: number
  onReconnect?: () => void
  onDropped?: (reason: string) => void
  log?: { warn: (obj: object, msg: string) => void }
  limits?: MessageLimits
}

/** History reads per READS_LUA call: one script runs alone on the Redis server while it lasts. */
const READS_PER_CALL = 200
/** Subscribes closer together than this are a burst: they wait BATCH_WINDOW_MS for company. */
const BATCH_GAP_MS = 50
const BATCH_WINDOW_MS = 3

/**
 * The multi-instance bus: one command connection and ONE subscriber connection per instance,
 * whatever the number of streams. Channel subscriptions are reference-counted by listener.
 */
export class RedisBus implements Bus {
  readonly kind = 'redis'
  /** The command connection (publish, history, and the store made by `createStore`). */
  private readonly cmd: ScriptClient
  private readonly sub: Redis
  private readonly keys: KeyLayout
  private readonly sync: ChannelSync
  private readonly opts: RedisBusOptions
  private closed = false
  private everReady = false
  /**
   * SUBSCRIBE / UNSUBSCRIBE wait for the end of the event-loop turn, so every stream that
   * arrives in one turn shares one command (and one round trip); the head reads that follow
   * the confirmation share one pipelined write (enableAutoPipelining, also per turn).
   */
  private readonly toSubscribe = new Map<string, ChannelState>()
  private readonly toUnsubscribe = new Set<string>()
  private flushScheduled = false
  /** A SUBSCRIBE batch awaits its confirmation: what arrives meanwhile joins the next batch. */
  private subscribing = false

  constructor (opts: RedisBusOptions) {
    this.opts = opts
    this.keys = new KeyLayout(opts.prefix)
    const base: RedisOptions = { lazyConnect: true, maxRetriesPerRequest: 2, retryStrategy: (n: number) => Math.min(50 * 2 ** n, 2000) }
    // Commands fail fast while Redis is away: a publish answers 503 instead of hanging.
    // Named with the prefix, so CLIENT LIST tells which deployment (or test) holds a connection.
    this.cmd = new Redis(opts.url, { ...base, enableOfflineQueue: false, enableAutoPipelining: true, connectionName: `sse-gateway:cmd:${opts.prefix}` }) as ScriptClient
    // We resubscribe ourselves so that each channel's gap is refilled from history first.
    this.sub = new Redis(opts.url, { ...base, autoResubscribe: false, connectionName: `sse-gateway:sub:${opts.prefix}` })
    defineScripts(this.cmd)
    this.sync = new ChannelSync({ read: (channel, after) => this.read(channel, after), head: (channel) => this.head(channel), log: opts.log, onDropped: opts.onDropped })
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
    try {
      await connectOrExplain([this.cmd, this.sub], async () => await Promise.all([this.cmd.connect(), this.sub.connect()]), addressOf(this.opts.url))
    } catch (err) {
      // Not retried in the background of a start that has failed.
      this.cmd.disconnect()
      this.sub.disconnect()
      throw err
    }
  }

  async publish (messages: Envelope[]): Promise<string[]> {
    if (messages.length === 0) return []
    checkEnvelopes(messages, this.opts.limits ?? DEFAULT_LIMITS)
    return await this.cmd.ssePublish(...(publishArgs(this.keys, messages, this.opts.historySize, this.opts.historyTtlS) as [number, ...string[]]))
  }

  subscribe (channel: string, listener: Listener): Promise<void> {
    const { st, created } = this.sync.add(channel, listener)
    if (created) {
      this.toSubscribe.set(channel, st)
      this.scheduleFlush()
    }
    return st.ready
  }

  unsubscribe (channel: string, listener: Listener): void {
    if (!this.sync.remove(channel, listener)) return
    // Subscribed and left within one turn: Redis never heard of it.
    if (this.toSubscribe.delete(channel)) return
    this.toUnsubscribe.add(this.keys.pubsub(channel))
    this.scheduleFlush()
  }

  private scheduleFlush (): void {
    if (this.flushScheduled || this.subscribing) return
    this.flushScheduled = true
    // A lone subscribe goes at once; while they keep coming (a storm, a deploy), one batch
    // every few ms: measured at 10,000 connects, the batches grew from 2.5 to ~10 channels and
    // the gateway's CPU per connect fell by about half (bench/README.md, "Issue 15").
    const now = Date.now()
    if (now - this.lastFlushAt > BATCH_GAP_MS) setImmediate(this.flushNow)
    else setTimeout(this.flushNow, BATCH_WINDOW_MS)
  }

  private readonly flushNow = (): void => this.flushSubscriptions()
  private lastFlushAt = 0

  private flushSubscriptions (): void {
    this.flushScheduled = false
    this.lastFlushAt = Date.now()
    if (this.closed) return
    // Unsubscribes first: a channel left and re-joined in one turn ends subscribed.
    if (this.toUnsubscribe.size > 0) {
      const keys = [...this.toUnsubscribe]
      this.toUnsubscribe.clear()
      this.sub.unsubscribe(...keys).catch(() => {})
    }
    if (this.toSubscribe.size === 0) return
    const batch = [...this.toSubscribe]
    this.toSubscribe.clear()
    // One batch in flight at a time (group commit): in a reconnect storm, the channels of every
    // connect that arrives during one round trip share the next SUBSCRIBE and its head reads,
    // instead of a round trip per event-loop turn; an idle gateway still sends at once.
    this.subscribing = true
    this.sub.subscribe(...batch.map(([channel]) => this.keys.pubsub(channel)))
      .then(() => {
        for (const [channel, st] of batch) void this.sync.fill(channel, st)
      })
      .catch(() => { /* a lost connection resyncs every channel on 'ready' */ })
      .finally(() => {
        this.subscribing = false
        if (this.toSubscribe.size > 0 || this.toUnsubscribe.size > 0) this.scheduleFlush()
      })
  }

  position (channel: string): string {
    return this.sync.position(channel)
  }

  async read (channel: string, after: string): Promise<ReadResult> {
    return await readHistory(this.runRead, this.keys.history(channel), after, this.opts.historySize, this.opts.onDropped)
  }

  async head (channel: string): Promise<string> {
    return await headOf(this.runRead, this.keys.history(channel))
  }

  /**
   * History reads (heads and replays) asked for in the same tick share one script call: the
   * head reads of a SUBSCRIBE batch, and the replays of the resuming streams it lets through
   * together. In a reconnect storm that is one command per batch instead of one per channel.
   */
  private readonly runRead = async (key: string, after: string, count: string): Promise<ReadReply> => {
    return await new Promise<ReadReply>((resolve, reject) => {
      if (this.reads === null) {
        this.reads = []
        process.nextTick(this.flushReads)
      }
      this.reads.push({ key, after, count, resolve, reject })
    })
  }

  private reads: Array<{ key: string, after: string, count: string, resolve: (r: ReadReply) => void, reject: (err: unknown) => void }> | null = null
  private readonly flushReads = (): void => {
    const all = this.reads ?? []
    this.reads = null
    for (let i = 0; i < all.length; i += READS_PER_CALL) {
      const batch = all.slice(i, i + READS_PER_CALL)
      const args: string[] = batch.map(r => r.key)
      for (const r of batch) args.push(r.after, r.count)
      this.cmd.sseReads(batch.length, ...args).then(
        replies => { for (let k = 0; k < batch.length; k++) batch[k].resolve(replies[k]) },
        err => { for (const r of batch) r.reject(err) })
    }
  }

  /** A Store on this bus's command connection and prefix; it lives as long as the bus. */
  createStore (): Store {
    return new RedisStore(this.cmd, this.keys)
  }

  isReady (): boolean {
    return !this.closed && this.cmd.status === 'ready' && this.sub.status === 'ready'
  }

  subscriptionCount (): number {
    return this.sync.size
  }

  async close (): Promise<void> {
    this.closed = true
    this.sync.close()
    await Promise.allSettled([this.cmd.quit(), this.sub.quit()])
    this.cmd.disconnect()
    this.sub.disconnect()
  }

  private onPubsub (pubsub: string, payload: string): void {
    const st = this.sync.get(this.keys.channelOf(pubsub))
    if (st === undefined) return
    const msg = decodePublished(payload)
    if (msg === null) {
      this.opts.onDropped?.('malformed')
      return
    }
    this.sync.live(st, msg)
  }

  private resync (): void {
    this.opts.onReconnect?.()
    const all = [...this.sync.channels.entries()]
    if (all.length === 0) return
    for (const [, st] of all) this.sync.suspend(st)
    this.sub.subscribe(...all.map(([c]) => this.keys.pubsub(c)))
      .then(() => {
        for (const [channel, st] of all) void this.sync.fill(channel, st)
      })
      .catch(() => { /* the next 'ready' tries again */ })
  }
}

/** host:port of a Redis URL, without credentials. */
function addressOf (url: string): string {
  try {
    const u = new URL(url)
    return `${u.hostname}:${u.port === '' ? '6379' : u.port}`
  } catch {
    return 'an unparsable URL'
  }
}
