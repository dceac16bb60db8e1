// The stream front door (src/http1/front-door.ts): what it serves off the bare socket must be
// what fastify's route answers for the same request; whatever it does not serve reaches
// node:http intact.
import t from 'tap'
import net from 'node:net'
import { Writable } from 'node:stream'
import pino from 'pino'
import { build, publish, RawStream, sign, waitFor } from './helper'

interface Answer { status: number, headers: Record<string, string>, body: string, closed: boolean, raw: string }

/** Writes `parts` (one write each, a pause between), then reads until `done` or the socket closes. */
async function exchange (port: number, parts: string[], done: (raw: string) => boolean = () => false): Promise<Answer> {
  const socket = net.connect(port, '127.0.0.1')
  let raw = ''
  let closed = false
  socket.on('data', d => { raw += d.toString('latin1') })
  socket.on('close', () => { closed = true })
  socket.on('error', () => {})
  await new Promise(resolve => socket.once('connect', resolve))
  for (const [i, p] of parts.entries()) {
    // A pause between the parts, so that the server reads them apart (a head over two reads);
    // the tests check that node answered (its Date header), so a merged read cannot pass unseen.
    if (i > 0) await new Promise(resolve => setTimeout(resolve, 50))
    socket.write(p)
  }
  await waitFor(() => closed || done(raw), 10_000, 'an answer')
  socket.destroy()
  const end = raw.indexOf('\r\n\r\n')
  const [line, ...hs] = raw.slice(0, end).split('\r\n')
  const headers: Record<string, string> = {}
  for (const h of hs) headers[h.slice(0, h.indexOf(':')).toLowerCase()] = h.slice(h.indexOf(':') + 1).trim()
  return { status: Number(line.split(' ')[1]), headers, body: raw.slice(end + 4), closed, raw }
}

/** Sent in one write: the front door's. Split after the request line: node's (a head over two reads). */
const fast = (port: number, head: string, done?: (raw: string) => boolean): Promise<Answer> => exchange(port, [head], done)
const viaNode = (port: number, head: string, done?: (raw: string) => boolean): Promise<Answer> => {
  const cut = head.indexOf('\r\n') + 2
  return exchange(port, [head.slice(0, cut), head.slice(cut)], done)
}
const wholeBody = (raw: string): boolean => {
  const end = raw.indexOf('\r\n\r\n')
  const m = /content-length: (\d+)/i.exec(raw)
  return end !== -1 && m !== null && raw.length >= end + 4 + Number(m[1])
}
const streamOpen = (raw: string): boolean => raw.includes(': connected')
const NODE_ONLY = new Set(['date', 'connection', 'keep-alive'])
const comparable = (h: Record<string, string>): Record<string, string> => Object.fromEntries(Object.entries(h).filter(([k]) => !NODE_ONLY.has(k)).sort())

t.test('refusals: the same status, headers and body as fastify\'s route, and the socket closes', async t => {
  const gw = await build(t, { REDIS_URL: '', MAX_CONNECTIONS_PER_USER: '1' })
  const holder = new RawStream(gw.port, '/events', { authorization: `Bearer ${sign({ sub: 'full' })}` })
  await holder.waitHead()
  t.teardown(() => holder.close())
  const heads: Record<string, string> = {
    'no token': 'GET /events HTTP/1.1\r\nHost: gw\r\n\r\n',
    'a bad token': 'GET /events HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer nope\r\n\r\n',
    'not a Bearer header': 'GET /events HTTP/1.1\r\nHost: gw\r\nAuthorization: Basic eDp5\r\n\r\n',
    'a channel the token does not grant': `GET /events?channel=secret:1 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${sign({ sub: 'u' })}\r\n\r\n`,
    'a percent-encoded credential name': `GET /events?access%5Ftoken=${sign({ sub: 'u' })} HTTP/1.1\r\nHost: gw\r\n\r\n`,
    'an unknown ticket': 'GET /events?ticket=abc HTTP/1.1\r\nHost: gw\r\n\r\n',
    'the cookie of a revoked-looking token': 'GET /events HTTP/1.1\r\nHost: gw\r\nCookie: sse_token=bad\r\n\r\n',
    'too many streams for the user': `GET /events HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${sign({ sub: 'full' })}\r\n\r\n`
  }
  for (const [what, head] of Object.entries(heads)) {
    const a = await fast(gw.port, head, wholeBody)
    const b = await viaNode(gw.port, head, wholeBody)
    t.ok(a.status >= 400, `${what}: refused (${a.status} ${a.body})`)
    t.ok(b.headers.date !== undefined && a.headers.date === undefined, `${what}: node answered the split head, the front door the whole one`)
    t.equal(a.status, b.status, `${what}: status`)
    t.same(comparable(a.headers), comparable(b.headers), `${what}: headers`)
    t.equal(a.body, b.body, `${what}: body`)
    t.equal(a.headers.connection, 'close', `${what}: the front door closes the connection`)
    await waitFor(() => a.closed, 5000, 'close')
  }
  const rejected = await (await fetch(`${gw.url}/metrics`)).text()
  t.match(rejected, /gateway_connections_rejected_total\{reason="too_many_connections"\} 2/, 'counted like the route counts them')
})

t.test('a stream: the same head as fastify\'s route; CORS headers as @fastify/cors writes them', async t => {
  for (const cors of [undefined, '*', 'https://app.example,https://other.example']) {
    const gw = await build(t, { REDIS_URL: '', ...(cors !== undefined ? { CORS_ORIGINS: cors } : {}) })
    for (const origin of [undefined, 'https://app.example', 'https://evil.example']) {
      const head = `GET /events HTTP/1.1\r\nHost: gw\r\n${origin !== undefined ? `Origin: ${origin}\r\n` : ''}Authorization: Bearer ${sign({ sub: 'u' })}\r\n\r\n`
      const a = await fast(gw.port, head, streamOpen)
      const b = await viaNode(gw.port, head, streamOpen)
      t.equal(a.status, 200)
      t.ok(b.headers.date !== undefined && a.headers.date === undefined, 'node answered the split head, the front door the whole one')
      t.same(comparable(a.headers), comparable(b.headers), `CORS ${cors ?? 'off'}, origin ${origin ?? 'none'}: headers`)
      t.equal(a.headers.connection, 'keep-alive')
      const refusal = `GET /events HTTP/1.1\r\nHost: gw\r\n${origin !== undefined ? `Origin: ${origin}\r\n` : ''}\r\n`
      const ra = await fast(gw.port, refusal, wholeBody)
      const rb = await viaNode(gw.port, refusal, wholeBody)
      t.same(comparable(ra.headers), comparable(rb.headers), `CORS ${cors ?? 'off'}, origin ${origin ?? 'none'}: a refusal's headers`)
    }
  }
})

t.test('what the front door does not serve reaches node:http intact', async t => {
  const gw = await build(t, { REDIS_URL: '' })
  const token = sign({ sub: 'u' })
  // Two requests in one write: node answers both, in order.
  const pipelined = await exchange(gw.port, ['GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\nGET /readyz HTTP/1.1\r\nHost: gw\r\n\r\n'], raw => raw.includes('"ready"'))
  t.match(pipelined.raw, /"status":"ok"[\s\S]*"status":"ready"/)
  // A stream as the second request of a keep-alive socket: fastify's route serves it.
  const second = await exchange(gw.port, ['GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n', `GET /events HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${token}\r\n\r\n`], streamOpen)
  t.match(second.raw, /"status":"ok"[\s\S]*HTTP\/1\.1 200 OK[\s\S]*text\/event-stream[\s\S]*: connected/)
  // Malformed requests get node's (and the gateway's clientError) answers.
  const bad = await exchange(gw.port, ['GET /events HTTP/1.1\r\nHost: gw\r\nX: a\x01b\r\n\r\n'], wholeBody)
  t.equal(bad.status, 400)
  t.match(bad.body, /not valid HTTP/)
  const post = await exchange(gw.port, ['POST /events HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n'], wholeBody)
  t.equal(post.status, 404)
})

t.test('a stream served by the front door delivers, resumes and ends like any other', async t => {
  const gw = await build(t, { REDIS_URL: '', BATCH_WINDOW_MS: '0' })
  const token = sign({ sub: 'u', channels: ['topic:*'] })
  const s = new RawStream(gw.port, '/events?channel=topic:a&events=tick', { authorization: `Bearer ${token}`, 'x-request-id': 'abc' })
  await s.waitHead()
  t.equal(s.status, 200)
  t.equal(s.headers['transfer-encoding'], 'chunked')
  // Bytes after the head are read and dropped: they are not a request.
  s.socket.write('GET /healthz HTTP/1.1\r\n\r\n')
  t.equal((await publish(gw.url, { channel: 'topic:a', event: 'other', data: 'skip' })).status, 202)
  t.equal((await publish(gw.url, { channel: 'topic:a', event: 'tick', data: 'one' })).status, 202)
  const [m] = await s.waitMessages(1)
  t.equal(m.data, 'one', 'the events filter applied')
  t.notMatch(s.text(), /status/, 'the extra bytes were not answered')
  const resumed = new RawStream(gw.port, `/events?channel=topic:a&lastEventId=${encodeURIComponent(m.id as string)}`, { authorization: `Bearer ${token}` })
  t.equal((await publish(gw.url, { channel: 'topic:a', event: 'tick', data: 'two' })).status, 202)
  await resumed.waitMessages(1)
  t.equal(resumed.messages()[0].data, 'two', 'resumed after its cursor')
  // A client that half-closes gets its stream ended.
  s.socket.end()
  await s.waitClosed()
  resumed.close()
  await waitFor(() => gw.app.hub.connections.size === 0, 5000, 'both streams gone')
})

t.test('a socket that never sends a head is closed after headersTimeout; a closing app refuses', async t => {
  const gw = await build(t, { REDIS_URL: '' })
  gw.app.server.headersTimeout = 200
  const idle = await exchange(gw.port, [''])
  t.ok(idle.closed, 'closed with nothing sent')
  gw.app.hub.draining = true
  const a = await fast(gw.port, `GET /events HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${sign({ sub: 'u' })}\r\n\r\n`, wholeBody)
  t.equal(a.status, 503)
  t.equal(JSON.parse(a.body).error, 'draining')
  t.ok(Number(a.headers['retry-after']) >= 1)
})

t.test('an unexpected failure is a 500 in the gateway\'s shape, logged with the request id', async t => {
  const lines: string[] = []
  const sink = new Writable({ write (chunk, _enc, cb) { lines.push(chunk.toString()); cb() } })
  const gw = await build(t, { REDIS_URL: '' }, { logger: pino({ level: 'warn' }, sink) as any })
  gw.app.auth.claims = async () => { throw new Error('boom') }
  const a = await fast(gw.port, 'GET /events HTTP/1.1\r\nHost: gw\r\nX-Request-Id: r-42\r\n\r\n', wholeBody)
  t.equal(a.status, 500)
  t.equal(JSON.parse(a.body).error, 'internal_error')
  await waitFor(() => lines.length > 0, 5000, 'the error line')
  const line = JSON.parse(lines[0])
  t.equal(line.msg, 'request failed')
  t.equal(line.reqId, 'r-42')
  t.equal(line.err.message, 'boom')
  t.notOk(lines.some(l => l.includes('incoming request')), 'info lines stay off at warn')
})

t.test('with a logger that writes the request as given (no redaction), no credential header reaches a line', async t => {
  const lines: string[] = []
  const sink = new Writable({ write (chunk, _enc, cb) { lines.push(chunk.toString()); cb() } })
  const asGiven = (r: unknown): unknown => r
  const gw = await build(t, { REDIS_URL: '' }, { logger: pino({ level: 'info', serializers: { req: asGiven } }, sink) as any })
  const token = sign({ sub: 'secretive' })
  const s = new RawStream(gw.port, '/events', { authorization: `Bearer ${token}`, cookie: `sse_token=${token}`, 'user-agent': 'probe/1' })
  await s.waitHead()
  t.equal(s.status, 200)
  s.close()
  await waitFor(() => lines.some(l => l.includes('stream closed')), 5000, 'the close line')
  const all = lines.join('')
  t.notOk(all.includes(token), 'the token is in no line')
  t.match(all, /incoming request/)
  t.notMatch(all, /authorization|sse_token/i, 'nor the header names')
})
