import { EventEmitter } from 'node:events'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

// The gateway's delivery core from dist/, for the micro-benchmarks that drive it without sockets
// (bench/fanout.mjs, bench/otel-cost.mjs).

export const ROOT = join(import.meta.dirname, '..', '..')
export const dist = (p) => import(pathToFileURL(join(ROOT, 'dist', p)).href)
export const { Hub } = await dist('delivery/hub.js')
export const { Connection } = await dist('delivery/connection.js')
export const { MemoryBus } = await dist('bus/memory-bus.js')
export const { createMetrics } = await dist('metrics/metrics.js')
export const { channelSetHash } = await dist('delivery/cursor.js')

/**
 * A ServerResponse stand-in on the gateway's direct-write path (head sent, chunked, nothing
 * queued) whose socket only counts what it is given: the micro-benchmarks measure the JS cost of
 * delivery without the kernel's cost of a write.
 */
export class CountingResponse extends EventEmitter {
  constructor (counter) {
    super()
    this.headersSent = true
    this.chunkedEncoding = true
    this.writableLength = 0
    this.writableEnded = false
    this.socket = { writableLength: 0, write: (s) => { counter.writes++; counter.bytes = (counter.bytes ?? 0) + s.length; return true } }
  }

  writeHead () {}
  write (s) { return this.socket.write(s) }
  end () { this.writableEnded = true }
  destroy () {}
}
