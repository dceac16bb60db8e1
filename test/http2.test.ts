import t, { type Test } from 'tap'
import http2, { type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2'
import https from 'node:https'
import { loadConfig } from '../src/config'
import { build, parseFrames, selfSignedCert, sign, publisherToken, waitFor, type Gateway, type SseFrame, type TestCert } from './helper'

// HTTP/2 over TLS (and h2c) on the same routes as HTTP/1.1: the same frames, batching,
// heartbeats, limits, drain and metrics, and flow control counted as a slow consumer.

const userToken = (sub = 'u1'): string => sign({ sub, channels: ['topic:*'] })

/** An SSE stream over an HTTP/2 session, as a browser multiplexes it. */
class H2Stream {
  readonly stream: ClientHttp2Stream
  status = 0
  headers: http2.IncomingHttpHeaders = {}
  chunks: string[] = []
  ended = false
  closed = false

  constructor (session: ClientHttp2Session, path: string, headers: Record<string, string> = {}) {
    this.stream = session.request({ ':path': path, accept: 'text/event-stream', ...headers })
    this.stream.setEncoding('utf8')
    this.stream.on('response', h => { this.headers = h; this.status = Number(h[':status']) })
    this.stream.on('data', (c: string) => this.chunks.push(c))
    this.stream.on('end', () => { this.ended = true })
    this.stream.on('close', () => { this.closed = true })
    this.stream.on('error', () => {})
  }

  text (): string {
    return this.chunks.join('')
  }

  frames (): SseFrame[] {
    return parseFrames(this.text())
  }

  messages (): SseFrame[] {
    return this.frames().filter(f => f.data !== undefined)
  }

  async waitMessages (n: number): Promise<SseFrame[]> {
    await waitFor(() => this.messages().length >= n, 10000, `${n} messages over HTTP/2 (have ${this.messages().length})`)
    return this.messages()
  }
}

async function h2Request (session: ClientHttp2Session, method: string, path: string, headers: Record<string, string>, body?: unknown): Promise<{ status: number, headers: http2.IncomingHttpHeaders, body: any }> {
  return await new Promise((resolve, reject) => {
    const req = session.request({ ':method': method, ':path': path, ...headers, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) })
    let status = 0
    let h: http2.IncomingHttpHeaders = {}
    let text = ''
    req.setEncoding('utf8')
    req.on('response', r => { h = r; status = Number(r[':status']) })
    req.on('data', (c: string) => { text += c })
    req.on('end', () => resolve({ status, headers: h, body: text.startsWith('{') || text.startsWith('[') ? JSON.parse(text) : text }))
    req.on('error', reject)
    req.end(body !== undefined ? JSON.stringify(body) : undefined)
  })
}

function connect (t: Test, gw: Gateway, cert?: TestCert): ClientHttp2Session {
  const session = cert !== undefined
    ? http2.connect(`https://127.0.0.1:${gw.port}`, { ca: cert.cert })
    : http2.connect(`http://127.0.0.1:${gw.port}`)
  session.on('error', () => {})
  t.teardown(() => session.destroy())
  return session
}

async function metricValue (session: ClientHttp2Session, line: RegExp): Promise<number> {
  const text = (await h2Request(session, 'GET', '/metrics', {})).body as string
  const m = line.exec(text)
  return m === null ? 0 : Number(m[1])
}

t.test('HTTPS with a certificate: HTTP/2 by ALPN on every route, same frames, batching, heartbeats, limits, drain, metrics', async t => {
  const cert = selfSignedCert(t)
  const gw = await build(t, { TLS_CERT_FILE: cert.certFile, TLS_KEY_FILE: cert.keyFile, HEARTBEAT_MS: '200', MAX_CONNECTIONS_PER_USER: '2', RETRY_MS: '1000' })
  const session = connect(t, gw, cert)
  await new Promise<void>(resolve => session.once('connect', () => resolve()))
  t.equal((session.socket as import('node:tls').TLSSocket).alpnProtocol, 'h2', 'ALPN chose h2')

  const s = new H2Stream(session, '/events?channel=topic:a', { authorization: `Bearer ${userToken()}` })
  await waitFor(() => s.frames().some(f => f.id !== undefined), 10000, 'the stream head')
  t.equal(s.status, 200)
  t.equal(s.headers['content-type'], 'text/event-stream; charset=utf-8')
  t.equal(s.headers['cache-control'], 'no-cache')
  t.equal(s.headers['x-accel-buffering'], 'no')
  t.notOk('connection' in s.headers, 'no connection-specific header on HTTP/2')
  t.match(s.text(), /^retry: 1000\n\n: connected\n\nid: [0-9a-z]+:0-0,0-0\n\n/, 'retry hint, comment and id-only frame first, as on HTTP/1.1')

  // One publish of three messages over the same session: batched into one write.
  const chunksBefore = s.chunks.length
  const pub = await h2Request(session, 'POST', '/publish', { authorization: `Bearer ${publisherToken()}` },
    [1, 2, 3].map(n => ({ channel: 'topic:a', event: 'tick', data: { n } })))
  t.equal(pub.status, 202)
  t.equal(pub.body.ids.length, 3)
  const msgs = await s.waitMessages(3)
  t.same(msgs.map(m => [m.event, JSON.parse(m.data as string).n]), [['tick', 1], ['tick', 2], ['tick', 3]])
  t.equal(msgs[2].id?.split(':')[1].split(',')[0], pub.body.ids[2], 'the cursor carries the last id of topic:a')
  const batch = s.chunks.slice(chunksBefore).find(c => c.includes('{"n":1}'))
  t.ok(batch?.includes('{"n":3}'), 'the three frames arrived in one DATA chunk (one batch, one write)')

  // Heartbeat comment from the shared timer.
  const before = s.text().length
  await waitFor(() => s.text().slice(before).includes(':\n\n'), 5000, 'a heartbeat over HTTP/2')

  // Limits: the third stream of one user on one session is a 429 with Retry-After.
  const s2 = new H2Stream(session, '/events?channel=topic:b', { authorization: `Bearer ${userToken()}` })
  await waitFor(() => s2.status > 0, 10000, 'second stream head')
  const third = await h2Request(session, 'GET', '/events?channel=topic:c', { authorization: `Bearer ${userToken()}` })
  t.equal(third.status, 429)
  t.equal(third.headers['retry-after'], '1')
  t.equal(third.body.error, 'too_many_connections')

  // HTTP/1.1 is still accepted on the same port (allowHTTP1) and streams as before.
  const h1 = await new Promise<{ version: string, status: number }>((resolve, reject) => {
    https.get(`https://127.0.0.1:${gw.port}/healthz`, { ca: cert.cert }, res => {
      res.resume()
      resolve({ version: res.httpVersion, status: res.statusCode ?? 0 })
    }).on('error', reject)
  })
  t.same(h1, { version: '1.1', status: 200 }, 'an HTTP/1.1 client on the TLS port')

  t.equal(await metricValue(session, /^gateway_connections_active (\S+)$/m), 2, 'both HTTP/2 streams counted')
  t.equal(await metricValue(session, /^gateway_connections_rejected_total\{reason="too_many_connections"\} (\S+)$/m), 1)

  // Drain: each stream gets a retry hint and ends; new streams are refused.
  await gw.app.hub.drain(50)
  await waitFor(() => s.ended && s2.ended, 10000, 'both streams ended by the drain')
  t.match(s.text(), /retry: \d+\n\n$/, 'the last frame is a jittered retry hint')
  t.equal(await metricValue(session, /^gateway_connections_closed_total\{reason="drain"\} (\S+)$/m), 2)
  const refused = await h2Request(session, 'GET', '/events?channel=topic:a', { authorization: `Bearer ${userToken()}` })
  t.equal(refused.status, 503)
})

t.test('an HTTP/1.1 stream on the TLS port keeps the direct socket write', async t => {
  const cert = selfSignedCert(t)
  const gw = await build(t, { TLS_CERT_FILE: cert.certFile, TLS_KEY_FILE: cert.keyFile })
  const session = connect(t, gw, cert)
  const frames = await new Promise<string>((resolve, reject) => {
    const req = https.get(`https://127.0.0.1:${gw.port}/events?channel=topic:a`, { ca: cert.cert, headers: { authorization: `Bearer ${userToken()}` } }, res => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => {
        text += c
        if (text.includes('id: ') && !text.includes('data:')) {
          void h2Request(session, 'POST', '/publish', { authorization: `Bearer ${publisherToken()}` }, { channel: 'topic:a', data: 'over h1' })
        }
        if (text.includes('data: over h1')) { req.destroy(); resolve(`${res.httpVersion} ${res.headers.connection} ${text}`) }
      })
    })
    req.on('error', reject)
  })
  t.match(frames, /^1\.1 keep-alive retry: 3000\n\n: connected\n\nid: .*data: over h1\n/s)
})

t.test('h2c (HTTP2_CLEARTEXT=true): HTTP/2 without TLS for load balancers', async t => {
  const gw = await build(t, { HTTP2_CLEARTEXT: 'true' })
  const session = connect(t, gw)
  const s = new H2Stream(session, '/events?channel=topic:a', { authorization: `Bearer ${userToken()}` })
  await waitFor(() => s.frames().some(f => f.id !== undefined), 10000, 'the h2c stream head')
  const pub = await h2Request(session, 'POST', '/publish', { authorization: `Bearer ${publisherToken()}` }, { channel: 'topic:a', event: 'x', data: { ok: true } })
  t.equal(pub.status, 202)
  const [m] = await s.waitMessages(1)
  t.same([m.event, m.data], ['x', '{"ok":true}'])
})

t.test('a peer that stops reading an HTTP/2 stream is a slow consumer; the other streams go on', async t => {
  const cert = selfSignedCert(t)
  // 64 KiB: about one HTTP/2 flow-control window, so the budget is reached only by bytes the
  // peer did not let us send.
  const gw = await build(t, { TLS_CERT_FILE: cert.certFile, TLS_KEY_FILE: cert.keyFile, MAX_BUFFERED_BYTES: '65536', BATCH_WINDOW_MS: '10' })
  const stalled = connect(t, gw, cert)
  const reading = connect(t, gw, cert)
  const slow = new H2Stream(stalled, '/events?channel=topic:big', { authorization: `Bearer ${userToken('slow')}` })
  const fast = new H2Stream(reading, '/events?channel=topic:big', { authorization: `Bearer ${userToken('fast')}` })
  await waitFor(() => slow.frames().some(f => f.id !== undefined) && fast.frames().some(f => f.id !== undefined), 10000, 'both heads')
  // Stop reading: the client stops granting WINDOW_UPDATEs once its buffers fill.
  slow.stream.pause()
  slow.stream.removeAllListeners('data')

  const data = 'x'.repeat(8000)
  let published = 0
  // Bounded: 64 KiB of window + 64 KiB of budget is ~17 messages; 200 would be 1.6 MB.
  // A paused client stream reports its reset (rstCode) at once, its 'close' only once read.
  const reset = (): boolean => slow.stream.closed || slow.stream.rstCode > 0
  while (!reset() && published < 200) {
    await gw.app.bus.publish([{ channel: 'topic:big', event: 'blob', data, ts: Date.now() }])
    published++
    await waitFor(() => fast.messages().length >= published || reset(), 10000, `message ${published} at the reading stream`)
  }
  await waitFor(reset, 10000, 'the stalled stream to be reset')
  t.ok(published < 200, `the stalled stream was cut after ${published} messages of 8 kB`)
  t.ok(published > 8, 'not before the flow-control window and the budget were used up')
  t.equal(slow.stream.rstCode, http2.constants.NGHTTP2_CANCEL, 'reset with RST_STREAM CANCEL')
  const closedSlow = await metricValue(reading, /^gateway_connections_closed_total\{reason="slow_consumer"\} (\S+)$/m)
  t.equal(closedSlow, 1, 'counted as a slow consumer')

  // The reading stream on its own session keeps going.
  await gw.app.bus.publish([{ channel: 'topic:big', event: 'after', data: 'still here', ts: Date.now() }])
  await waitFor(() => fast.messages().some(m => m.event === 'after'), 10000, 'delivery after the cut')
  t.equal(fast.messages().filter(m => m.event === 'blob').length, published, 'the reader got every message')
  t.equal(fast.closed, false)
})

t.test('TLS configuration errors name the variable', async t => {
  t.throws(() => loadConfig({ TLS_CERT_FILE: '/nonexistent/cert.pem' }), /TLS_KEY_FILE is required with TLS_CERT_FILE/)
  t.throws(() => loadConfig({ TLS_KEY_FILE: '/nonexistent/key.pem' }), /TLS_CERT_FILE is required with TLS_KEY_FILE/)
  t.throws(() => loadConfig({ TLS_CERT_FILE: '/nonexistent/cert.pem', TLS_KEY_FILE: '/nonexistent/key.pem' }), /TLS_CERT_FILE: cannot read \/nonexistent\/cert\.pem \(ENOENT\)/)
  t.throws(() => loadConfig({ HTTP2_CLEARTEXT: 'maybe' }), /HTTP2_CLEARTEXT/)
  const cert = selfSignedCert(t)
  t.throws(() => loadConfig({ TLS_CERT_FILE: cert.certFile, TLS_KEY_FILE: cert.keyFile, HTTP2_CLEARTEXT: 'true' }), /HTTP2_CLEARTEXT is for plain-text listeners/)
})
