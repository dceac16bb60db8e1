import { GatewayClientError, type SerializedError } from './errors'
import { CallbackConnection, reportUncaught } from './callbacks'
import { DirectConnection, resolveUrl } from './stream'
import type { BroadcastChannelLike, Connection, ConnectionStatus, ConnectOptions, GatewayEvent, LockManagerLike, StatusInfo } from './types'

// Cross-tab sharing: every tab asks for the same Web Lock; the tab holding it (the leader) runs
// the one real stream and re-broadcasts it on a BroadcastChannel. When the leader closes or its
// tab goes away, the browser releases the lock, the next tab in the queue gets it and resumes
// from the last cursor it heard, so the hand-over loses nothing.

interface WireInfo { attempt?: number, delayMs?: number, reason?: StatusInfo['reason'], error?: SerializedError }
interface WireEvent { type: string, data: unknown, raw: string, id: string, error?: SerializedError }

type Wire =
  | { t: 'hello' }
  | { t: 'state', status: ConnectionStatus, info: WireInfo, id: string }
  | { t: 'status', status: ConnectionStatus, info: WireInfo }
  | { t: 'cursor', id: string }
  | { t: 'event', event: WireEvent }

function toWireInfo (info: StatusInfo): WireInfo {
  const w: WireInfo = {}
  if (info.attempt !== undefined) w.attempt = info.attempt
  if (info.delayMs !== undefined) w.delayMs = info.delayMs
  if (info.reason !== undefined) w.reason = info.reason
  if (info.error !== undefined) w.error = info.error.toJSON()
  return w
}

function fromWireInfo (w: WireInfo): StatusInfo {
  const info: StatusInfo = {}
  if (w.attempt !== undefined) info.attempt = w.attempt
  if (w.delayMs !== undefined) info.delayMs = w.delayMs
  if (w.reason !== undefined) info.reason = w.reason
  if (w.error !== undefined) info.error = GatewayClientError.from(w.error)
  return info
}

/** Tabs share a stream when they ask for the same thing from the same endpoint. */
export function defaultShareKey (o: Pick<ConnectOptions, 'url' | 'channels' | 'events' | 'mode'>): string {
  const u = resolveUrl(o.url)
  const channels = [...(o.channels ?? [])].sort().join(',')
  const events = [...(o.events ?? [])].sort().join(',')
  return `${u.origin}${u.pathname}|${channels}|${events}`
}

export class SharedConnection extends CallbackConnection implements Connection {
  role: 'leader' | 'follower' = 'follower'
  private closed = false
  private inner: DirectConnection | null = null
  private release: (() => void) | null = null
  private readonly lockAbort = new AbortController()
  private readonly bc: BroadcastChannelLike

  constructor (options: ConnectOptions, locks: LockManagerLike, BC: new (name: string) => BroadcastChannelLike) {
    super(options)
    const name = `sse-gateway:${options.shareKey ?? defaultShareKey(options)}`
    this.bc = new BC(name)
    this.bc.onmessage = (e: { data: Wire }) => this.receive(e.data)
    this.setStatus('connecting', {})
    this.post({ t: 'hello' })
    locks.request(name, { signal: this.lockAbort.signal }, () => this.lead()).catch(() => {
      // AbortError: close() gave up waiting for the lock
    })
  }

  close (): void {
    if (this.closed) return
    this.closed = true
    this.lockAbort.abort()
    this.inner?.close()
    this.inner = null
    this.release?.()
    this.bc.close()
    this.setStatus('closed', { reason: 'client' })
  }

  private lead (): Promise<void> {
    if (this.closed) return Promise.resolve()
    this.role = 'leader'
    // A follower that saw a stream taking over shows a reconnect, not a fresh start.
    let takeover = this.status !== 'connecting'
    return new Promise<void>((resolve) => {
      this.release = resolve
      this.inner = new DirectConnection({
        ...this.o,
        shareAcrossTabs: false,
        lastEventId: this.lastEventId,
        onEvent: (event) => {
          this.lastEventId = event.id
          const w: WireEvent = { type: event.type, data: event.data, raw: event.raw, id: event.id }
          if (event.error !== undefined) w.error = event.error.toJSON()
          this.post({ t: 'event', event: w })
          this.call(this.o.onEvent, event)
        },
        onLastEventId: (id) => {
          this.lastEventId = id
          this.post({ t: 'cursor', id })
          if (this.o.onLastEventId !== undefined) this.call(this.o.onLastEventId, id)
        },
        onError: (err) => this.report(err),
        onStatus: (status, info) => {
          if (takeover && status === 'connecting') {
            status = 'retrying'
            info = { attempt: 0, delayMs: 0 }
          }
          takeover = false
          if (status === 'closed') {
            this.inner = null
            if (this.closed) { this.release?.(); return } // our own close()
            // A fatal close (401, max-retries, ...) would hit every tab alike: end them all.
            // The message races the lock hand-over, so a follower may still try once itself.
            this.post({ t: 'status', status, info: toWireInfo(info) })
            this.release?.()
            this.shutdown(info)
            return
          }
          this.post({ t: 'status', status, info: toWireInfo(info) })
          this.setStatus(status, info)
        }
      })
    })
  }

  private receive (m: Wire): void {
    if (this.closed) return
    if (this.role === 'leader') {
      if (m.t === 'hello') this.post({ t: 'state', status: this.status, info: toWireInfo(this.statusInfo), id: this.lastEventId })
      return
    }
    switch (m.t) {
      case 'event': {
        const w = m.event
        const event: GatewayEvent = { type: w.type, data: w.data, raw: w.raw, id: w.id }
        if (w.error !== undefined) event.error = GatewayClientError.from(w.error)
        this.cursor(w.id)
        if (event.error !== undefined) this.report(event.error)
        this.call(this.o.onEvent, event)
        break
      }
      case 'cursor':
        this.cursor(m.id)
        break
      case 'state':
        this.cursor(m.id)
        if (m.status !== 'closed' && m.status !== this.status) this.setStatus(m.status, fromWireInfo(m.info))
        break
      case 'status':
        if (m.status === 'closed') this.shutdown(fromWireInfo(m.info))
        // Only a retry carries news when the status stays the same (attempt, delay).
        else if (m.status !== this.status || m.status === 'retrying') this.setStatus(m.status, fromWireInfo(m.info))
        break
      default:
        break
    }
  }

  private shutdown (info: StatusInfo): void {
    this.closed = true
    this.lockAbort.abort()
    this.bc.close()
    if (info.error !== undefined && this.role === 'follower') this.report(info.error)
    this.setStatus('closed', info)
  }

  private post (m: Wire): void {
    try {
      this.bc.postMessage(m)
    } catch (err) {
      // DataCloneError: data that survived JSON.parse always clones, so this is a closed channel
      if (!this.closed) reportUncaught(err)
    }
  }

}
