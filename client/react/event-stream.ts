// useEventStream: one shared connection per distinct stream, however many components ask.
import { useCallback, useRef } from 'react'
import {
  connect, defaultShareKey, GatewayClientError,
  type Connection, type ConnectionStatus, type ConnectOptions, type GatewayEvent
} from '../index'
import { CLOSE_DELAY_MS, reportUncaught, toClientError, useIsomorphicLayoutEffect, useTrackedStore } from './shared'

export type EventStreamStatus = 'idle' | ConnectionStatus

export interface EventStreamState<T = unknown> {
  /** `idle` while `enabled` is false, then `connecting` → `open` → `retrying` … → `closed`. */
  status: EventStreamStatus
  /** The newest well-formed event (a malformed one goes to `error`), `null` before the first. */
  lastEvent: GatewayEvent<T> | null
  /**
   * The newest problem: a malformed payload (`malformed_json`, the stream stays open), a
   * throwing `onEvent` (`callback`), the cause of a retry, or what closed the stream for good
   * (`unauthorized`, `forbidden_channel`, ...). Cleared when the stream (re)opens.
   */
  error: GatewayClientError | null
}

export interface UseEventStreamOptions<T = unknown> extends Omit<ConnectOptions, 'onEvent' | 'onStatus' | 'onError'> {
  /** Default true. While false, nothing is opened and `status` is `idle`. */
  enabled?: boolean
  /**
   * Called for every event, malformed ones included (with `event.error`). Use it to keep a list:
   * `lastEvent` only holds the newest, and React may render once for several events.
   */
  onEvent?: (event: GatewayEvent<T>) => void
  /**
   * Who the stream belongs to when `getToken` is used: streams with different keys are never
   * shared. Default: one identity per page, the usual case of one signed-in user (with `token`,
   * the token itself is the identity).
   */
  tokenKey?: string
}

interface Subscriber {
  notify: () => void
  options: { current: UseEventStreamOptions<any> }
}

const IDLE_STREAM: EventStreamState<any> = Object.freeze({ status: 'idle', lastEvent: null, error: null })
const CONNECTING_STREAM: EventStreamState<any> = Object.freeze({ status: 'connecting', lastEvent: null, error: null })

function uniqueSorted (list: readonly string[] | undefined): string[] {
  return [...new Set(list ?? [])].sort()
}

function streamKey (o: UseEventStreamOptions<any>): string {
  let where: string
  try {
    const page = (globalThis as { location?: { href?: string } }).location?.href
    where = defaultShareKey({ url: o.url, channels: uniqueSorted(o.channels), events: uniqueSorted(o.events) }) + new URL(o.url, page).search
  } catch {
    // A URL that cannot be resolved here: connect() reports it as the stream's error.
    where = `${o.url}|${uniqueSorted(o.channels).join(',')}|${uniqueSorted(o.events).join(',')}`
  }
  const who = o.tokenKey !== undefined ? `key:${o.tokenKey}` : o.token !== undefined ? `token:${o.token}` : o.getToken !== undefined ? 'getToken' : 'anonymous'
  return [where, o.mode ?? 'fetch', o.shareAcrossTabs === true ? 'tabs' : 'tab', who].join('|')
}

/** One real stream, shared by every mounted component that asked for the same key. */
class SharedStream {
  snapshot: EventStreamState<any> = CONNECTING_STREAM
  readonly subscribers = new Set<Subscriber>()
  private conn: Connection | null = null
  private closeTimer: ReturnType<typeof setTimeout> | null = null
  // The options of the component that opened the stream; getToken follows the newest subscriber.
  private opener: { current: UseEventStreamOptions<any> } | null = null

  constructor (readonly key: string) {}

  add (sub: Subscriber): void {
    const wasEmpty = this.subscribers.size === 0
    this.subscribers.add(sub)
    if (this.closeTimer !== null) {
      clearTimeout(this.closeTimer)
      this.closeTimer = null
    }
    // A stream that ended for good (401, retries exhausted) gets a fresh try when the
    // components come back, not while some are still showing why it ended.
    if (this.conn === null || (wasEmpty && this.conn.status === 'closed')) this.open(sub.options)
  }

  remove (sub: Subscriber): void {
    if (!this.subscribers.delete(sub) || this.subscribers.size > 0 || this.closeTimer !== null) return
    this.closeTimer = setTimeout(() => {
      this.closeTimer = null
      if (this.subscribers.size > 0) return
      streams.delete(this.key)
      const conn = this.conn
      this.conn = null
      conn?.close()
    }, CLOSE_DELAY_MS)
  }

  private getToken = async (): Promise<string> => {
    let source: UseEventStreamOptions<any> | undefined
    for (const s of this.subscribers) if (s.options.current.getToken !== undefined) source = s.options.current
    source ??= this.opener?.current
    const fn = source?.getToken
    if (fn === undefined) throw new GatewayClientError('token', 'getToken is gone')
    return await fn()
  }

  private open (ref: { current: UseEventStreamOptions<any> }): void {
    this.opener = ref
    const { enabled: _enabled, onEvent: _onEvent, tokenKey: _tokenKey, getToken, ...rest } = ref.current
    const previous = this.conn
    this.conn = null
    previous?.close()
    if (this.snapshot.status === 'closed') this.set({ status: 'connecting', error: null })
    const options: ConnectOptions = {
      ...rest,
      onEvent: (event) => this.event(event),
      onStatus: (status, info) => {
        if (status === 'open') this.set({ status, error: null })
        else this.set(info.error !== undefined ? { status, error: info.error } : { status })
      },
      onError: (error) => this.set({ error })
    }
    if (getToken !== undefined) options.getToken = this.getToken
    try {
      this.conn = connect(options)
    } catch (err) { // no fetch / EventSource here: reported, never thrown into React
      this.set({ status: 'closed', error: toClientError(err, 'network') })
    }
  }

  private event (event: GatewayEvent): void {
    if (event.error === undefined) this.set({ lastEvent: event })
    // onError already reported a malformed payload; the list-keepers still see the event.
    for (const s of [...this.subscribers]) {
      const fn = s.options.current.onEvent
      if (fn === undefined) continue
      try {
        fn(event)
      } catch (err) {
        this.set({ error: toClientError(err, 'callback') })
        reportUncaught(err)
      }
    }
  }

  private set (patch: Partial<EventStreamState<any>>): void {
    const cur = this.snapshot
    const next = { ...cur, ...patch }
    if (next.status === cur.status && next.lastEvent === cur.lastEvent && next.error === cur.error) return
    this.snapshot = Object.freeze(next)
    for (const s of [...this.subscribers]) s.notify()
  }
}

const streams = new Map<string, SharedStream>()

/**
 * Subscribes the component to a gateway stream. Components asking for the same stream (url,
 * channels and events in any order, the same token or `tokenKey`) share one connection, closed
 * shortly after the last of them unmounts; StrictMode's double mount opens one. The other
 * `connect()` options (`maxRetries`, `mode`, ...) come from the component that opened it.
 * `getToken` is called before every connection attempt (the latest one rendered by the most
 * recently mounted component that passes one), so a stream ended by `auth-expired` comes back
 * with a fresh token.
 */
export function useEventStream<T = unknown> (options: UseEventStreamOptions<T>): EventStreamState<T> {
  const enabled = options.enabled ?? true
  const key = enabled ? streamKey(options) : null
  const ref = useRef<UseEventStreamOptions<any>>(options)
  useIsomorphicLayoutEffect(() => { ref.current = options })

  const subscribe = useCallback((notify: () => void): () => void => {
    if (key === null) return () => {}
    let stream = streams.get(key)
    if (stream === undefined) {
      stream = new SharedStream(key)
      streams.set(key, stream)
    }
    const sub: Subscriber = { notify, options: ref }
    const s = stream
    s.add(sub)
    return () => s.remove(sub)
  }, [key])
  const read = useCallback((): EventStreamState<any> => {
    if (key === null) return IDLE_STREAM
    return streams.get(key)?.snapshot ?? CONNECTING_STREAM
  }, [key])
  const readServer = useCallback((): EventStreamState<any> => key === null ? IDLE_STREAM : CONNECTING_STREAM, [key])
  return useTrackedStore(subscribe, read, readServer) as EventStreamState<T>
}
