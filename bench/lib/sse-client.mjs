// The SSE load client: thousands of streams per process over raw `net` sockets, an HTTP/1.1
// response-head reader, a chunked-transfer decoder and a minimal SSE parser, all on Buffers.
//
// Every benchmark payload starts with `{"s":<seq>,"t":<send time ms>`: `s` is the sequence
// number on the stream's channel (1, 2, 3, ...), `t` the publisher's wall clock at send
// (performance.timeOrigin + performance.now(), comparable across processes on one machine).
// The parser reads both straight from the bytes (JSON.parse only as a fallback), so one process
// can parse several hundred thousand frames per second.
//
// Per stream it keeps: unique messages received, highest sequence seen, duplicates,
// out-of-order arrivals and a bitset of the sequences seen. Per process: one latency histogram
// (receive time - t) and a deliveries-per-second timeline.

import net from 'node:net'
import { Histogram, nowMs } from './hist.mjs'

const HEAD_END = Buffer.from('\r\n\r\n')
const NL = 10
const CR = 13

// Stream phases
const CONNECTING = 0
const HEAD = 1
const BODY = 2
const CLOSED = 3

// Chunked decoder states
const C_SIZE = 0
const C_EXT = 1
const C_DATA = 2
const C_CRLF = 3
const C_DONE = 4

function hexVal (c) {
  if (c >= 48 && c <= 57) return c - 48
  if (c >= 97 && c <= 102) return c - 87
  if (c >= 65 && c <= 70) return c - 55
  return -1
}

/** Parses a non-negative decimal number (with optional fraction) at b[p..end); NaN if none. */
function parseNumber (b, p, end) {
  let v = 0
  let digits = 0
  while (p < end) {
    const c = b[p]
    if (c < 48 || c > 57) break
    v = v * 10 + (c - 48)
    p++
    digits++
  }
  if (digits === 0) return NaN
  if (p < end && b[p] === 46) { // '.'
    p++
    let scale = 0.1
    while (p < end) {
      const c = b[p]
      if (c < 48 || c > 57) break
      v += (c - 48) * scale
      scale /= 10
      p++
    }
  }
  return v
}

// `{"s":` and `,"t":`
const S_KEY = [123, 34, 115, 34, 58]
const T_KEY = [44, 34, 116, 34, 58]

function matchAt (b, p, end, key) {
  if (p + key.length > end) return false
  for (let k = 0; k < key.length; k++) if (b[p + k] !== key[k]) return false
  return true
}

/**
 * One SSE stream. State is kept in plain fields (no per-stream closures beyond the socket
 * listeners) so that 10,000 of them cost a few MB.
 */
class Stream {
  constructor (pool, index) {
    this.pool = pool
    this.index = index
    this.socket = null
    this.evT = 0
    this.rest = null // partial SSE line carried to the next read
    this.rewind() // the parser state (phase, chunked decoder, current event, live)
    // statistics
    this.startedAt = 0
    this.received = 0
    this.maxSeq = 0
    this.dup = 0
    this.ooo = 0
    this.seen = null
    this.controlEvents = 0
    this.lastId = null
  }

  /** Marks seq as seen; returns false when it already was (a duplicate). */
  mark (seq) {
    const byte = seq >> 3
    let s = this.seen
    if (s === null || byte >= s.length) {
      const n = new Uint8Array(Math.max(32, byte + 1, s === null ? 0 : s.length * 2))
      if (s !== null) n.set(s)
      this.seen = s = n
    }
    const bit = 1 << (seq & 7)
    if ((s[byte] & bit) !== 0) return false
    s[byte] |= bit
    return true
  }

  onMessage (seq, t, now) {
    const pool = this.pool
    if (!this.mark(seq)) {
      this.dup++
      return
    }
    this.received++
    if (seq < this.maxSeq) this.ooo++
    else this.maxSeq = seq
    if (pool.recording) {
      pool.hist.record(now - t)
      if (pool.storm !== null && pool.storm.recording) pool.storm.latency.record(now - t)
      pool.count++
      const sec = Math.floor((now - pool.t0) / 1000)
      if (sec >= 0) {
        while (pool.perSecond.length <= sec) pool.perSecond.push(0)
        pool.perSecond[sec]++
      }
      if (now > pool.lastReceive) pool.lastReceive = now
    }
  }

  onData (buf) {
    const now = nowMs()
    if (this.phase === HEAD) {
      this.head = this.head === null ? buf : Buffer.concat([this.head, buf])
      const end = this.head.indexOf(HEAD_END)
      if (end < 0) {
        if (this.head.length > 16384) this.fail('response head too large')
        return
      }
      const headText = this.head.toString('latin1', 0, end)
      const rest = this.head.subarray(end + 4)
      this.head = null
      const status = Number(headText.slice(9, 12))
      if (status !== 200) {
        this.fail(`HTTP ${status}`)
        return
      }
      this.chunked = /\r\ntransfer-encoding:\s*chunked/i.test(headText)
      this.phase = BODY
      this.ttfb = now - this.startedAt
      this.pool.onHead(this)
      if (this.pool.liveOnHead) this.goLive(now)
      if (rest.length > 0) this.body(rest, now)
      return
    }
    if (this.phase === BODY) this.body(buf, now)
  }

  body (b, now) {
    if (!this.chunked) {
      this.sse(b, 0, b.length, now)
      return
    }
    let p = 0
    const n = b.length
    while (p < n) {
      switch (this.cs) {
        case C_SIZE: {
          const c = b[p++]
          const h = hexVal(c)
          if (h >= 0) this.csize = this.csize * 16 + h
          else if (c === NL) this.chunkStart()
          else if (c !== CR) this.cs = C_EXT
          break
        }
        case C_EXT:
          if (b[p++] === NL) this.chunkStart()
          break
        case C_DATA: {
          const take = Math.min(this.crem, n - p)
          this.sse(b, p, p + take, now)
          p += take
          this.crem -= take
          if (this.crem === 0) this.cs = C_CRLF
          break
        }
        case C_CRLF:
          if (b[p++] === NL) this.cs = C_SIZE
          break
        default:
          return
      }
    }
  }

  chunkStart () {
    if (this.csize === 0) {
      this.cs = C_DONE // last chunk: the server ended the stream
      return
    }
    this.crem = this.csize
    this.csize = 0
    this.cs = C_DATA
  }

  /** SSE lines in b[start..end). */
  sse (b, start, end, now) {
    if (this.rest !== null) {
      b = Buffer.concat([this.rest, b.subarray(start, end)])
      start = 0
      end = b.length
      this.rest = null
    }
    let p = start
    while (p < end) {
      let nl = b.indexOf(NL, p)
      if (nl < 0 || nl >= end) {
        // A partial line: keep a copy (the socket may reuse its buffer).
        this.rest = Buffer.from(b.subarray(p, end))
        return
      }
      let le = nl
      if (le > p && b[le - 1] === CR) le--
      if (le === p) {
        // Blank line: dispatch.
        if (this.evSeq >= 0) this.onMessage(this.evSeq, this.evT, now)
        else if (this.evControl) this.controlEvents++
        this.evSeq = -1
        this.evControl = false
      } else {
        const c = b[p]
        if (c === 100 && le - p >= 5 && b[p + 4] === 58) { // data:
          let q = p + 5
          if (q < le && b[q] === 32) q++
          this.data(b, q, le)
        } else if (c === 101 && le - p >= 6 && b[p + 5] === 58) { // event:
          let q = p + 6
          if (q < le && b[q] === 32) q++
          // control events of the gateway: reset, auth-expired
          if (b[q] === 114 || b[q] === 97) this.evControl = true
        }
        else if (c === 105 && le - p >= 3 && b[p + 1] === 100 && b[p + 2] === 58) { // id:
          // The first id (the id-only frame) is written once the stream is subscribed and live.
          if (!this.live) this.goLive(now)
          // The reconnect-storm scenario resumes with Last-Event-ID: the last id seen.
          if (this.pool.trackIds) this.lastId = b.toString('latin1', b[p + 3] === 32 ? p + 4 : p + 3, le)
        }
        // retry: and comments (heartbeats) need nothing.
      }
      p = nl + 1
    }
  }

  goLive (now) {
    this.live = true
    this.tlive = now - this.startedAt
    this.pool.onLive(this)
  }

  /** Back to a fresh connection's parser state, keeping what the stream has seen. */
  rewind () {
    this.phase = CONNECTING
    this.head = null
    this.chunked = false
    this.cs = C_SIZE
    this.csize = 0
    this.crem = 0
    this.rest = null
    this.evSeq = -1
    this.evControl = false
    this.live = false
    this.ttfb = -1
    this.tlive = -1
    this.closedEarly = false
  }

  data (b, p, end) {
    if (matchAt(b, p, end, S_KEY)) {
      let q = p + S_KEY.length
      let s = 0
      let digits = 0
      while (q < end && b[q] >= 48 && b[q] <= 57) {
        s = s * 10 + (b[q] - 48)
        q++
        digits++
      }
      if (digits > 0 && matchAt(b, q, end, T_KEY)) {
        const t = parseNumber(b, q + T_KEY.length, end)
        if (!Number.isNaN(t)) {
          this.evSeq = s
          this.evT = t
          return
        }
      }
    }
    // Fallback: a payload in another shape.
    try {
      const v = JSON.parse(b.toString('utf8', p, end))
      if (v !== null && typeof v === 'object' && typeof v.s === 'number' && typeof v.t === 'number') {
        this.evSeq = v.s
        this.evT = v.t
        return
      }
    } catch {}
    this.evControl = true
  }

  fail (reason) {
    if (this.phase === CLOSED) return
    const wasOpen = this.live
    if (this.phase === BODY && !this.live) this.pool.openCount--
    this.phase = CLOSED
    this.socket?.destroy()
    if (wasOpen) this.closedEarly = true
    this.pool.onFail(this, reason, wasOpen)
  }

  close () {
    if (this.phase === CLOSED) return
    this.phase = CLOSED
    this.socket?.destroy()
  }
}

/**
 * A pool of SSE streams against one or more gateway targets.
 *
 *   const pool = new SsePool({ targets: [{ host, port }], requestFor: (i) => ({ path, headers }) })
 *   await pool.open(indices, { concurrency: 200 })   // bounded-concurrency connect
 *   pool.startRecording(); ... ; pool.report(expected)
 */
export class SsePool {
  constructor ({ targets, requestFor, connectTimeoutMs = 30000, localAddresses = null, liveOnHead = false, trackIds = false }) {
    this.targets = targets
    // nchan writes no id frame when a stream opens: there the response head means live.
    this.liveOnHead = liveOnHead
    this.trackIds = trackIds
    this.storm = null
    this.requestFor = requestFor
    this.connectTimeoutMs = connectTimeoutMs
    this.localAddresses = localAddresses
    this.streams = []
    this.hist = new Histogram()
    this.ttfb = new Histogram() // connect → response head
    this.liveHist = new Histogram() // connect → first id frame (subscribed, live)
    this.recording = false
    this.count = 0
    this.t0 = 0
    this.lastReceive = 0
    this.perSecond = []
    this.failures = {}
    this.dropped = 0 // streams that ended after they had opened
    this.openCount = 0
    this.waiter = null
  }

  onHead (st) {
    this.openCount++
    this.ttfb.record(st.ttfb)
  }

  onLive (st) {
    const storm = this.storm
    if (storm !== null && st.reconnecting === true) {
      st.reconnecting = false
      clearTimeout(st.timer)
      st.timer = undefined
      storm.back++
      storm.inflight--
      storm.lastLiveAt = nowMs()
      storm.toLive.record(storm.lastLiveAt - storm.killedAt)
      this.pumpStorm()
      return
    }
    this.liveHist.record(st.tlive)
    this.settle(st)
  }

  onFail (st, reason, wasOpen) {
    const storm = this.storm
    if (storm !== null && (wasOpen || st.reconnecting === true)) {
      // The instance went away (or a reconnect attempt failed): resume elsewhere.
      if (wasOpen) {
        this.openCount--
        storm.lostStreams++
        if (storm.killedAt === 0) storm.killedAt = nowMs()
      } else {
        storm.inflight--
        storm.retries++
        storm.failures[reason] = (storm.failures[reason] ?? 0) + 1
      }
      if (st.timer !== undefined) clearTimeout(st.timer)
      st.timer = undefined
      st.reconnecting = true
      storm.queue.push(st)
      this.pumpStorm()
      return
    }
    if (wasOpen) {
      this.dropped++
      this.openCount--
      this.failures[`closed: ${reason}`] = (this.failures[`closed: ${reason}`] ?? 0) + 1
      return
    }
    this.failures[reason] = (this.failures[reason] ?? 0) + 1
    this.settle(st)
  }

  settle (st) {
    if (st.timer !== undefined) {
      clearTimeout(st.timer)
      st.timer = undefined
    }
    const w = this.waiter
    if (w !== null) w(st)
  }

  connect (index, again = null) {
    const st = again ?? new Stream(this, index)
    if (again === null) this.streams.push(st)
    else st.rewind()
    const targets = again === null ? this.targets : this.storm.targets
    const target = targets[index % targets.length]
    const { path, headers } = this.requestFor(index)
    let req = `GET ${path} HTTP/1.1\r\nHost: ${target.host}:${target.port}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n`
    for (const [k, v] of Object.entries(headers ?? {})) req += `${k}: ${v}\r\n`
    if (again !== null && st.lastId !== null) req += `Last-Event-ID: ${st.lastId}\r\n`
    req += '\r\n'
    st.startedAt = nowMs()
    st.phase = HEAD
    const opts = { host: target.host, port: target.port }
    if (this.localAddresses !== null) opts.localAddress = this.localAddresses[index % this.localAddresses.length]
    const socket = net.connect(opts)
    st.socket = socket
    // A reconnected stream reuses its Stream: events of the old socket must not reach it.
    socket.on('connect', () => socket.write(req))
    socket.on('data', (b) => { if (st.socket === socket) st.onData(b) })
    socket.on('error', (err) => { if (st.socket === socket) st.fail(err.code ?? err.message) })
    socket.on('close', () => { if (st.socket === socket) st.fail('socket closed') })
    socket.on('end', () => { if (st.socket === socket) st.fail('server ended the stream') })
    st.timer = setTimeout(() => st.fail('connect timeout'), this.connectTimeoutMs)
    return st
  }

  /**
   * Reconnect-storm mode: a live stream whose connection ends reconnects to `targets` with its
   * Last-Event-ID, at most `concurrency` handshakes in flight; a failed attempt queues again.
   */
  armStorm ({ targets, concurrency }) {
    this.storm = { targets, concurrency, queue: [], inflight: 0, back: 0, lostStreams: 0, retries: 0, failures: {}, killedAt: 0, lastLiveAt: 0, toLive: new Histogram(), latency: new Histogram(), recording: false }
  }

  pumpStorm () {
    const s = this.storm
    while (s.inflight < s.concurrency && s.queue.length > 0) {
      const st = s.queue.shift()
      s.inflight++
      this.connect(st.index, st)
    }
  }

  stormStatus () {
    const s = this.storm
    return { lostStreams: s.lostStreams, back: s.back, pending: s.queue.length + s.inflight, retries: s.retries, failures: s.failures, killedAt: s.killedAt, lastLiveAt: s.lastLiveAt }
  }

  /**
   * Opens the streams `indices` with at most `concurrency` handshakes in flight.
   * Resolves with { elapsedMs, opened, failed } once every handshake finished or failed.
   */
  open (indices, { concurrency = 200 } = {}) {
    return new Promise((resolve) => {
      const t0 = nowMs()
      let next = 0
      let inflight = 0
      let opened = 0
      let failed = 0
      const launch = () => {
        while (inflight < concurrency && next < indices.length) {
          inflight++
          this.connect(indices[next++])
        }
      }
      this.waiter = (st) => {
        inflight--
        if (st.live) opened++
        else failed++
        if (opened + failed === indices.length) {
          this.waiter = null
          resolve({ elapsedMs: nowMs() - t0, opened, failed })
          return
        }
        launch()
      }
      if (indices.length === 0) {
        this.waiter = null
        resolve({ elapsedMs: 0, opened: 0, failed: 0 })
        return
      }
      launch()
    })
  }

  startRecording (t0 = nowMs()) {
    this.hist.reset()
    this.count = 0
    this.perSecond = []
    this.t0 = t0
    this.lastReceive = 0
    this.recording = true
    for (const st of this.streams) {
      st.received = 0
      st.maxSeq = 0
      st.dup = 0
      st.ooo = 0
      st.seen = null
    }
  }

  /** Unique messages received so far (cheap progress probe). */
  received () {
    return this.count
  }

  /**
   * Totals for the recording period. `expected(st)` gives how many messages (seq 1..k) the
   * stream should have received; lost = expected - unique received, per stream, summed.
   */
  report (expected) {
    let lost = 0
    let dup = 0
    let ooo = 0
    let received = 0
    let expectedTotal = 0
    let control = 0
    let streamsWithLoss = 0
    let beyond = 0
    for (const st of this.streams) {
      if (st.phase === CONNECTING) continue
      if (!st.live) continue // never went live
      const e = expected(st)
      expectedTotal += e
      received += st.received
      dup += st.dup
      ooo += st.ooo
      control += st.controlEvents
      let have = 0
      if (st.seen !== null) {
        for (let s = 1; s <= e; s++) if ((st.seen[s >> 3] & (1 << (s & 7))) !== 0) have++
      }
      if (st.received > have) beyond += st.received - have
      if (have < e) {
        lost += e - have
        streamsWithLoss++
      }
    }
    return {
      streams: this.openCount,
      dropped: this.dropped,
      received,
      expected: expectedTotal,
      lost,
      duplicated: dup,
      outOfOrder: ooo,
      unexpected: beyond,
      streamsWithLoss,
      controlEvents: control,
      latency: this.hist.toJSON(),
      ttfb: this.ttfb.toJSON(),
      live: this.liveHist.toJSON(),
      perSecond: this.perSecond,
      lastReceive: this.lastReceive,
      failures: this.failures
    }
  }

  closeAll () {
    for (const st of this.streams) st.close()
    this.streams = []
    this.openCount = 0
  }

  /** Forgets closed streams and the connect statistics (for a second connect round). */
  resetConnectStats () {
    this.ttfb.reset()
    this.liveHist.reset()
    this.failures = {}
    this.dropped = 0
  }
}
