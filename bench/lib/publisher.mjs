// The benchmark's publisher: POST /publish over ONE keep-alive connection, one request in
// flight at a time (so the per-channel sequence numbers reach the gateway in order), each
// request carrying every message that became due meanwhile (an array of at most 1,000).
//
// Messages are scheduled at a constant rate with a uniform jitter inside each period (message k
// is due at (k + u)/rate s, u in [0, 1)), so that publishes are not phase-locked to the
// gateway's batch tick. Each payload is {"s": seq on its channel, "t": send time, "p": pad}.

import http from 'node:http'
import net from 'node:net'
import { Histogram, nowMs } from './hist.mjs'

/**
 * What both publishers share: a queue of due messages, one batch in flight (so the order per
 * channel on one connection is the send order), drain and statistics. `send(batch)` starts a
 * batch; the subclass calls `pump()` again once all its answers are in.
 */
class BatchPublisher {
  constructor ({ url, maxPerRequest = 1000 }) {
    const u = new URL(url)
    this.host = u.hostname
    this.port = Number(u.port)
    this.max = maxPerRequest
    this.queue = []
    this.busy = false
    this.requests = 0
    this.accepted = 0
    this.failed = 0
    this.failures = {}
    this.rtt = new Histogram()
    this.idle = null
  }

  enqueue (envelopes) {
    for (const e of envelopes) this.queue.push(e)
    if (!this.busy) this.pump()
  }

  pump () {
    if (this.queue.length === 0) {
      this.busy = false
      if (this.idle !== null) {
        const f = this.idle
        this.idle = null
        f()
      }
      return
    }
    this.busy = true
    const batch = this.queue.length <= this.max ? this.queue : this.queue.slice(0, this.max)
    this.queue = this.queue.length <= this.max ? [] : this.queue.slice(this.max)
    this.send(batch)
  }

  fail (reason, n) {
    this.failed += n
    this.failures[reason] = (this.failures[reason] ?? 0) + n
  }

  /** Resolves when every queued message has been answered. */
  drain () {
    if (!this.busy && this.queue.length === 0) return Promise.resolve()
    return new Promise(resolve => { this.idle = resolve })
  }

  stats () {
    return { requests: this.requests, accepted: this.accepted, failed: this.failed, failures: this.failures, requestLatency: this.rtt.summary() }
  }
}

export class Publisher extends BatchPublisher {
  constructor ({ url, token, maxPerRequest = 1000 }) {
    super({ url, maxPerRequest })
    this.token = token
    this.agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  }

  send (batch) {
    const body = JSON.stringify(batch.length === 1 ? batch[0] : batch)
    const t0 = nowMs()
    const req = http.request({
      host: this.host,
      port: this.port,
      method: 'POST',
      path: '/publish',
      agent: this.agent,
      headers: { authorization: `Bearer ${this.token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }
    }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () => {
        this.rtt.record(nowMs() - t0)
        this.requests++
        if (res.statusCode === 202) this.accepted += batch.length
        else this.fail(`HTTP ${res.statusCode} ${Buffer.concat(chunks).toString().slice(0, 200)}`, batch.length)
        this.pump()
      })
    })
    req.on('error', (err) => {
      this.requests++
      this.fail(err.code ?? err.message, batch.length)
      setTimeout(() => this.pump(), 10)
    })
    req.end(body)
  }

  close () {
    this.agent.destroy()
  }
}

/**
 * Several publishers, each its own connection (and possibly its own gateway instance); an
 * envelope goes to shard(envelope), so one channel always goes through one connection and its
 * order is kept, while different channels are published in parallel.
 */
export class PublisherPool {
  constructor ({ urls, token, shards = 1, shardOf = () => 0, server = 'gateway' }) {
    // Shard k → instance floor(k·K/P): not aligned with how the streams are spread (round-robin),
    // so with several instances about half the messages cross instances through Redis.
    const Kind = server === 'nchan' ? NchanPublisher : Publisher
    this.pubs = Array.from({ length: shards }, (_, k) => new Kind({ url: urls[Math.floor(k * urls.length / shards)], token }))
    this.shardOf = shardOf
  }

  enqueue (envelopes) {
    if (this.pubs.length === 1) {
      this.pubs[0].enqueue(envelopes)
      return
    }
    const parts = this.pubs.map(() => [])
    for (const e of envelopes) parts[this.shardOf(e) % parts.length].push(e)
    parts.forEach((p, k) => { if (p.length > 0) this.pubs[k].enqueue(p) })
  }

  drain () {
    return Promise.all(this.pubs.map(p => p.drain()))
  }

  close () {
    for (const p of this.pubs) p.close()
  }

  stats () {
    const s = this.pubs.map(p => p.stats())
    const rtt = new Histogram()
    for (const p of this.pubs) rtt.merge(p.rtt)
    const failures = {}
    for (const x of s) for (const [k, v] of Object.entries(x.failures)) failures[k] = (failures[k] ?? 0) + v
    return {
      connections: this.pubs.length,
      requests: s.reduce((a, x) => a + x.requests, 0),
      accepted: s.reduce((a, x) => a + x.accepted, 0),
      failed: s.reduce((a, x) => a + x.failed, 0),
      failures,
      requestLatency: rtt.summary()
    }
  }
}

/**
 * Nchan's publisher takes one message per request (POST /pub/<channel>, the data as the body),
 * so this one pipelines: every message that fell due meanwhile goes out as back-to-back
 * requests in ONE socket write, and the next batch waits for all their responses. One
 * connection keeps the order per channel, as the gateway's one-request-in-flight does.
 */
export class NchanPublisher extends BatchPublisher {
  constructor ({ url, maxPerRequest = 1000 }) {
    super({ url, maxPerRequest })
    this.socket = null
    this.buf = null
    this.awaiting = 0
    this.sentAt = 0
  }

  open () {
    const s = net.connect({ host: this.host, port: this.port })
    s.setNoDelay(true)
    s.on('data', (b) => this.onData(b))
    s.on('error', (err) => this.lost(err.code ?? err.message))
    s.on('close', () => this.lost('socket closed'))
    this.socket = s
    this.buf = null
  }

  lost (reason) {
    if (this.socket === null) return
    this.socket = null
    if (this.awaiting > 0) {
      this.fail(reason, this.awaiting)
      this.requests += this.awaiting
      this.awaiting = 0
      setTimeout(() => this.pump(), 10)
    }
  }

  send (batch) {
    if (this.socket === null) this.open()
    let out = ''
    for (const e of batch) {
      const body = JSON.stringify(e.data)
      out += `POST /pub/${encodeURIComponent(e.channel)} HTTP/1.1\r\nHost: ${this.host}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
    }
    this.awaiting = batch.length
    this.sentAt = nowMs()
    this.socket.write(out)
  }

  /** Counts responses: a head, then Content-Length bytes of body, back to back. */
  onData (b) {
    let buf = this.buf === null ? b : Buffer.concat([this.buf, b])
    for (;;) {
      const end = buf.indexOf('\r\n\r\n')
      if (end < 0) break
      const head = buf.toString('latin1', 0, end)
      const m = /\r\ncontent-length:\s*(\d+)/i.exec(head)
      const len = m === null ? 0 : Number(m[1])
      if (buf.length < end + 4 + len) break
      const status = Number(head.slice(9, 12))
      buf = buf.subarray(end + 4 + len)
      this.requests++
      if (status >= 200 && status < 300) this.accepted++
      else this.fail(`HTTP ${status}`, 1)
      if (--this.awaiting === 0) {
        this.rtt.record(nowMs() - this.sentAt)
        this.buf = buf.length > 0 ? Buffer.from(buf) : null
        this.pump()
        return
      }
    }
    this.buf = buf.length > 0 ? Buffer.from(buf) : null
  }

  close () {
    const s = this.socket
    this.socket = null
    s?.destroy()
  }
}

export function padding (bytes) {
  return 'x'.repeat(Math.max(0, bytes))
}

/**
 * Runs a constant-rate schedule for `durationS`: calls make(k, t) for each message as it
 * becomes due (t = nowMs() at creation) and hands the envelopes to the publisher.
 * Resolves with { sent, elapsedMs, firstAt, lastAt }; `stopped()` true ends it early.
 */
export function schedule ({ publisher, rate, durationS, make, tickMs, stopped = () => false }) {
  const period = 1000 / rate
  const tick = tickMs ?? Math.max(1, Math.min(10, period / 4))
  return new Promise((resolve) => {
    const start = nowMs()
    const end = start + durationS * 1000
    let k = 0
    let nextDue = start + Math.random() * period
    let firstAt = 0
    let lastAt = 0
    const step = () => {
      const now = nowMs()
      const stopAt = Math.min(now, end)
      const out = []
      while (nextDue <= stopAt) {
        const t = nowMs()
        out.push(make(k, t))
        if (k === 0) firstAt = t
        lastAt = t
        k++
        nextDue = start + (k + Math.random()) * period
      }
      if (out.length > 0) publisher.enqueue(out)
      if (now >= end || stopped()) {
        resolve({ sent: k, elapsedMs: now - start, firstAt, lastAt })
        return
      }
      setTimeout(step, tick)
    }
    step()
  })
}
