// An incremental parser for text/event-stream, following the WHATWG HTML "server-sent events"
// interpretation rules: https://html.spec.whatwg.org/multipage/server-sent-events.html

/** One dispatched event, as EventSource would deliver it. */
export interface SseMessage {
  /** The `event:` field, or `message` when the frame had none. */
  type: string
  /** The `data:` lines joined with `\n`. */
  data: string
  /** The last event id at dispatch time (ids persist across frames until replaced). */
  lastEventId: string
}

export interface SseParserHandlers {
  onMessage: (message: SseMessage) => void
  /** A valid `retry:` field (ASCII digits only). */
  onRetry?: (ms: number) => void
  /** A comment line, without its leading `:` and one optional space. */
  onComment?: (text: string) => void
  /**
   * The last event id changed. Fires before `onMessage` of the same frame and also for frames
   * that carry only an `id:` (they move the cursor without dispatching anything).
   */
  onLastEventId?: (id: string) => void
}

const LF = 10
const CR = 13

export class SseParser {
  /** The stream's last event id; seed it when resuming so frames without `id:` keep it. */
  lastEventId: string
  private readonly h: SseParserHandlers
  private readonly decoder = new TextDecoder('utf-8')
  private buf = ''
  // Characters of `buf` already known to hold no line terminator, so a long line arriving in
  // many small chunks is scanned once, not once per chunk.
  private scanned = 0
  // A chunk ended in CR: if the next one starts with LF, that LF belongs to the same CRLF.
  private skipLF = false
  private started = false
  private data = ''
  private eventType = ''
  private idBuffer: string

  constructor (handlers: SseParserHandlers, options: { lastEventId?: string } = {}) {
    this.h = handlers
    this.lastEventId = options.lastEventId ?? ''
    this.idBuffer = this.lastEventId
  }

  /**
   * Feeds bytes (decoded as UTF-8, so a character split across chunks is reassembled) or
   * already decoded text.
   */
  feed (chunk: Uint8Array | string): void {
    if (typeof chunk === 'string') {
      // TextDecoder drops a leading BOM from bytes; text fed directly needs the same.
      if (!this.started && chunk !== '') {
        this.started = true
        if (chunk.charCodeAt(0) === 0xfeff) chunk = chunk.slice(1)
      }
      this.push(chunk)
    } else {
      this.started = true
      this.push(this.decoder.decode(chunk, { stream: true }))
    }
  }

  /**
   * The stream ended. Per the spec, an event not yet terminated by a blank line is discarded.
   * The parser can be fed again afterwards (a new connection), keeping only the last event id.
   */
  end (): void {
    const rest = this.decoder.decode()
    if (rest !== '') this.push(rest)
    this.buf = ''
    this.scanned = 0
    this.skipLF = false
    this.started = false
    this.data = ''
    this.eventType = ''
    this.idBuffer = this.lastEventId
  }

  private push (text: string): void {
    if (text === '') return
    let buf = this.buf === '' ? text : this.buf + text
    let lineStart = 0
    let i = this.scanned
    if (this.skipLF && buf.length > 0) {
      this.skipLF = false
      if (buf.charCodeAt(0) === LF) { lineStart = 1; i = 1 }
    }
    const n = buf.length
    for (; i < n; i++) {
      const c = buf.charCodeAt(i)
      if (c !== LF && c !== CR) continue
      this.line(buf.slice(lineStart, i))
      if (c === CR) {
        if (i + 1 < n) {
          if (buf.charCodeAt(i + 1) === LF) i++
        } else {
          this.skipLF = true
        }
      }
      lineStart = i + 1
    }
    buf = lineStart === 0 ? buf : buf.slice(lineStart)
    this.buf = buf
    this.scanned = buf.length
  }

  private line (line: string): void {
    if (line === '') { this.dispatch(); return }
    const colon = line.indexOf(':')
    if (colon === 0) {
      this.h.onComment?.(line.charCodeAt(1) === 32 ? line.slice(2) : line.slice(1))
      return
    }
    let field: string
    let value: string
    if (colon < 0) {
      field = line
      value = ''
    } else {
      field = line.slice(0, colon)
      value = line.charCodeAt(colon + 1) === 32 ? line.slice(colon + 2) : line.slice(colon + 1)
    }
    switch (field) {
      case 'event': this.eventType = value; break
      case 'data': this.data += value + '\n'; break
      case 'id': if (!value.includes('\0')) this.idBuffer = value; break
      case 'retry': if (/^[0-9]+$/.test(value)) this.h.onRetry?.(Number(value)); break
      default: break // unknown fields are ignored by the spec
    }
  }

  private dispatch (): void {
    if (this.idBuffer !== this.lastEventId) {
      this.lastEventId = this.idBuffer
      this.h.onLastEventId?.(this.lastEventId)
    }
    if (this.data === '') {
      this.eventType = ''
      return
    }
    const message: SseMessage = {
      type: this.eventType === '' ? 'message' : this.eventType,
      data: this.data.slice(0, -1),
      lastEventId: this.lastEventId
    }
    this.data = ''
    this.eventType = ''
    this.h.onMessage(message)
  }
}
