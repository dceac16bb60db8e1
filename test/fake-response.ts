import { EventEmitter } from 'node:events'
import type { ServerResponse } from 'node:http'
import { parseFrames, type SseFrame } from './sse-frames'

/**
 * Stands in for the ServerResponse of a hijacked SSE reply in the unit tests: records every
 * write, and can refuse writes like a full socket (backpressure) until `drain()`. `close` is
 * emitted on a later tick, as Node does, so a connection's own close reason comes first.
 */
export class FakeResponse extends EventEmitter {
  readonly chunks: string[] = []
  /** Bytes queued and not yet taken by the "socket" (grows while `full`). */
  writableLength = 0
  writableEnded = false
  destroyed = false
  readonly headersSent = true
  readonly socket = null
  /** While true, writes answer false and queue their bytes, like a socket that stopped reading. */
  full = false

  write (chunk: string): boolean {
    if (this.writableEnded || this.destroyed) return false
    this.chunks.push(chunk)
    if (this.full) this.writableLength += chunk.length
    return !this.full
  }

  end (chunk?: string): this {
    if (this.writableEnded) return this
    if (chunk !== undefined && chunk !== '') this.chunks.push(chunk)
    this.writableEnded = true
    setImmediate(() => this.emit('close'))
    return this
  }

  destroy (): this {
    if (this.destroyed) return this
    this.destroyed = true
    setImmediate(() => this.emit('close'))
    return this
  }

  /** The client read everything: the queue empties and `drain` fires. */
  drain (): void {
    this.full = false
    this.writableLength = 0
    this.emit('drain')
  }

  /** The client went away. */
  hangUp (): void {
    this.destroyed = true
    this.emit('close')
  }

  text (): string {
    return this.chunks.join('')
  }

  frames (): SseFrame[] {
    return parseFrames(this.text())
  }

  /** Frames that dispatch an event (have data). */
  messages (): SseFrame[] {
    return this.frames().filter(f => f.data !== undefined)
  }

  get res (): ServerResponse {
    return this as unknown as ServerResponse
  }
}
