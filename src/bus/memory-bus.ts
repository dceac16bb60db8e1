import { compareIds, ZERO_ID, type Bus, type BusMessage, type Envelope, type Listener, type ReadResult } from './bus'

interface History {
  ring: BusMessage[]
  start: number
  /** Id of the newest message evicted by the cap: cursors below it have a gap. */
  maxDeleted: string
  lastId: string
  expiresAt: number
}

export interface MemoryBusOptions {
  historySize: number
  historyTtlS: number
  now?: () => number
}

/**
 * Single-process bus with the same guarantees as the Redis bus (see bus.ts). Delivery is
 * synchronous inside publish, which makes the per-channel order trivially the id order.
 */
export class MemoryBus implements Bus {
  readonly kind = 'memory'
  private readonly histories = new Map<string, History>()
  private readonly listeners = new Map<string, Set<Listener>>()
  private readonly size: number
  private readonly ttlMs: number
  private readonly now: () => number
  private lastMs = 0
  private seq = 0
  private closed = false

  constructor (opts: MemoryBusOptions) {
    this.size = opts.historySize
    this.ttlMs = opts.historyTtlS * 1000
    this.now = opts.now ?? Date.now
  }

  private nextId (): string {
    const ms = this.now()
    if (ms > this.lastMs) {
      this.lastMs = ms
      this.seq = 0
    } else {
      this.seq++
    }
    return `${this.lastMs}-${this.seq}`
  }

  private history (channel: string): History | undefined {
    const h = this.histories.get(channel)
    if (h !== undefined && h.expiresAt <= this.now()) {
      this.histories.delete(channel)
      return undefined
    }
    return h
  }

  async publish (messages: Envelope[]): Promise<string[]> {
    if (this.closed) throw new Error('bus closed')
    const out: BusMessage[] = []
    for (const m of messages) {
      const msg: BusMessage = { ...m, id: this.nextId() }
      let h = this.history(m.channel)
      if (h === undefined) {
        h = { ring: [], start: 0, maxDeleted: ZERO_ID, lastId: ZERO_ID, expiresAt: 0 }
        this.histories.set(m.channel, h)
      }
      h.ring.push(msg)
      if (h.ring.length - h.start > this.size) {
        h.maxDeleted = h.ring[h.start].id
        h.start++
        // Compact occasionally instead of shifting on every publish.
        if (h.start > 1024 && h.start * 2 > h.ring.length) {
          h.ring = h.ring.slice(h.start)
          h.start = 0
        }
      }
      h.lastId = msg.id
      h.expiresAt = this.now() + this.ttlMs
      out.push(msg)
    }
    for (const msg of out) {
      const ls = this.listeners.get(msg.channel)
      if (ls !== undefined) for (const l of ls) l.onMessage(msg)
    }
    return out.map(m => m.id)
  }

  async subscribe (channel: string, listener: Listener): Promise<void> {
    let ls = this.listeners.get(channel)
    if (ls === undefined) {
      ls = new Set()
      this.listeners.set(channel, ls)
    }
    ls.add(listener)
  }

  unsubscribe (channel: string, listener: Listener): void {
    const ls = this.listeners.get(channel)
    if (ls === undefined) return
    ls.delete(listener)
    if (ls.size === 0) this.listeners.delete(channel)
  }

  position (channel: string): string {
    return this.history(channel)?.lastId ?? ZERO_ID
  }

  async read (channel: string, after: string): Promise<ReadResult> {
    const h = this.history(channel)
    if (h === undefined) return { messages: [], head: ZERO_ID, reset: after !== ZERO_ID }
    if (compareIds(after, h.maxDeleted) < 0 || compareIds(after, h.lastId) > 0) {
      return { messages: [], head: h.lastId, reset: true }
    }
    const messages: BusMessage[] = []
    for (let i = h.start; i < h.ring.length; i++) {
      if (compareIds(h.ring[i].id, after) > 0) messages.push(h.ring[i])
    }
    return { messages, head: h.lastId, reset: false }
  }

  async head (channel: string): Promise<string> {
    return this.history(channel)?.lastId ?? ZERO_ID
  }

  /** The id just below the oldest retained message (history pages start there). */
  floor (channel: string): string {
    return this.history(channel)?.maxDeleted ?? ZERO_ID
  }

  isReady (): boolean {
    return !this.closed
  }

  subscriptionCount (): number {
    return this.listeners.size
  }

  async close (): Promise<void> {
    this.closed = true
    this.listeners.clear()
  }
}
