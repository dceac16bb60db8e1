import type { BackoffOptions } from './backoff'
import type { GatewayClientError } from './errors'

export type ConnectionStatus = 'connecting' | 'open' | 'retrying' | 'closed'

/**
 * Why a stream reached `closed`:
 * `client` (close() was called), `max-retries`, `unauthorized` (401), `forbidden` (403),
 * `auth-expired` (the token expired and there is no `getToken`), `http-error` (another
 * non-retryable answer: 400, 404, 204, a non-SSE 200).
 */
export type CloseReason = 'client' | 'max-retries' | 'unauthorized' | 'forbidden' | 'auth-expired' | 'http-error'

export interface StatusInfo {
  /** `retrying`: the retry's number as counted against `maxRetries` (0: a free token refresh). */
  attempt?: number
  /** `retrying`: how long the client waits before this retry. */
  delayMs?: number
  /** `closed`: why. */
  reason?: CloseReason
  /** `retrying` / `closed`: what went wrong, if anything did. */
  error?: GatewayClientError
}

export interface GatewayEvent<T = unknown> {
  /** The SSE event name (`message` when the frame had no `event:`), incl. `reset` and `auth-expired`. */
  type: string
  /** The payload parsed as JSON; the raw text when it is a plain string (or `json: false`). */
  data: T
  /** The payload text exactly as received. */
  raw: string
  /** The stream cursor after this event ('' before the first id). */
  id: string
  /** Set when the payload looked like JSON (`{`, `[`, `"`) but did not parse; `data` is then the raw text. */
  error?: GatewayClientError
}

/** The subset of the Web Locks API the client uses (`navigator.locks`). */
export interface LockManagerLike {
  request: (name: string, options: { signal?: AbortSignal }, callback: (lock: unknown) => Promise<unknown>) => Promise<unknown>
}

export interface BroadcastChannelLike {
  postMessage: (message: unknown) => void
  close: () => void
  onmessage: ((event: any) => void) | null
}

/** What the client needs of an EventSource: the browser's, or a polyfill such as `eventsource`. */
export interface EventSourceLike {
  addEventListener (type: string, listener: (event: any) => void): void
  close (): void
}

export type EventSourceConstructor = new (url: string, init?: { withCredentials?: boolean }) => EventSourceLike

export interface ConnectOptions {
  /** The stream endpoint, e.g. `https://gw.example.com/events` (relative URLs resolve against the page). */
  url: string
  /** A JWT; sent as `Authorization: Bearer` (fetch mode) or exchanged for a ticket (EventSource mode). */
  token?: string
  /** Called before every connection attempt; its token wins over `token`. */
  getToken?: () => string | Promise<string>
  /** Shared channels to subscribe to (`?channel=`); the private `user:<sub>` channel comes with every token. */
  channels?: string[]
  /** Deliver only these event names (`?events=`), filtered at the gateway. */
  events?: string[]
  onEvent: (event: GatewayEvent) => void
  onStatus?: (status: ConnectionStatus, info: StatusInfo) => void
  /**
   * Malformed JSON payloads and throwing callbacks (the stream carries on), and the error that
   * closed the stream for good. A retry's cause is in `onStatus`'s `info.error` instead.
   */
  onError?: (error: GatewayClientError) => void
  /** The cursor moved (also for id-only frames); persist it to resume across page loads. */
  onLastEventId?: (id: string) => void
  /** Consecutive failed attempts allowed before giving up with `closed`/`max-retries`. Default Infinity. */
  maxRetries?: number
  /** `fetch` (default) streams with fetch and headers; `eventsource` uses EventSource and a `?ticket=`. */
  mode?: 'fetch' | 'eventsource'
  /** One tab holds the stream; the others receive it over a BroadcastChannel. */
  shareAcrossTabs?: boolean
  /** Tabs with the same key share a stream. Default: url + channels + events. */
  shareKey?: string
  /** Resume from this cursor (e.g. one saved by `onLastEventId`). */
  lastEventId?: string
  backoff?: BackoffOptions
  /** Replaces the backoff computation entirely; `attempt` is 0 for the first retry. */
  retryDelay?: (attempt: number, serverRetryMs: number | undefined) => number
  /** Reconnect when nothing (not even a heartbeat) arrives for this long. 0 disables. Default 90000 (3 heartbeats). */
  idleTimeoutMs?: number
  /** Parse `data` as JSON. Default true. */
  json?: boolean
  /** Extra request headers (fetch mode). */
  headers?: Record<string, string>
  /** Fetch credentials; `include` sends the `sse_token` cookie cross-origin (and sets EventSource `withCredentials`). */
  credentials?: RequestCredentials
  fetch?: typeof fetch
  /** EventSource mode: `ticket` (default) trades the token for a single-use 30 s ticket; `query` puts it in `?access_token=`. */
  eventSourceAuth?: 'ticket' | 'query'
  /** EventSource mode: where to get tickets. Default: `/tickets` on the stream's origin. */
  ticketUrl?: string
  /** EventSource mode: named events to listen for besides `events`, `message`, `reset`, `auth-expired` and `disconnect` (EventSource cannot listen to "all"). */
  eventTypes?: string[]
  EventSource?: EventSourceConstructor
  locks?: LockManagerLike
  BroadcastChannel?: new (name: string) => BroadcastChannelLike
}

export interface Connection {
  close: () => void
  readonly status: ConnectionStatus
  /** The info that came with the current status. */
  readonly statusInfo: StatusInfo
  readonly lastEventId: string
  /** `direct`: this instance holds its own stream; `leader`/`follower`: tab sharing. */
  readonly role: 'direct' | 'leader' | 'follower'
}
