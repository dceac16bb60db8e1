import type { Bus, BusMessage, Listener } from '../bus/bus'
import { setTimeout as sleep } from 'node:timers/promises'
import { DEFAULT_LIMITS, frame, type MessageLimits } from '../bus/frame'
import type { Metrics } from '../metrics/metrics'
import type { Problem } from '../outcome'
import type { DeliverySpan, DeliveryTracer } from './tracing'
import { Connection, type CloseReason, type Frame } from './connection'
import { decodeCursor } from './cursor'
import { ExpirySweep } from './expiry'
import { controlFrame, retryFrame } from './sse'

/** What a stream gets when its token expires: the same bytes for every stream. */
const AUTH_EXPIRED = controlFrame('auth-expired', { reason: 'token expired' })

/**
 * A channel's local streams. Most channels (a user's own) have one stream: that stream itself,
 * its channel index found with indexOf, instead of a Map per channel.
 */
type Members = Connection | Map<Connection, number>

/** Where a stream starts, as of the moment its subscriptions are live. */
export type StreamStart =
  /** From now on: nothing is replayed. */
  | { from: 'live' }
  /**
   * After a client's cursor (its Last-Event-ID): what it missed is replayed first; a cursor for
   * another channel set, or older than the history, gets `event: reset` and starts live.
   */
  | { from: 'cursor', cursor: string }
  /**
   * After these ids, one per channel in the stream's order (e.g. the heads read before a
   * snapshot was taken, so that whatever was published since is replayed after it).
   */
  | { from: 'ids', ids: readonly string[] }

/** A client's Last-Event-ID, or live when it sent none. */
export function startFrom (lastEventId: string | null): StreamStart {
  return lastEventId === null ? { from: 'live' } : { from: 'cursor', cursor: lastEventId }
}

const BUS_POLL_MS = 20

export interface HubOptions {
  batchWindowMs: number
  heartbeatMs: number
  maxConnections: number
  maxConnectionsPerUser: number
  retryMs: number
  /** How long a new stream waits for a reconnecting bus before its 503. */
  busWaitMs: number
  /** The bus's limits: a message past them (published around the checks) is dropped, not written. */
  limits?: MessageLimits
  log: { info: (o: object, m: string) => void, warn: (o: object, m: string) => void }
  /** Delivery spans (batch wait, frame, write) when tracing is on; null or absent: off. */
  tracer?: DeliveryTracer | null
}

const noop = (): void => {}

/**
 * Channel → local connections. Holds ONE bus subscription per channel with local interest,
 * frames each message once, and fans it out. One shared flush tick (or, with window 0, one
 * flush at the end of each event-loop turn that queued frames), one shared heartbeat timer
 * and one expiry sweep serve every connection.
 */
export class Hub {
  private readonly channels = new Map<string, Members>()
  /** Subscriptions still being made; a channel leaves it once live. */
  private readonly ready = new Map<string, Promise<void>>()
  readonly connections = new Set<Connection>()
  private readonly perUser = new Map<string, number>()
  private readonly dirty = new Set<Connection>()
  private readonly listener: Listener
  private readonly flushTimer: NodeJS.Timeout | null
  private readonly heartbeatTimer: NodeJS.Timeout
  private readonly limits: MessageLimits
  private readonly expiry: ExpirySweep<Connection>
  private turnFlush: NodeJS.Immediate | null = null
  private readonly flushTurn = (): void => {
    this.turnFlush = null
    this.flush()
  }

  private readonly tracer: DeliveryTracer | null
  /** Delivery spans waiting for the flush that writes their message. */
  private readonly spans: DeliverySpan[] = []

  draining = false
  /** Told of every stream from attach until it leaves (presence). */
  observer: { opened (conn: Connection): void, closed (conn: Connection): void } | null = null

  constructor (private readonly bus: Bus, private readonly opts: HubOptions, private readonly m: Metrics) {
    this.limits = opts.limits ?? DEFAULT_LIMITS
    this.tracer = opts.tracer ?? null
    this.listener = {
      onMessage: (msg) => this.fanout(msg),
      onReset: (channel, head) => this.reset(channel, head)
    }
    this.flushTimer = opts.batchWindowMs > 0 ? setInterval(() => this.flush(), opts.batchWindowMs) : null
    this.flushTimer?.unref()
    this.heartbeatTimer = setInterval(() => { for (const c of this.connections) c.heartbeat() }, opts.heartbeatMs)
    this.heartbeatTimer.unref()
    this.expiry = new ExpirySweep<Connection>((c) => c.end(AUTH_EXPIRED, 'auth_expired'))
  }

  /** Ends `conn` with an `auth-expired` frame at `epochMs` (its token's exp). */
  expireAt (conn: Connection, epochMs: number): void {
    this.expiry.add(conn, epochMs)
  }

  /**
   * The limit a new stream of `user` would hit (null: none); counts nothing. While the bus is
   * reconnecting (a Redis restart or a killed subscriber connection is back within ~100-300 ms)
   * the stream waits up to `busWaitMs` for it rather than bouncing every client that arrives
   * in that blip to a 2 s retry; past that it is bus_unavailable. The limits are checked again
   * after the wait, since other streams may have been admitted meanwhile.
   */
  async admit (user: string): Promise<Problem | null> {
    const first = this.check(user)
    if (first !== null || this.bus.isReady()) return first
    const end = Date.now() + this.opts.busWaitMs
    // Polling keeps this independent of each bus's connection events; it only runs while the
    // bus is down, for at most busWaitMs.
    while (!this.bus.isReady() && Date.now() < end) await sleep(BUS_POLL_MS)
    if (!this.bus.isReady()) return { code: 'bus_unavailable' }
    return this.check(user)
  }

  private check (user: string): Problem | null {
    const retryAfterS = Math.max(1, Math.ceil(this.opts.retryMs / 1000))
    if (this.draining) return { code: 'draining', retryAfterS }
    if (this.connections.size >= this.opts.maxConnections) return { code: 'instance_full', retryAfterS }
    if ((this.perUser.get(user) ?? 0) >= this.opts.maxConnectionsPerUser) return { code: 'too_many_connections', max: this.opts.maxConnectionsPerUser, retryAfterS }
    return null
  }

  get immediate (): boolean {
    return this.flushTimer === null
  }

  /**
   * Registers a connection, subscribes its channels, replays what its cursor missed and
   * switches it to live. Subscribing BEFORE reading history is what makes the handover
   * gapless; the per-channel id check in the connection makes it duplicate-free. `begin`
   * (the response head) runs once every subscription is live and returns the frames that go
   * first (retry, prelude); a stream from "now" then leaves with its head, those frames and
   * its id frame in ONE write. Rejects when the bus fails (the stream is then closed by the
   * caller).
   */
  async attach (conn: Connection, start: StreamStart, begin?: () => string): Promise<void> {
    this.connections.add(conn)
    this.perUser.set(conn.user, (this.perUser.get(conn.user) ?? 0) + 1)
    this.m.connectionsActive.set(this.connections.size)
    this.m.connectionsOpened.inc()
    this.observer?.opened(conn)
    let waits: Array<Promise<void>> | null = null
    const channels = conn.channels
    for (let i = 0; i < channels.length; i++) {
      const ch = channels[i]
      const members = this.channels.get(ch)
      if (members === undefined) {
        this.channels.set(ch, conn)
        const p = this.bus.subscribe(ch, this.listener)
        this.ready.set(ch, p)
        p.then(() => { if (this.ready.get(ch) === p) this.ready.delete(ch) }, noop)
        this.m.busSubscriptions.set(this.bus.subscriptionCount())
      } else if (members instanceof Connection) {
        this.channels.set(ch, new Map([[members, members.channels.indexOf(ch)], [conn, i]]))
      } else {
        members.set(conn, i)
      }
      const p = this.ready.get(ch)
      if (p !== undefined) (waits ??= []).push(p)
    }
    if (waits !== null) await Promise.all(waits)
    if (conn.closed) return
    let pre = begin?.() ?? ''

    const n = channels.length
    const from = start.from === 'live'
      ? null
      : start.from === 'ids' ? (start.ids.length === n ? start.ids : null) : decodeCursor(start.cursor, conn.hash, n)
    if (from !== null) {
      conn.setPositions(from)
      // History reads follow (and may fail): the head and first frames go out now, as a
      // resuming client has always seen them.
      await conn.writeAsync(pre)
      pre = ''
      if (conn.closed) return
    }
    const positions: string[] = []
    const resetChannels: string[] = []
    let out = ''
    let replayed = 0
    for (let i = 0; i < n; i++) {
      const ch = conn.channels[i]
      if (from === null) {
        positions.push(this.bus.position(ch))
        if (start.from !== 'live') resetChannels.push(ch) // a cursor for another channel set
        continue
      }
      const r = await this.bus.read(ch, from[i])
      if (conn.closed) return
      if (r.reset) {
        positions.push(r.head)
        resetChannels.push(ch)
        continue
      }
      let p = from[i]
      for (const msg of r.messages) {
        if (!conn.accepts(msg.event)) continue
        const body = this.body(msg)
        if (body === null) continue
        conn.pos[i] = msg.id
        p = msg.id
        out += body + 'id: ' + conn.cursor() + '\n\n'
        replayed++
        if (out.length > 65536) {
          await conn.writeAsync(out)
          out = ''
        }
      }
      positions.push(r.messages.length > 0 ? r.messages[r.messages.length - 1].id : p)
    }
    conn.setPositions(positions)
    if (resetChannels.length > 0) {
      this.m.resets.inc()
      out = controlFrame('reset', { channels: resetChannels }) + out
    }
    // An id-only frame: the client holds a cursor before its first message (spec: no dispatch).
    if (replayed === 0) out += `id: ${conn.cursor()}\n\n`
    if (replayed > 0) {
      this.m.replayed.inc(replayed)
      this.m.delivered.inc(replayed)
    }
    await conn.writeAsync(pre + out)
    conn.goLive()
    // Frames that arrived while it synced are pending now.
    if (conn.hasPending()) this.markDirty(conn)
  }

  private markDirty (conn: Connection): void {
    if (conn.dirty) return
    conn.dirty = true
    this.dirty.add(conn)
    if (this.flushTimer === null && this.turnFlush === null) this.turnFlush = setImmediate(this.flushTurn)
  }

  private leave (conn: Connection, reason: CloseReason): void {
    if (!this.connections.delete(conn)) return
    this.observer?.closed(conn)
    const left = (this.perUser.get(conn.user) ?? 1) - 1
    if (left === 0) this.perUser.delete(conn.user)
    else this.perUser.set(conn.user, left)
    this.dirty.delete(conn)
    this.expiry.remove(conn)
    for (const ch of conn.channels) {
      const members = this.channels.get(ch)
      if (members === undefined) continue
      if (members instanceof Connection) {
        if (members !== conn) continue
      } else {
        members.delete(conn)
        if (members.size === 1) {
          // Back to a single member: the Map goes.
          for (const only of members.keys()) this.channels.set(ch, only)
        }
        if (members.size > 0) continue
      }
      this.channels.delete(ch)
      this.ready.delete(ch)
      this.bus.unsubscribe(ch, this.listener)
    }
    this.m.busSubscriptions.set(this.bus.subscriptionCount())
    this.m.connectionsActive.set(this.connections.size)
    this.m.closedFor(reason).inc()
    this.m.connectionDuration.observe((Date.now() - conn.openedAt) / 1000)
    // `reqId` under fastify's key: the line reads as the request logger's did.
    // (pino leaves an undefined reqId out of the line.)
    this.opts.log.info({ reqId: conn.reqId, user: conn.user, channels: conn.channels.length, reason, durationMs: Date.now() - conn.openedAt }, 'stream closed')
  }

  readonly onClose = (conn: Connection, reason: CloseReason): void => this.leave(conn, reason)

  /**
   * A message's framed body, or null when it cannot be framed within the limits: it came
   * around the checks at publish (an older publisher, a raw XADD). Counted and stepped over,
   * live and in replay alike, so one message cannot stop a channel or the process.
   */
  private body (msg: BusMessage): string | null {
    const f = frame(msg.event, msg.data, this.limits)
    if (f.problem === null) return f.body
    this.m.droppedUndeliverable.inc()
    this.opts.log.warn({ channel: msg.channel, id: msg.id, problem: f.problem }, 'undeliverable message dropped')
    return null
  }

  /** The frame being fanned out, for the one bound callback below (no closure per message). */
  private current: Frame | null = null
  private readonly deliverEach = (i: number, conn: Connection): void => this.deliver(conn, i, this.current as Frame)

  private fanout (msg: BusMessage): void {
    const members = this.channels.get(msg.channel)
    if (members === undefined) return
    const t0 = this.tracer !== null ? performance.now() : 0
    const body = this.body(msg)
    if (body === null) return
    const frame: Frame = { id: msg.id, channel: msg.channel, event: msg.event, key: msg.key, ts: msg.ts, body, bytes: Buffer.byteLength(body) }
    if (this.tracer !== null) this.traceDelivery(msg, t0, members instanceof Connection ? 1 : members.size)
    if (members instanceof Connection) {
      this.deliver(members, members.channels.indexOf(msg.channel), frame)
      return
    }
    this.current = frame
    members.forEach(this.deliverEach)
    this.current = null
  }

  private traceDelivery (msg: BusMessage, receivedAt: number, connections: number): void {
    const span = (this.tracer as DeliveryTracer).delivery(msg, receivedAt, performance.now(), connections)
    if (span === null) return
    this.spans.push(span)
    // With window 0 a flush runs only when a stream got a frame; the span must end regardless.
    if (this.flushTimer === null && this.turnFlush === null) this.turnFlush = setImmediate(this.flushTurn)
  }

  private deliver (conn: Connection, i: number, frame: Frame): void {
    conn.push(i, frame)
    if (!conn.dirty && conn.hasPending()) this.markDirty(conn)
  }

  private reset (channel: string, head: string): void {
    const members = this.channels.get(channel)
    if (members === undefined) return
    this.m.resets.inc()
    const frame = controlFrame('reset', { channels: [channel] })
    const each = (i: number, conn: Connection): void => {
      conn.pos[i] = head
      void conn.writeAsync(frame)
    }
    if (members instanceof Connection) each(members.channels.indexOf(channel), members)
    else members.forEach(each)
  }

  private flush (): void {
    if (this.dirty.size === 0 && this.spans.length === 0) return
    const start = this.spans.length > 0 ? performance.now() : 0
    const now = Date.now()
    let writes = 0
    let frames = 0
    for (const conn of this.dirty) {
      const n = conn.flush(now)
      if (n > 0) {
        writes++
        frames += n
      }
    }
    this.dirty.clear()
    if (writes > 0) {
      this.m.socketWrites.inc(writes)
      this.m.delivered.inc(frames)
    }
    if (this.spans.length > 0) {
      const end = performance.now()
      for (const span of this.spans) span.written(start, end)
      this.spans.length = 0
    }
  }

  /** Closes every stream with a jittered `retry:` hint, spread evenly over `ms`. */
  async drain (ms: number): Promise<void> {
    this.draining = true
    const conns = [...this.connections]
    const perTick = Math.ceil(conns.length / Math.max(1, Math.floor(ms / 10)))
    for (let k = 0; k < conns.length; k += perTick) {
      for (const c of conns.slice(k, k + perTick)) {
        // Jitter spreads the reconnects so the remaining instances absorb them smoothly.
        c.end(retryFrame(Math.round(this.opts.retryMs / 2 + Math.random() * this.opts.retryMs)), 'drain')
      }
      if (k + perTick < conns.length) await new Promise(resolve => setTimeout(resolve, 10))
    }
  }

  /**
   * Ends this instance's live streams that carry `channel` and nothing else (streams dedicated
   * to it, like a prediction's), after what they have been handed; streams that carry other
   * channels too go on. Answers how many ended.
   */
  endStreams (channel: string): number {
    const members = this.channels.get(channel)
    if (members === undefined) return 0
    let n = 0
    for (const conn of members instanceof Connection ? [members] : [...members.keys()]) {
      if (conn.state !== 'live' || conn.channels.length !== 1) continue
      conn.end('', 'client')
      n++
    }
    return n
  }

  /** Local streams on a channel (the Replicate poller polls only while someone watches). */
  watchers (channel: string): number {
    const members = this.channels.get(channel)
    return members === undefined ? 0 : members instanceof Connection ? 1 : members.size
  }

  /** Local streams per channel (the operator page's busiest channels). */
  * channelSizes (): IterableIterator<[string, number]> {
    for (const [ch, members] of this.channels) yield [ch, members instanceof Connection ? 1 : members.size]
  }

  channelCount (): number {
    return this.channels.size
  }

  close (): void {
    // New streams are refused from here on (admit), as the app refuses other requests.
    this.draining = true
    if (this.flushTimer !== null) clearInterval(this.flushTimer)
    if (this.turnFlush !== null) clearImmediate(this.turnFlush)
    this.turnFlush = null
    clearInterval(this.heartbeatTimer)
    this.expiry.close()
    for (const c of [...this.connections]) c.close('shutdown')
  }
}
