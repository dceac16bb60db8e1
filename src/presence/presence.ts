import type { Bus } from '../bus/bus'
import { allows } from '../channels'

/** Who is on a channel, across every instance. */
export interface PresenceView {
  /** Distinct members (JWT `sub`s). */
  count: number
  /** Sorted, at most the `max` asked for. */
  members: string[]
}

/**
 * Where presence lives: this instance's members per channel, so that the union over live
 * instances is the channel's presence. Each answer of `update` and `heartbeat` is the members
 * that joined or left the channel as a whole (not just this instance).
 */
export interface PresenceBackend {
  /** Sets this instance's stream count per member (0 removes); `empty`: this instance has no member left there. */
  update (channel: string, counts: Array<[string, number]>, empty: boolean): Promise<{ joined: string[], left: string[] }>
  /**
   * Keeps this instance alive on `channel` and clears instances whose heartbeat lapsed; `lost`:
   * this instance had lapsed itself (it must send its members again), `left`: members that were
   * only on lapsed instances.
   */
  heartbeat (channel: string): Promise<{ lost: boolean, left: string[] }>
  query (channel: string, max: number): Promise<PresenceView>
}

/** A stream as presence sees it (Connection in src/delivery). */
export interface PresenceStream {
  readonly user: string
  readonly channels: readonly string[]
}

export interface PresenceOptions {
  ttlS: number
  /** PRESENCE_EVENTS: channels (exact or `prefix*`) that get `event: join` / `event: leave`. */
  events?: readonly string[]
  /** Members per join/leave message. */
  maxMembers: number
  /** Coalescing window: changes within it reach the backend (and join/leave) as one. */
  flushMs?: number
  onChange?: (members: number, channels: number) => void
  onEvent?: (event: 'join' | 'leave', members: number) => void
  log?: { warn: (o: object, m: string) => void }
}

/**
 * Which members each shared channel has on this instance, pushed to the backend in batches:
 * a member's count is sent as it stands at the flush, so a reconnect (leave, then join, inside
 * one window) sends nothing and a storm of N reconnects costs one update per channel per
 * window, and at most one join and one leave message listing the members, instead of one
 * message per member to each of N members. `user:<sub>` channels and the gateway's own are
 * not tracked.
 */
export class Presence {
  private readonly local = new Map<string, Map<string, number>>()
  private readonly dirty = new Map<string, Set<string>>()
  private readonly flushTimer: NodeJS.Timeout
  private readonly heartbeatTimer: NodeJS.Timeout
  private flushing: Promise<void> | null = null
  private pairs = 0
  private stopped = false

  constructor (private readonly backend: PresenceBackend, private readonly bus: Bus, private readonly opts: PresenceOptions) {
    this.flushTimer = setInterval(() => { void this.flush() }, opts.flushMs ?? 200)
    this.flushTimer.unref()
    // Three beats per TTL: one late beat does not make a live instance look dead.
    this.heartbeatTimer = setInterval(() => { void this.beat() }, Math.max(100, (opts.ttlS * 1000) / 3))
    this.heartbeatTimer.unref()
  }

  static tracks (channel: string): boolean {
    return !channel.startsWith('user:') && !channel.startsWith('[')
  }

  opened (s: PresenceStream): void {
    this.change(s, 1)
  }

  closed (s: PresenceStream): void {
    this.change(s, -1)
  }

  private change (s: PresenceStream, d: number): void {
    // A stream on the gateway's own channels (the admin page) is an observer, not a member.
    if (s.channels.some(c => c.startsWith('['))) return
    for (const ch of s.channels) {
      if (!Presence.tracks(ch)) continue
      let members = this.local.get(ch)
      if (members === undefined) {
        if (d < 0) continue
        members = new Map()
        this.local.set(ch, members)
      }
      const n = (members.get(s.user) ?? 0) + d
      if (n > 0) {
        if (!members.has(s.user)) this.pairs++
        members.set(s.user, n)
      } else if (members.delete(s.user)) {
        this.pairs--
        if (members.size === 0) this.local.delete(ch)
      }
      let changed = this.dirty.get(ch)
      if (changed === undefined) {
        changed = new Set()
        this.dirty.set(ch, changed)
      }
      changed.add(s.user)
    }
    this.opts.onChange?.(this.pairs, this.local.size)
  }

  async query (channel: string, max: number): Promise<PresenceView> {
    return await this.backend.query(channel, max)
  }

  /** Sends what changed since the last flush; one at a time, so counts arrive in order. */
  async flush (): Promise<void> {
    if (this.flushing !== null) return await this.flushing
    if (this.dirty.size === 0) return
    this.flushing = this.flushNow().finally(() => { this.flushing = null })
    return await this.flushing
  }

  private async flushNow (): Promise<void> {
    const batch = [...this.dirty]
    this.dirty.clear()
    await Promise.all(batch.map(async ([ch, subs]) => {
      const members = this.local.get(ch)
      const counts: Array<[string, number]> = [...subs].map(sub => [sub, members?.get(sub) ?? 0])
      try {
        const { joined, left } = await this.backend.update(ch, counts, members === undefined)
        await this.announce(ch, joined, left)
      } catch (err) {
        // Counts are absolute: sending them again later is correct whether or not this one landed.
        if (!this.stopped) this.markDirty(ch, subs)
        this.opts.log?.warn({ err }, 'presence update failed; retrying')
      }
    }))
  }

  private markDirty (ch: string, subs: Iterable<string>): void {
    let changed = this.dirty.get(ch)
    if (changed === undefined) {
      changed = new Set()
      this.dirty.set(ch, changed)
    }
    for (const s of subs) changed.add(s)
  }

  private async beat (): Promise<void> {
    await Promise.all([...this.local.keys()].map(async ch => {
      try {
        const { lost, left } = await this.backend.heartbeat(ch)
        if (lost) this.markDirty(ch, this.local.get(ch)?.keys() ?? [])
        await this.announce(ch, [], left)
      } catch (err) {
        this.opts.log?.warn({ err }, 'presence heartbeat failed')
      }
    }))
  }

  private async announce (channel: string, joined: string[], left: string[]): Promise<void> {
    const patterns = this.opts.events
    if (patterns === undefined || (joined.length === 0 && left.length === 0) || !allows(patterns, channel)) return
    const ts = Date.now()
    const messages = []
    const max = this.opts.maxMembers
    for (const [event, subs] of [['leave', left], ['join', joined]] as const) {
      for (let i = 0; i < subs.length; i += max) {
        messages.push({ channel, event, data: { members: subs.slice(i, i + max) }, ts })
      }
      if (subs.length > 0) this.opts.onEvent?.(event, subs.length)
    }
    await this.bus.publish(messages)
  }

  /** Members on this instance (distinct per channel), for the metric. */
  get size (): number {
    return this.pairs
  }

  /** Takes this instance's members out (a last flush), so they leave now rather than at the TTL. */
  async close (): Promise<void> {
    clearInterval(this.flushTimer)
    clearInterval(this.heartbeatTimer)
    for (const [ch, members] of this.local) this.markDirty(ch, members.keys())
    this.local.clear()
    this.pairs = 0
    this.stopped = true
    await this.flush().catch(() => {})
  }
}
