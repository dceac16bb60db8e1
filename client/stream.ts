import { backoffDelay } from './backoff'
import { CallbackConnection } from './callbacks'
import { sleep } from '../src/shared/sleep'
import { asClientError, errorFromResponse, GatewayClientError } from './errors'
import { SseParser, type SseMessage } from './parser'
import type { CloseReason, Connection, ConnectOptions, EventSourceConstructor, GatewayEvent, StatusInfo } from './types'

/** How one connection attempt ended. */
interface Outcome {
  /** Stop for good with this reason. */
  fatal?: CloseReason
  error?: GatewayClientError
  retryAfterMs?: number
  /** The token expired; `refresh` when a fresh token may reconnect at once. */
  authExpired?: 'refresh' | 'backoff'
}

// EventSource only reports the event names it listens to; these it always needs.
const ALWAYS_LISTENED = ['message', 'reset', 'auth-expired']
// A connection that delivered no event and lasted less than this did not really work (a proxy
// that accepts and hangs up, a token that expires at once): it counts as a failed attempt
// against maxRetries, and an auth-expired on it reconnects through the backoff, not at once.
const USEFUL_LIFETIME_MS = 1000

function pageHref (): string | undefined {
  return (globalThis as { location?: { href?: string } }).location?.href
}

export function resolveUrl (url: string): URL {
  return new URL(url, pageHref())
}

export function streamUrl (o: Pick<ConnectOptions, 'url' | 'channels' | 'events'>, extra: Record<string, string> = {}): string {
  const u = resolveUrl(o.url)
  for (const c of o.channels ?? []) u.searchParams.append('channel', c)
  if (o.events !== undefined && o.events.length > 0) u.searchParams.set('events', o.events.join(','))
  for (const [k, v] of Object.entries(extra)) u.searchParams.set(k, v)
  return u.toString()
}

/**
 * JSON first; a payload that cannot be JSON (a plain string published as such) passes through
 * as text; one that starts like JSON but does not parse is the malformed case.
 */
export function parseData (raw: string): { value: unknown, error?: GatewayClientError } {
  const first = raw.trimStart().charAt(0)
  try {
    return { value: JSON.parse(raw) }
  } catch (err) {
    if (first === '{' || first === '[' || first === '"') {
      const msg = err instanceof Error ? err.message : String(err)
      return { value: raw, error: new GatewayClientError('malformed_json', `event data is not valid JSON: ${msg}`, { raw, cause: err }) }
    }
    return { value: raw }
  }
}

/** One tab's own stream (fetch or EventSource), with resume and retries. */
export class DirectConnection extends CallbackConnection implements Connection {
  readonly role = 'direct' as const
  private closed = false
  private readonly stop = new AbortController()
  private current: AbortController | null = null
  private serverRetryMs: number | undefined
  private failures = 0
  private openedAt = 0
  private delivered = false
  private pending: Outcome | null = null

  constructor (options: ConnectOptions) {
    super(options)
    if ((options.mode ?? 'fetch') === 'fetch' && typeof (options.fetch ?? globalThis.fetch) !== 'function') {
      throw new TypeError('connect(): no fetch available; pass options.fetch')
    }
    if (options.mode === 'eventsource' && typeof (options.EventSource ?? (globalThis as { EventSource?: unknown }).EventSource) !== 'function') {
      throw new TypeError('connect(): no EventSource available; pass options.EventSource')
    }
    this.setStatus('connecting', {})
    void this.run()
  }

  close (): void {
    if (this.closed) return
    this.finish('client')
  }

  private finish (reason: CloseReason, error?: GatewayClientError): void {
    this.closed = true
    this.stop.abort()
    this.current?.abort()
    if (error !== undefined) this.report(error)
    this.setStatus('closed', error === undefined ? { reason } : { reason, error })
  }

  private async run (): Promise<void> {
    const maxRetries = this.o.maxRetries ?? Infinity
    while (!this.closed) {
      let outcome: Outcome
      try {
        outcome = this.o.mode === 'eventsource' ? await this.attemptEventSource() : await this.attemptFetch()
      } catch (err) {
        outcome = { error: asClientError(err) }
      }
      if (this.closed) return
      if (this.wasUseful()) this.failures = 0
      this.openedAt = 0
      if (outcome.fatal !== undefined) { this.finish(outcome.fatal, outcome.error); return }
      if (outcome.authExpired !== undefined && this.o.getToken === undefined) {
        this.finish('auth-expired', outcome.error)
        return
      }
      const free = outcome.authExpired === 'refresh'
      if (!free) this.failures++
      if (this.failures > maxRetries) { this.finish('max-retries', outcome.error); return }
      let delay = free ? 0 : this.delayFor(this.failures - 1)
      if (outcome.retryAfterMs !== undefined) delay = Math.max(delay, outcome.retryAfterMs)
      const info: StatusInfo = { attempt: this.failures, delayMs: delay }
      if (outcome.error !== undefined) info.error = outcome.error
      this.setStatus('retrying', info)
      await sleep(delay, this.stop.signal)
    }
  }

  private delayFor (attempt: number): number {
    if (this.o.retryDelay !== undefined) return this.o.retryDelay(attempt, this.serverRetryMs)
    return backoffDelay(attempt, this.o.backoff, this.serverRetryMs)
  }

  private async token (): Promise<string | undefined> {
    if (this.o.getToken === undefined) return this.o.token
    let t: string
    try {
      t = await this.o.getToken()
    } catch (err) {
      throw asClientError(err, 'token')
    }
    if (typeof t !== 'string' || t === '') throw new GatewayClientError('token', 'getToken() returned no token')
    return t
  }

  private wasUseful (): boolean {
    return this.openedAt > 0 && (this.delivered || Date.now() - this.openedAt >= USEFUL_LIFETIME_MS)
  }

  private opened (): void {
    this.openedAt = Date.now()
    this.delivered = false
    this.pending = null
    this.setStatus('open', {})
  }

  private async attemptFetch (): Promise<Outcome> {
    this.pending = null
    const token = await this.token()
    if (this.closed) return {}
    const ctl = new AbortController()
    this.current = ctl
    const headers: Record<string, string> = { ...this.o.headers, accept: 'text/event-stream' }
    if (token !== undefined) headers.authorization = `Bearer ${token}`
    if (this.lastEventId !== '') headers['last-event-id'] = this.lastEventId
    const init: RequestInit = { headers, signal: ctl.signal }
    if (this.o.credentials !== undefined) init.credentials = this.o.credentials
    const f = this.o.fetch ?? globalThis.fetch
    let res: Response
    try {
      res = await f(streamUrl(this.o), init)
    } catch (err) {
      return { error: asClientError(err) }
    }
    if (!res.ok || res.status === 204) return await this.httpFailure(res)
    const type = res.headers.get('content-type') ?? ''
    if (!/^\s*text\/event-stream/i.test(type) || res.body === null) {
      ctl.abort()
      return { fatal: 'http-error', error: new GatewayClientError('bad_content_type', `expected text/event-stream, got "${type}"`, { status: res.status }) }
    }
    this.opened()
    const parser = this.parser()
    const reader = res.body.getReader()
    const idleMs = this.o.idleTimeoutMs ?? 90_000
    let idle: ReturnType<typeof setTimeout> | undefined
    let idleFired = false
    const arm = (): void => {
      if (idleMs <= 0) return
      if (idle !== undefined) clearTimeout(idle)
      idle = setTimeout(() => { idleFired = true; ctl.abort() }, idleMs)
    }
    arm()
    try {
      for (;;) {
        const { done, value } = await reader.read()
        if (done) break
        arm()
        parser.feed(value)
        if (this.closed || this.pending !== null) break
      }
    } catch (err) {
      if (this.closed) return {}
      if (this.pending !== null) return this.pending
      if (idleFired) return { error: new GatewayClientError('idle_timeout', `no data for ${idleMs} ms`) }
      return { error: asClientError(err) }
    } finally {
      if (idle !== undefined) clearTimeout(idle)
      parser.end()
      ctl.abort()
    }
    if (this.pending !== null) return this.pending
    return { error: new GatewayClientError('stream_ended', 'the server ended the stream') }
  }

  private async httpFailure (res: Response): Promise<Outcome> {
    const error = await errorFromResponse(res)
    const s = res.status
    if (s === 401) return { fatal: 'unauthorized', error }
    if (s === 403) return { fatal: 'forbidden', error }
    if (s === 429 || s === 408 || s >= 500) return { error, retryAfterMs: error.retryAfterMs }
    return { fatal: 'http-error', error }
  }

  private parser (): SseParser {
    return new SseParser({
      onMessage: (m) => this.message(m),
      onRetry: (ms) => { this.serverRetryMs = ms },
      onLastEventId: (id) => this.cursor(id)
    }, { lastEventId: this.lastEventId })
  }

  private message (m: SseMessage): void {
    if (this.closed) return
    if (m.type === 'auth-expired') {
      this.pending = {
        authExpired: this.wasUseful() ? 'refresh' : 'backoff',
        error: new GatewayClientError('auth_expired', 'the token expired')
      }
    } else {
      this.delivered = true
    }
    const event: GatewayEvent = { type: m.type, data: m.data, raw: m.data, id: m.lastEventId }
    if (this.o.json !== false) {
      const parsed = parseData(m.data)
      event.data = parsed.value
      if (parsed.error !== undefined) {
        event.error = parsed.error
        this.report(parsed.error)
      }
    }
    this.call(this.o.onEvent, event)
  }

  private async attemptEventSource (): Promise<Outcome> {
    this.pending = null
    const token = await this.token()
    if (this.closed) return {}
    const extra: Record<string, string> = {}
    if (token !== undefined) {
      if (this.o.eventSourceAuth === 'query') {
        extra.access_token = token
      } else {
        const got = await this.ticket(token)
        if (typeof got !== 'string') return got
        extra.ticket = got
      }
    }
    if (this.closed) return {}
    // A new EventSource does not send Last-Event-ID, and reusing one would replay a redeemed ticket.
    if (this.lastEventId !== '') extra.lastEventId = this.lastEventId
    const ES = (this.o.EventSource ?? (globalThis as { EventSource?: EventSourceConstructor }).EventSource) as EventSourceConstructor
    const es = new ES(streamUrl(this.o, extra), { withCredentials: this.o.credentials === 'include' })
    return await new Promise<Outcome>((resolve) => {
      let opened = false
      const ctl = new AbortController()
      this.current = ctl
      let settled = false
      const done = (o: Outcome): void => {
        if (settled) return
        settled = true
        es.close()
        ctl.signal.removeEventListener('abort', onAbort)
        resolve(o)
      }
      const onAbort = (): void => done({})
      ctl.signal.addEventListener('abort', onAbort)
      es.addEventListener('open', () => {
        if (settled) return
        opened = true
        this.opened()
      })
      // EventSource hides the status code; an error before open is retried like a network error.
      es.addEventListener('error', () => {
        if (this.pending !== null) { done(this.pending); return }
        done({ error: opened ? new GatewayClientError('stream_ended', 'the server ended the stream') : new GatewayClientError('network', 'EventSource could not connect') })
      })
      const listener = (e: { data: string, lastEventId: string, type: string }): void => {
        if (this.closed || settled) return
        // Browsers carry the cursor over to frames without `id:`, but some polyfills (the
        // `eventsource` package) report '' for them, so '' never clears the cursor here.
        if (e.lastEventId !== '') this.cursor(e.lastEventId)
        this.message({ type: e.type, data: e.data, lastEventId: this.lastEventId })
        if (this.pending !== null) done(this.pending)
      }
      const types = new Set([...ALWAYS_LISTENED, ...(this.o.events ?? []), ...(this.o.eventTypes ?? [])])
      for (const t of types) es.addEventListener(t, listener)
    })
  }

  private async ticket (token: string): Promise<string | Outcome> {
    const url = this.o.ticketUrl !== undefined ? resolveUrl(this.o.ticketUrl) : new URL('/tickets', resolveUrl(this.o.url))
    const ctl = new AbortController()
    this.current = ctl
    const init: RequestInit = { method: 'POST', headers: { authorization: `Bearer ${token}` }, signal: ctl.signal }
    if (this.o.credentials !== undefined) init.credentials = this.o.credentials
    let res: Response
    try {
      res = await (this.o.fetch ?? globalThis.fetch)(url.toString(), init)
    } catch (err) {
      return { error: asClientError(err) }
    }
    if (!res.ok) return await this.httpFailure(res)
    try {
      const body = await res.json() as { ticket?: unknown }
      if (typeof body.ticket === 'string') return body.ticket
    } catch {
      // handled below like any answer without a ticket
    }
    return { error: new GatewayClientError('http_' + res.status, 'POST /tickets answered without a ticket', { status: res.status }) }
  }

}
