import type { ServerResponse } from 'node:http'
import { constants, Http2ServerResponse, type ServerHttp2Stream } from 'node:http2'
import type { Socket } from 'node:net'
import { compareIds } from '../bus/bus'
import type { Metrics } from '../metrics/metrics'
import { controlFrame, HEARTBEAT } from './sse'

/** One message, framed once, shared by every connection that receives it. */
export interface Frame {
  id: string
  channel: string
  event: string
  key: string | undefined
  ts: number
  body: string
  /** UTF-8 length of body, measured once per message (the chunk header needs bytes). */
  bytes?: number
}

export type CloseReason = 'client' | 'slow_consumer' | 'auth_expired' | 'drain' | 'error' | 'shutdown' | 'revoked'

/**
 * What a stream writes to, beside node's own responses: the part of ServerResponse used here,
 * as the HTTP edge provides it over a socket it took before node:http (src/http1/).
 */
export interface ResponseSink {
  readonly socket: Socket | null
  readonly headersSent: boolean
  readonly writableEnded: boolean
  readonly writableLength: number
  /** True once the head is out and writes are chunks that the hot path may frame itself. */
  readonly chunkedEncoding: boolean
  write (chunk: string): boolean
  end (chunk?: string): unknown
  destroy (): unknown
  on (event: 'close' | 'error' | 'drain', fn: () => void): unknown
  off (event: 'close' | 'error' | 'drain', fn: () => void): unknown
}

export interface ConnectionOptions {
  /** HTTP/1.1 or HTTP/2 (compat API) response; the write path differs, nothing else. */
  res: ServerResponse | Http2ServerResponse | ResponseSink
  user: string
  /** The token's `jti`, so a revocation of that token finds its streams. */
  jti?: string
  channels: string[]
  hash: string
  events: Set<string> | null
  maxBufferedBytes: number
  /** Window 0: no conflation; the hub still writes once per event-loop turn. */
  immediate: boolean
  metrics: Metrics
  onClose: (conn: Connection, reason: CloseReason) => void
  /** The request id, so the close line can name the request (not its logger: memory). */
  reqId?: string
}

/**
 * A live SSE stream. Frames reach it through push(); it filters, de-duplicates by id per
 * channel, conflates by key (unless window 0), and writes what is pending when the hub flushes
 * it: on the shared tick, or at the end of the event-loop turn with window 0, so everything due
 * for it in one turn leaves in one write. Per recipient it stores only a frame reference and a
 * channel index.
 */
export class Connection {
  readonly user: string
  readonly jti: string | undefined
  readonly channels: string[]
  readonly hash: string
  readonly openedAt = Date.now()
  readonly reqId: string | undefined
  /** Epoch ms when the token ends the stream (the hub's expiry sweep), 0 for never. */
  expiresAt = 0
  /** Last id written, per channel: the cursor. */
  readonly pos: string[]
  /** Last id accepted (written or pending), per channel: duplicate filter. */
  private readonly queued: string[]
  private readonly events: Set<string> | null
  private readonly res: ServerResponse
  /** The HTTP/2 stream (flow-controlled per stream), or null on HTTP/1.1 where the socket is ours. */
  private readonly h2: ServerHttp2Stream | null
  private readonly max: number
  private readonly immediate: boolean
  private readonly m: Metrics
  private readonly onClose: ConnectionOptions['onClose']
  private readonly cursorPrefix: string
  state: 'syncing' | 'live' | 'closed' = 'syncing'
  /** Set by the batcher: already in its dirty set. */
  dirty = false
  private frames: Array<Frame | null> = []
  private idx: number[] = []
  /** Bytes held while syncing (live frames waiting for the replay). */
  private bytes = 0
  private keys: Map<string, number> | null = null

  constructor (o: ConnectionOptions) {
    // Both response kinds share the calls used here (write, end, destroy, writableLength,
    // drain/close events); only writeFrames tells them apart.
    this.res = o.res as ServerResponse
    this.h2 = o.res instanceof Http2ServerResponse ? o.res.stream : null
    this.user = o.user
    this.jti = o.jti
    this.channels = o.channels
    this.hash = o.hash
    this.events = o.events
    this.max = o.maxBufferedBytes
    this.immediate = o.immediate
    this.m = o.metrics
    this.onClose = o.onClose
    this.reqId = o.reqId
    this.cursorPrefix = `${o.hash}:`
    this.pos = o.channels.map(() => '0-0')
    this.queued = this.pos.slice()
    this.res.on('close', () => this.close('client'))
    this.res.on('error', () => this.close('error'))
  }

  cursor (): string {
    return this.cursorPrefix + (this.pos.length === 1 ? this.pos[0] : this.pos.join(','))
  }

  /** Sets where each channel starts (after sync), before live frames are released. */
  setPositions (positions: readonly string[]): void {
    for (let i = 0; i < positions.length; i++) {
      this.pos[i] = positions[i]
      this.queued[i] = positions[i]
    }
  }

  get closed (): boolean {
    return this.state === 'closed'
  }

  accepts (event: string): boolean {
    return this.events === null || this.events.has(event)
  }

  push (i: number, f: Frame): void {
    if (this.state === 'closed') return
    if (this.events !== null && !this.events.has(f.event)) return
    if (this.state === 'syncing') {
      // Held until the replay is written (which waits for the socket); dedupe happens when
      // released. Memory is the bound here: a backlog the replay cannot get out.
      this.frames.push(f)
      this.idx.push(i)
      this.bytes += f.body.length
      if (this.bytes > this.max) this.close('slow_consumer')
      return
    }
    if (compareIds(f.id, this.queued[i]) <= 0) return
    this.queued[i] = f.id
    if (f.key !== undefined && !this.immediate) this.conflate(i, f)
    // The batch being built does not count against the budget (a burst is not a slow reader):
    // it holds references to frames shared by every recipient, until the next flush.
    this.frames.push(f)
    this.idx.push(i)
  }

  private conflate (i: number, f: Frame): void {
    if (this.keys === null) this.keys = new Map()
    const at = this.keys.get(f.key as string)
    // Same channel only: replacing across channels would let a cursor skip the older value.
    if (at !== undefined && this.idx[at] === i && this.frames[at] !== null) {
      this.frames[at] = null
      this.m.droppedConflated.inc()
    }
    this.keys.set(f.key as string, this.frames.length)
  }

  /** Releases frames held while syncing, then behaves live. */
  goLive (): void {
    if (this.state !== 'syncing') return
    const frames = this.frames
    const idx = this.idx
    this.frames = []
    this.idx = []
    this.bytes = 0
    this.state = 'live'
    for (let k = 0; k < frames.length; k++) this.push(idx[k], frames[k] as Frame)
  }

  /** Writes pending frames in one socket write. Called by the batcher's shared tick. */
  /**
   * Writes pending frames in one socket write; answers how many it wrote. The caller counts
   * writes and frames into the metrics once per flush round (prom-client's inc allocates).
   */
  flush (now: number): number {
    this.dirty = false
    if (this.state !== 'live' || this.frames.length === 0) return 0
    let out = ''
    let n = 0
    // The id line is ASCII (ids, a base-36 hash), so the chunk's byte length adds up without
    // measuring (flattening) the joined string per recipient.
    let bytes = 0
    for (let k = 0; k < this.frames.length; k++) {
      const f = this.frames[k]
      if (f === null) continue
      this.pos[this.idx[k]] = f.id
      const cursor = this.cursor()
      out += f.body + 'id: ' + cursor + '\n\n'
      bytes += (f.bytes ?? Buffer.byteLength(f.body)) + cursor.length + 6
      this.m.latency.observe((now - f.ts) / 1000)
      n++
    }
    this.frames.length = 0
    this.idx.length = 0
    if (this.keys !== null) this.keys.clear()
    if (n > 0 && !this.writeFrames(out, n, bytes)) return 0
    return n
  }

  hasPending (): boolean {
    return this.frames.length > 0
  }

  /** False when the stream was cut instead (a slow consumer). */
  private writeFrames (out: string, n: number, bytes: number): boolean {
    const res = this.res as ServerResponse & { chunkedEncoding?: boolean }
    // The slow-consumer budget: bytes of EARLIER writes the socket (or the HTTP/2 stream) has
    // still not taken. What is being written now does not count, so a client that keeps up is
    // never cut by one burst; the backlog stays below the budget plus one batch.
    if (res.writableLength > this.max) {
      this.close('slow_consumer')
      return false
    }
    if (this.h2 !== null) {
      // HTTP/2: many streams share one socket, so there is no direct write; the stream's own
      // write respects its flow-control window, and what the peer has not let us send stays
      // in the stream's buffer (writableLength), counted against the budget above.
      this.h2.write(out)
      this.wrote(n)
      return true
    }
    const socket = res.socket
    // writableLength is the response's own queue plus the socket's: equal means nothing queued in
    // the response, so a direct socket write keeps the byte order.
    if (socket !== null && res.headersSent && res.chunkedEncoding === true && res.writableLength === socket.writableLength && !res.writableEnded) {
      // The hot path: frame the chunk ourselves and write to the socket, skipping
      // ServerResponse's per-write cork/uncork and bookkeeping (bench/README.md, "P2": about
      // half the p99 and a third of the heap at 10,000 streams x 50 msg/s).
      socket.write(bytes.toString(16) + '\r\n' + out + '\r\n')
    } else {
      res.write(out)
    }
    this.wrote(n)
    return true
  }

  private wrote (n: number): void {
    this.m.batchSize.observe(n)
  }

  /** Replay and control output; resolves once the socket took it. Same budget as live writes. */
  async writeAsync (s: string): Promise<void> {
    if (this.state === 'closed') return
    if (this.res.writableLength > this.max) {
      this.close('slow_consumer')
      return
    }
    if (this.res.write(s)) return
    await new Promise<void>(resolve => {
      const done = (): void => {
        this.res.off('drain', done)
        this.res.off('close', done)
        resolve()
      }
      this.res.on('drain', done)
      this.res.on('close', done)
    })
  }

  heartbeat (): void {
    if (this.state === 'live' && this.frames.length === 0) this.res.write(HEARTBEAT)
  }

  /** Writes a last frame and ends the stream gracefully. */
  end (frame: string, reason: CloseReason): void {
    if (this.state === 'closed') return
    if (this.state === 'live') {
      const n = this.flush(Date.now())
      if (n > 0) {
        this.m.socketWrites.inc()
        this.m.delivered.inc(n)
      }
    }
    this.res.end(frame)
    this.close(reason)
  }

  /** Ends the stream with `event: disconnect` (a revoked token or user). */
  disconnect (reason: string): void {
    if (this.state === 'closed') return
    if (!this.res.headersSent) {
      // Still syncing: no head went out, so there is no stream to end gracefully.
      this.cut()
      this.close('revoked')
      return
    }
    this.end(controlFrame('disconnect', { reason }), 'revoked')
  }

  close (reason: CloseReason): void {
    if (this.state === 'closed') return
    this.state = 'closed'
    this.frames = []
    this.idx = []
    // A slow consumer is cut off at once: ending gracefully would queue behind its backlog.
    if (reason === 'slow_consumer' || reason === 'error') this.cut()
    else if (!this.res.writableEnded) this.res.end()
    this.onClose(this, reason)
  }

  /**
   * On HTTP/2 an RST_STREAM saying CANCEL (destroy alone would reset with NO_ERROR, which a
   * client may take for a complete response); the session's other streams go on.
   */
  private cut (): void {
    if (this.h2 !== null) this.h2.close(constants.NGHTTP2_CANCEL)
    else this.res.destroy()
  }
}
