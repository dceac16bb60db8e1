import { STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import type { ResponseSink } from '../delivery/connection'

/** One chunk of a chunked body; nothing for an empty string (that would be the last chunk). */
function framed (s: string): string {
  return s.length === 0 ? '' : Buffer.byteLength(s).toString(16) + '\r\n' + s + '\r\n'
}

/**
 * The response of a stream the front door took before node:http saw it: the part of
 * ServerResponse a stream uses, on the bare socket. The head leaves with the first write (as
 * node's does); a response ended before any write is a whole one with a length (an error),
 * anything else is chunked. Per stream it holds the socket and a few flags, where node's
 * request and response objects, parser and listeners held several KiB (bench/README.md).
 */
export class SocketResponse implements ResponseSink {
  readonly socket: Socket
  headersSent = false
  writableEnded = false
  chunkedEncoding = false
  private head = ''

  constructor (socket: Socket) {
    this.socket = socket
  }

  get writableLength (): number {
    return this.socket.writableLength
  }

  writeHead (status: number, headers: Readonly<Record<string, string | number | readonly string[] | undefined>>): this {
    let h = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n`
    for (const name in headers) {
      const v = headers[name]
      if (v === undefined) continue
      h += `${name}: ${Array.isArray(v) ? v.join(', ') : String(v)}\r\n`
    }
    this.head = h
    this.headersSent = true
    return this
  }

  write (chunk: string): boolean {
    if (this.writableEnded) return false
    // An empty chunk would be the last one (the end of the body): node writes nothing for it.
    if (chunk.length === 0 && this.chunkedEncoding) return true
    let out = framed(chunk)
    if (!this.chunkedEncoding) {
      out = this.head + 'transfer-encoding: chunked\r\n\r\n' + out
      this.head = ''
      this.chunkedEncoding = true
    }
    return this.socket.write(out)
  }

  end (chunk?: string): this {
    if (this.writableEnded) return this
    if (this.socket.destroyed) {
      // The peer is gone (the usual end of a stream): writing would only make an EPIPE error.
      this.writableEnded = true
      return this
    }
    if (!this.chunkedEncoding) {
      // Nothing written yet: a whole response, and the connection goes with it.
      const body = chunk ?? ''
      if (!this.headersSent) this.writeHead(200, {})
      this.socket.end(this.head + `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n` + body)
    } else {
      this.socket.end(framed(chunk ?? '') + '0\r\n\r\n')
    }
    this.writableEnded = true
    this.head = ''
    return this
  }

  destroy (): this {
    this.socket.destroy()
    return this
  }

  on (event: 'close' | 'error' | 'drain', fn: () => void): this {
    this.socket.on(event, fn)
    return this
  }

  off (event: 'close' | 'error' | 'drain', fn: () => void): this {
    this.socket.off(event, fn)
    return this
  }
}
