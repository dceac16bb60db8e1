import { isTraceparent, type BusMessage, type Envelope } from '../bus'

/**
 * Where a channel lives in Redis. In a cluster the channel name is wrapped in a hash tag so
 * that its pub/sub channel and its history stream hash to one slot, which keeps the
 * publish-plus-history script atomic on one shard.
 */
export class KeyLayout {
  constructor (readonly prefix: string, readonly cluster = false) {}

  private tag (channel: string): string {
    return this.cluster ? `{${channel}}` : channel
  }

  pubsub (channel: string): string {
    return this.prefix + this.tag(channel)
  }

  history (channel: string): string {
    return `${this.prefix}history:${this.tag(channel)}`
  }

  /** Inverse of pubsub(): the channel name of an incoming pub/sub message. */
  channelOf (pubsub: string): string {
    const c = pubsub.slice(this.prefix.length)
    return this.cluster ? c.slice(1, -1) : c
  }

  store (key: string): string {
    return this.prefix + key
  }
}

export function encodeEnvelope (m: Envelope): string {
  const out: Record<string, unknown> = m.key === undefined
    ? { channel: m.channel, event: m.event, data: m.data, ts: m.ts }
    : { channel: m.channel, event: m.event, data: m.data, key: m.key, ts: m.ts }
  if (m.traceparent !== undefined) out.traceparent = m.traceparent
  return JSON.stringify(out)
}

/** Parses `<id> <envelope json>` as published by PUBLISH_LUA; null when malformed. */
export function decodePublished (payload: string): BusMessage | null {
  const sp = payload.indexOf(' ')
  if (sp <= 0) return null
  try {
    const m = JSON.parse(payload.slice(sp + 1))
    if (m === null || typeof m !== 'object' || typeof m.channel !== 'string' || typeof m.event !== 'string') return null
    // A malformed trace context is dropped, never the message: tracing must not cost delivery.
    const traceparent = m.traceparent === undefined || !isTraceparent(m.traceparent) ? undefined : m.traceparent
    return { id: payload.slice(0, sp), channel: m.channel, event: m.event, data: m.data, key: m.key, ts: typeof m.ts === 'number' ? m.ts : 0, traceparent }
  } catch {
    return null
  }
}

export function decodeStored (id: string, payload: string): BusMessage | null {
  return decodePublished(`${id} ${payload}`)
}
