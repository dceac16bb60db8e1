/**
 * The bus contract. Every source of messages (HTTP publish, the publisher helper, Replicate
 * updates) calls `publish`; every stream is fed by `subscribe`. Three implementations keep the
 * same guarantees: memory-bus.ts (one process), redis/redis-bus.ts (many instances, one Redis)
 * and redis/cluster-bus.ts (Redis Cluster); test/bus.test.ts runs one suite against all three.
 * The key-value Store (store.ts) is a separate contract, made beside the bus, not part of it.
 *
 * Guarantees (and the edge cases callers rely on):
 * 1. `publish` is atomic per call: every message of the call is appended to its channel's
 *    history AND published live, or none is (a message is never live-only or history-only).
 *    It resolves with the ids assigned, in input order; `publish([])` resolves `[]`. It rejects
 *    when the bus is closed or not connected (the edge answers 503). On Redis Cluster a call
 *    spanning hash slots is atomic per slot, not per call (docs/architecture.md).
 * 2. Ids are `<ms>-<seq>` (Redis Stream ids) and strictly increase per channel. ZERO_ID ('0-0')
 *    is below every id and means "nothing yet".
 * 3. Once `subscribe` resolves, the listener receives every message of that channel with an id
 *    greater than `position(channel)` at that moment, in id order, exactly once, even across a
 *    lost Redis connection (the gap is refilled from history). If the gap is larger than the
 *    history, `onReset` is called instead and delivery continues from the newest message.
 *    The same listener subscribed twice to a channel counts once; unsubscribing a listener that
 *    is not subscribed does nothing. Listeners are called synchronously and must not throw.
 * 4. `read(channel, after)` returns the history after the id `after` (ZERO_ID: all of it),
 *    oldest first; or `reset: true` with no messages when `after` is older than what history
 *    still holds, above the channel's head (another history), or names a channel whose history
 *    is gone. A channel with no history reads as empty, not reset, from ZERO_ID. `head` is the
 *    channel's newest id at read time in every case.
 * 5. `head(channel)` is the channel's newest id (ZERO_ID when it has no history), read without
 *    any message: a stream that starts "from now" resumes after it.
 */
export interface Envelope {
  channel: string
  event: string
  data: unknown
  key?: string
  ts: number
  /**
   * W3C trace context of the publish (`00-<trace-id>-<span-id>-<flags>`), so delivery spans on
   * every instance continue the publisher's trace. Optional; readers that predate it ignore it.
   */
  traceparent?: string
}

export interface BusMessage extends Envelope {
  id: string
}

export interface Listener {
  onMessage (msg: BusMessage): void
  onReset? (channel: string, head: string): void
}

export interface ReadResult {
  messages: BusMessage[]
  /** The newest id of the channel at read time ('0-0' when it has none). */
  head: string
  /** The cursor is older than the retained history (or from another history altogether). */
  reset: boolean
}

export type { Store } from './store'

export interface Bus {
  readonly kind: 'memory' | 'redis' | 'redis-cluster'
  publish (messages: Envelope[]): Promise<string[]>
  subscribe (channel: string, listener: Listener): Promise<void>
  unsubscribe (channel: string, listener: Listener): void
  /**
   * The id of the last message delivered live on a channel this instance subscribes to
   * (ZERO_ID before the first); where guarantee 3's "greater than" starts. Only meaningful
   * while subscribed.
   */
  position (channel: string): string
  read (channel: string, after: string): Promise<ReadResult>
  head (channel: string): Promise<string>
  /** Connected: publish and read may succeed now (readiness probe, stream admission). */
  isReady (): boolean
  /** Channels with a live subscription held by this instance. */
  subscriptionCount (): number
  /** Ends every subscription; publish rejects afterwards. */
  close (): Promise<void>
}

/**
 * Hands a message to one listener. History already holds it: a listener that throws must not
 * fail the publish or keep the message from the listeners after it.
 */
export function deliverTo (l: Listener, msg: BusMessage, o: { onDropped?: (reason: string) => void, log?: { warn: (obj: object, msg: string) => void } }): void {
  try {
    l.onMessage(msg)
  } catch (err) {
    o.onDropped?.('undeliverable')
    o.log?.warn({ err, channel: msg.channel, id: msg.id }, 'a listener failed on a message; skipped')
  }
}

/** The bus could not reach its server at start; `address` carries no credentials. */
export class BusUnreachable extends Error {
  constructor (readonly address: string, cause: unknown) {
    super(`cannot connect to ${address}: ${describeCause(cause)}`)
  }
}

function describeCause (err: unknown): string {
  const e = err as { code?: string, message?: string } | null
  const why: Record<string, string> = { ECONNREFUSED: 'connection refused', ENOTFOUND: 'host not found', EAI_AGAIN: 'host not found', ETIMEDOUT: 'timed out', EHOSTUNREACH: 'host unreachable' }
  const known = e?.code !== undefined ? why[e.code] : undefined
  const msg = e?.message ?? String(err)
  return known !== undefined ? `${known} (${msg})` : msg
}

/**
 * Runs a client's connect and, when it fails, rejects with the first error the client
 * reported (ioredis itself only says "Connection is closed.").
 */
export async function connectOrExplain (
  clients: Array<{ on: (e: 'error', f: (err: Error) => void) => unknown, off: (e: 'error', f: (err: Error) => void) => unknown }>,
  connect: () => Promise<unknown>,
  address: string
): Promise<void> {
  let cause: Error | null = null
  const seen = (err: Error): void => { cause ??= err }
  for (const c of clients) c.on('error', seen)
  try {
    await connect()
  } catch (err) {
    throw new BusUnreachable(address, cause ?? err)
  } finally {
    for (const c of clients) c.off('error', seen)
  }
}

export const ZERO_ID = '0-0'

/** Compares two `<ms>-<seq>` ids numerically without allocating. */
export function compareIds (a: string, b: string): number {
  if (a === b) return 0
  const da = a.indexOf('-')
  const db = b.indexOf('-')
  if (da !== db) return da - db // fewer ms digits is smaller (no leading zeros)
  for (let i = 0; i < da; i++) {
    const d = a.charCodeAt(i) - b.charCodeAt(i)
    if (d !== 0) return d
  }
  const sa = a.length - da
  const sb = b.length - db
  if (sa !== sb) return sa - sb
  return a < b ? -1 : a > b ? 1 : 0
}

const ID_RE = /^[0-9]{1,16}-[0-9]{1,16}$/
export function isId (s: string): boolean {
  return ID_RE.test(s)
}

// W3C Trace Context, version 00: neither the trace id nor the parent id may be all zeros.
const TRACEPARENT_RE = /^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$/
export function isTraceparent (s: unknown): s is string {
  return typeof s === 'string' && TRACEPARENT_RE.test(s)
}
