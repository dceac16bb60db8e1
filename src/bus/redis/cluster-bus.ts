import { Cluster } from 'ioredis'
import type { Bus, Envelope, Listener, ReadResult } from '../bus'
import type { Store } from '../store'
import { ChannelSync } from './channel-sync'
import { decodePublished, KeyLayout } from './codec'
import { defineScripts, headOf, publishArgs, readHistory, SPUBLISH_LUA, type ClusterScriptClient } from './scripts'
import { ShardConn, type ShardEvents } from './shard-conn'
import { slotOf } from './slots'
import { RedisStore } from './store'

export interface ClusterBusOptions {
  /** Seed nodes; the rest of the cluster is discovered from them. */
  nodes: Array<{ host: string, port: number }>
  prefix: string
  historySize: number
  historyTtlS: number
  /** How often the slot map is re-read even when nothing signalled a change (ms). */
  slotsRefreshIntervalMs?: number
  onReconnect?: () => void
  onDropped?: (reason: string) => void
  log?: { warn: (obj: object, msg: string) => void }
}

/**
 * The bus on Redis Cluster. Commands (publish, history, store) go through ioredis' Cluster
 * client; each channel's history stream and shard channel share a slot (`{channel}` hash tag),
 * so the publish script stays atomic per channel. Live messages use sharded pub/sub: one
 * ShardConn per master that owns a slot this instance has a subscribed channel in.
 *
 * Every bus guarantee holds as on one Redis, through the same ChannelSync: whenever a channel's
 * subscription may have lapsed (its shard connection dropped, the server pushed `sunsubscribe`
 * because the slot moved or the master failed over, SSUBSCRIBE answered MOVED, or the slot map
 * says another master owns it now), the channel is suspended (live messages buffered), placed on
 * the slot's current owner, and once that owner confirms the SSUBSCRIBE its gap is refilled from
 * history before the buffer is released. Ids dedupe, so an unnecessary refill costs one read.
 */
export class ClusterBus implements Bus {
  readonly kind = 'redis-cluster'
  private readonly cluster: ClusterScriptClient
  private readonly keys: KeyLayout
  private readonly sync: ChannelSync
  private readonly opts: ClusterBusOptions
  private readonly conns = new Map<string, ShardConn>()
  /** Channel → the connection that holds (or was asked to hold) its subscription. */
  private readonly where = new Map<string, ShardConn>()
  private readonly slotCache = new Map<string, number>()
  private readonly events: ShardEvents
  private timer: NodeJS.Timeout | null = null
  private needRefresh = false
  private failures = 0
  private closed = false
  /** CLIENT SETNAME of the shard connections: `sse-gateway:ssub:<prefix>`, for CLIENT LIST. */
  private readonly connName: string

  constructor (opts: ClusterBusOptions) {
    this.opts = opts
    this.keys = new KeyLayout(opts.prefix, true)
    this.connName = `sse-gateway:ssub:${opts.prefix}`.replace(/[^\x21-\x7e]/g, '_')
    this.cluster = new Cluster(opts.nodes, {
      lazyConnect: true,
      // Commands fail fast while the cluster is away: a publish answers 503 instead of hanging.
      enableOfflineQueue: false,
      scaleReads: 'master',
      slotsRefreshInterval: opts.slotsRefreshIntervalMs ?? 2000,
      clusterRetryStrategy: (n: number) => Math.min(100 * n, 2000),
      redisOptions: { connectionName: `sse-gateway:cmd:${opts.prefix}`, maxRetriesPerRequest: 2 }
    }) as ClusterScriptClient
    defineScripts(this.cluster, SPUBLISH_LUA)
    this.sync = new ChannelSync({ read: (channel, after) => this.read(channel, after), head: (channel) => this.head(channel), log: opts.log })
    const quiet = (): void => {} // readiness and the shard connections report trouble
    this.cluster.on('error', quiet)
    this.cluster.on('node error', quiet)
    // A new slot map: move every channel whose slot changed owner (the safety net for a lapse
    // no push told us about); a node gone: re-read the map first.
    this.cluster.on('refresh', () => this.reconcile())
    this.cluster.on('-node', () => this.schedule(true))
    this.events = {
      message: (conn, pubsub, payload) => this.onMessage(conn, pubsub, payload),
      confirmed: (conn, pubsub) => {
        const channel = this.keys.channelOf(pubsub)
        const st = this.sync.get(channel)
        if (st === undefined || this.where.get(channel) !== conn) return
        this.failures = 0
        void this.sync.fill(channel, st)
      },
      lapsed: (conn, pubsub, reason) => {
        const channel = this.keys.channelOf(pubsub)
        if (this.where.get(channel) !== conn) return
        this.where.delete(channel)
        const st = this.sync.get(channel)
        if (st !== undefined) this.sync.suspend(st)
        this.idle(conn)
        if (this.timer === null) this.opts.log?.warn({ node: conn.key, channel, reason }, 'shard subscription lapsed; resubscribing')
        this.schedule(true)
      },
      lost: (conn, err) => {
        if (this.conns.get(conn.key) === conn) this.conns.delete(conn.key)
        if (this.closed) return
        for (const pubsub of conn.want) {
          const channel = this.keys.channelOf(pubsub)
          if (this.where.get(channel) !== conn) continue
          this.where.delete(channel)
          const st = this.sync.get(channel)
          if (st !== undefined) this.sync.suspend(st)
        }
        if (conn.want.size > 0) this.opts.log?.warn({ node: conn.key, err }, 'shard subscriber connection lost; resubscribing')
        this.schedule(true)
      }
    }
  }

  async connect (): Promise<void> {
    await this.cluster.connect()
  }

  /**
   * One script call per slot: Redis runs a script on one shard, with every key in one slot. A
   * call whose channels share a slot is atomic as on one Redis; channels in different slots are
   * published by parallel calls, each atomic (see docs/architecture.md). Every argument is built
   * before anything is sent, so a message that cannot be encoded publishes nothing.
   */
  async publish (messages: Envelope[]): Promise<string[]> {
    if (messages.length === 0) return []
    if (this.closed || this.cluster.status !== 'ready') throw new Error('redis cluster not connected')
    const { historySize, historyTtlS } = this.opts
    const bySlot = new Map<number, number[]>()
    for (let i = 0; i < messages.length; i++) {
      const slot = this.slot(messages[i].channel)
      const group = bySlot.get(slot)
      if (group === undefined) bySlot.set(slot, [i])
      else group.push(i)
    }
    if (bySlot.size === 1) {
      return await this.cluster.ssePublish(...(publishArgs(this.keys, messages, historySize, historyTtlS) as [number, ...string[]]))
    }
    const calls = [...bySlot.values()].map(idx => ({ idx, args: publishArgs(this.keys, idx.map(i => messages[i]), historySize, historyTtlS) }))
    const ids = new Array<string>(messages.length)
    await Promise.all(calls.map(async ({ idx, args }) => {
      const got = await this.cluster.ssePublish(...(args as [number, ...string[]]))
      for (let k = 0; k < idx.length; k++) ids[idx[k]] = got[k]
    }))
    return ids
  }

  subscribe (channel: string, listener: Listener): Promise<void> {
    const { st, created } = this.sync.add(channel, listener)
    if (created) this.place(channel)
    return st.ready
  }

  unsubscribe (channel: string, listener: Listener): void {
    if (!this.sync.remove(channel, listener)) return
    const conn = this.where.get(channel)
    this.where.delete(channel)
    this.slotCache.delete(channel)
    if (conn !== undefined) {
      conn.remove(this.keys.pubsub(channel))
      this.idle(conn)
    }
  }

  position (channel: string): string {
    return this.sync.position(channel)
  }

  async read (channel: string, after: string): Promise<ReadResult> {
    return await readHistory((key, cursor, count) => this.cluster.sseRead(key, cursor, count), this.keys.history(channel), after, this.opts.historySize, this.opts.onDropped)
  }

  async head (channel: string): Promise<string> {
    return await headOf((key, cursor, count) => this.cluster.sseRead(key, cursor, count), this.keys.history(channel))
  }

  /** A Store on this bus's cluster client and prefix; it lives as long as the bus. */
  createStore (): Store {
    return new RedisStore(this.cluster, this.keys)
  }

  isReady (): boolean {
    return !this.closed && this.cluster.status === 'ready'
  }

  subscriptionCount (): number {
    return this.sync.size
  }

  /** Open sharded pub/sub connections, by node (`host:port`): at most one per master. */
  shardConnections (): string[] {
    return [...this.conns.values()].filter(c => !c.dead).map(c => c.key)
  }

  async close (): Promise<void> {
    this.closed = true
    if (this.timer !== null) clearTimeout(this.timer)
    this.sync.close()
    for (const c of this.conns.values()) c.close()
    this.conns.clear()
    this.where.clear()
    await this.cluster.quit().catch(() => {})
    this.cluster.disconnect()
  }

  private slot (channel: string): number {
    let s = this.slotCache.get(channel)
    if (s === undefined) {
      s = slotOf(this.keys.pubsub(channel))
      if (this.sync.get(channel) !== undefined) this.slotCache.set(channel, s)
    }
    return s
  }

  /** The master that owns the channel's slot, as `host:port`, per the client's slot map. */
  private owner (channel: string): string | undefined {
    return this.cluster.slots[this.slot(channel)]?.[0]
  }

  /** Asks the channel's slot owner for its subscription; the confirmation triggers the fill. */
  private place (channel: string): void {
    const owner = this.owner(channel)
    if (owner === undefined) {
      this.schedule(true)
      return
    }
    let conn = this.conns.get(owner)
    if (conn === undefined || conn.dead) {
      const i = owner.lastIndexOf(':')
      conn = new ShardConn(owner, owner.slice(0, i), Number(owner.slice(i + 1)), this.events, this.connName)
      this.conns.set(owner, conn)
    }
    if (conn.idleTimer !== null) {
      clearTimeout(conn.idleTimer)
      conn.idleTimer = null
    }
    this.where.set(channel, conn)
    conn.add(this.keys.pubsub(channel))
  }

  /**
   * Puts every channel where the slot map says it belongs: channels whose subscription lapsed
   * and channels whose slot changed owner (suspended first, so the move refills their gap).
   */
  private reconcile (): void {
    if (this.closed) return
    let unplaced = 0
    let moved = 0
    for (const [channel, st] of this.sync.channels) {
      const owner = this.owner(channel)
      const conn = this.where.get(channel)
      if (conn !== undefined && !conn.dead && conn.key === owner) continue
      if (conn !== undefined) {
        // The slot moved while this connection still holds it: the old node drops it itself.
        conn.forget(this.keys.pubsub(channel))
        this.where.delete(channel)
        this.idle(conn)
      }
      this.sync.suspend(st)
      moved++
      if (owner === undefined) unplaced++
      else this.place(channel)
    }
    if (moved > 0) this.opts.onReconnect?.()
    else this.failures = 0 // every channel sits where the slot map says
    if (unplaced > 0) this.schedule(true)
  }

  /** Reconciles soon (after re-reading the slot map when `refresh`), backing off on failures. */
  private schedule (refresh: boolean): void {
    if (this.closed) return
    this.needRefresh ||= refresh
    if (this.timer !== null) return
    // Immediate after a healthy spell; backs off while subscriptions keep failing (the slot map
    // may lag a failover by a few refreshes). A confirmed subscription resets it.
    const delay = this.failures === 0 ? 0 : Math.min(50 * 2 ** this.failures, 2000)
    this.failures++
    this.timer = setTimeout(() => {
      this.timer = null
      if (this.closed) return
      if (!this.needRefresh) {
        this.reconcile()
        return
      }
      this.needRefresh = false
      // 'refresh' reconciles on success; on failure try again (the map may be mid-change).
      this.cluster.refreshSlotsCache((err) => {
        if (err != null) this.schedule(true)
      })
    }, delay)
    this.timer.unref()
  }

  /** A connection holding no channel is closed after a while (a channel may come back soon). */
  private idle (conn: ShardConn): void {
    if (conn.want.size > 0 || conn.dead || conn.idleTimer !== null) return
    conn.idleTimer = setTimeout(() => {
      conn.idleTimer = null
      if (conn.want.size > 0 || conn.dead) return
      if (this.conns.get(conn.key) === conn) this.conns.delete(conn.key)
      conn.close()
    }, 5000)
    conn.idleTimer.unref()
  }

  private onMessage (conn: ShardConn, pubsub: string, payload: string): void {
    const channel = this.keys.channelOf(pubsub)
    const st = this.sync.get(channel)
    if (st === undefined || this.where.get(channel) !== conn) return
    const msg = decodePublished(payload)
    if (msg === null) {
      this.opts.onDropped?.('malformed')
      return
    }
    this.sync.live(st, msg)
  }
}
