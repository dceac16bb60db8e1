import { asClientError, type GatewayClientError } from './errors'
import type { ConnectionStatus, ConnectOptions, StatusInfo } from './types'

/** Errors thrown by user callbacks end up here when `onError` cannot take them. */
export function reportUncaught (err: unknown): void {
  const report = (globalThis as { reportError?: (e: unknown) => void }).reportError
  if (typeof report === 'function') report(err)
  else console.error(err)
}

/**
 * What every connection (direct, or shared across tabs) does with the app's callbacks: it keeps
 * the status and cursor it reports, and a callback that throws is reported through `onError`
 * rather than breaking the stream or the parser state.
 */
export abstract class CallbackConnection {
  status: ConnectionStatus = 'connecting'
  statusInfo: StatusInfo = {}
  lastEventId: string
  protected readonly o: ConnectOptions

  constructor (options: ConnectOptions) {
    this.o = options
    this.lastEventId = options.lastEventId ?? ''
  }

  protected setStatus (status: ConnectionStatus, info: StatusInfo): void {
    this.status = status
    this.statusInfo = info
    if (this.o.onStatus !== undefined) this.call(this.o.onStatus, status, info)
  }

  /** A new cursor (from an event or an id-only frame); reported once per change. */
  protected cursor (id: string): void {
    if (id === this.lastEventId) return
    this.lastEventId = id
    if (this.o.onLastEventId !== undefined) this.call(this.o.onLastEventId, id)
  }

  protected report (error: GatewayClientError): void {
    if (this.o.onError === undefined) return
    try {
      this.o.onError(error)
    } catch (err) {
      reportUncaught(err)
    }
  }

  // A throwing callback is the app's bug, but it must not kill the stream or the parser state.
  protected call<A extends unknown[]> (fn: (...args: A) => void, ...args: A): void {
    try {
      fn(...args)
    } catch (err) {
      if (this.o.onError === undefined) { reportUncaught(err); return }
      this.report(asClientError(err, 'callback'))
    }
  }
}
