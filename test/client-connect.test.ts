import t, { type Test } from 'tap'
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { connect, type ConnectionStatus, type ConnectOptions, type GatewayClientError, type GatewayEvent, type StatusInfo } from '../client/index'
import { waitFor } from './wait'

// A real loopback HTTP server stands in for the gateway: it speaks the wire contract (retry
// frame, cursors, Last-Event-ID replay, JSON errors) and nothing else.

interface Seen { url: URL, headers: IncomingHttpHeaders, at: number }
type Handler = (req: IncomingMessage, res: ServerResponse, n: number) => void

async function startServer (t: Test, handler: Handler): Promise<{ url: string, requests: Seen[] }> {
  const requests: Seen[] = []
  const server = createServer((req, res) => {
    requests.push({ url: new URL(req.url ?? '/', 'http://x'), headers: req.headers, at: Date.now() })
    handler(req, res, requests.length)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  }))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/events`, requests }
}

/** A channel history: replays after Last-Event-ID, then streams live. */
class Feed {
  events: Array<{ id: string, event?: string, data: string }> = []
  streams = new Set<ServerResponse>()
  constructor (public retryMs = 10) {}

  attach (req: IncomingMessage, res: ServerResponse): void {
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' })
    res.write(`retry: ${this.retryMs}\n: hello\n\n`)
    const last = req.headers['last-event-id']
    const from = typeof last === 'string' ? this.events.findIndex((e) => e.id === last) + 1 : 0
    for (const e of this.events.slice(from)) res.write(Feed.frame(e))
    this.streams.add(res)
    res.on('close', () => this.streams.delete(res))
  }

  publish (data: unknown, event?: string): void {
    const e = { id: `c:${this.events.length + 1}`, event, data: typeof data === 'string' ? data : JSON.stringify(data) }
    this.events.push(e)
    for (const s of this.streams) s.write(Feed.frame(e))
  }

  drop (): void {
    for (const s of this.streams) s.destroy()
  }

  static frame (e: { id: string, event?: string, data: string }): string {
    return `id: ${e.id}\n${e.event !== undefined ? `event: ${e.event}\n` : ''}${e.data.split('\n').map((l) => `data: ${l}\n`).join('')}\n`
  }
}

function json (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers })
  res.end(JSON.stringify(body))
}

/** connect() with everything it reports recorded. */
function record (t: Test, options: Omit<ConnectOptions, 'onEvent'>) {
  const events: GatewayEvent[] = []
  const statuses: Array<{ status: ConnectionStatus, info: StatusInfo }> = []
  const errors: GatewayClientError[] = []
  const conn = connect({
    retryDelay: () => 5,
    ...options,
    onEvent: (e) => events.push(e),
    onStatus: (status, info) => statuses.push({ status, info }),
    onError: (e) => errors.push(e)
  })
  t.teardown(() => conn.close())
  const names = (): ConnectionStatus[] => statuses.map((s) => s.status)
  return { conn, events, statuses, errors, names, datas: () => events.map((e) => e.data) }
}

t.test('receives events with the token in the Authorization header, channels and events in the query', async (t) => {
  const feed = new Feed()
  const srv = await startServer(t, (req, res) => feed.attach(req, res))
  const c = record(t, { url: srv.url, token: 'tok', channels: ['topic:a', 'team:42'], events: ['x', 'y'] })
  await waitFor(() => c.conn.status === 'open', 10_000, 'open')
  feed.publish({ n: 1 }, 'x')
  feed.publish('a plain string')
  feed.publish({ multi: 'line\nvalue' }, 'y')
  feed.publish('two\nlines')
  await waitFor(() => c.events.length === 4, 10_000, '4 events')
  t.same(c.events.map((e) => e.type), ['x', 'message', 'y', 'message'])
  t.same(c.datas(), [{ n: 1 }, 'a plain string', { multi: 'line\nvalue' }, 'two\nlines'])
  t.same(c.events.map((e) => e.id), ['c:1', 'c:2', 'c:3', 'c:4'])
  t.equal(c.conn.lastEventId, 'c:4')
  const r = srv.requests[0]
  t.equal(r.headers.authorization, 'Bearer tok')
  t.equal(r.headers.accept, 'text/event-stream')
  t.equal(r.headers['last-event-id'], undefined, 'no cursor on a fresh start')
  t.same(r.url.searchParams.getAll('channel'), ['topic:a', 'team:42'])
  t.equal(r.url.searchParams.get('events'), 'x,y')
  t.equal(r.url.searchParams.get('access_token'), null, 'the token never goes into the URL')
  t.same(c.errors, [])
})

t.test('resumes with Last-Event-ID after the server drops the stream: no loss, no duplicate; status connecting→open→retrying→open→closed', async (t) => {
  const feed = new Feed()
  const srv = await startServer(t, (req, res) => feed.attach(req, res))
  const c = record(t, { url: srv.url, token: 'tok' })
  await waitFor(() => c.conn.status === 'open', 10_000, 'open')
  for (let i = 1; i <= 3; i++) feed.publish({ i })
  await waitFor(() => c.events.length === 3, 10_000, '3 events')
  feed.drop()
  // Published while the client is away: only the history can deliver these.
  for (let i = 4; i <= 6; i++) feed.publish({ i })
  await waitFor(() => c.events.length === 6, 10_000, '6 events')
  for (let i = 7; i <= 8; i++) feed.publish({ i })
  await waitFor(() => c.events.length === 8, 10_000, '8 events')
  t.same(c.datas(), [1, 2, 3, 4, 5, 6, 7, 8].map((i) => ({ i })), 'every event once, in order')
  t.equal(srv.requests.length, 2)
  t.equal(srv.requests[1].headers['last-event-id'], 'c:3', 'resumed from the last id seen')
  c.conn.close()
  t.same(c.names(), ['connecting', 'open', 'retrying', 'open', 'closed'])
  t.equal(c.statuses[2].info.attempt, 1)
  t.equal(c.statuses[2].info.error?.code, 'network')
  t.same(c.statuses[4].info, { reason: 'client' })
  t.equal(c.conn.status, 'closed')
  await waitFor(() => feed.streams.size === 0, 10_000, 'the server to see the close')
})

t.test('a clean end of stream is resumed too, and an id-only frame moves the cursor', async (t) => {
  const srv = await startServer(t, (req, res, n) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    if (n === 1) res.end('id: 1\ndata: first\n\nid: 7\n\n')
    else res.write('data: second\n\n')
  })
  const ids: string[] = []
  const c = record(t, { url: srv.url, onLastEventId: (id) => ids.push(id) })
  await waitFor(() => c.events.length === 2, 10_000, '2 events')
  t.equal(srv.requests[1].headers['last-event-id'], '7')
  t.same(ids, ['1', '7'])
  t.equal(c.events[1].id, '7', 'the cursor carries over to frames without id')
  t.equal(c.statuses[2].info.error?.code, 'stream_ended')
})

t.test('honours the server retry: as the base of the backoff', async (t) => {
  const feed = new Feed(120)
  const srv = await startServer(t, (req, res) => feed.attach(req, res))
  const c = record(t, { url: srv.url, retryDelay: undefined, backoff: { baseMs: 60_000, jitter: 'full' } })
  await waitFor(() => c.conn.status === 'open', 10_000, 'open')
  feed.drop()
  await waitFor(() => srv.requests.length === 2 && c.conn.status === 'open', 10_000, 'reopen')
  const retrying = c.statuses.find((s) => s.status === 'retrying')
  t.equal(retrying?.info.delayMs, 120, 'retry: 120 replaced the 60 s base and is the floor')
  const waited = srv.requests[1].at - srv.requests[0].at
  t.ok(waited >= 100, `waited ${waited} ms, not less than retry:`)
})

t.test('stops after maxRetries with a final closed status', async (t) => {
  const srv = await startServer(t, (_req, res) => json(res, 500, { error: 'boom', message: 'it broke' }))
  const delays: number[] = []
  const c = record(t, { url: srv.url, maxRetries: 3, retryDelay: (attempt) => { delays.push(attempt); return 5 } })
  await waitFor(() => c.conn.status === 'closed', 10_000, 'closed')
  t.equal(srv.requests.length, 4, 'the first attempt and 3 retries')
  t.same(delays, [0, 1, 2], 'attempts are counted from 0 for the delay')
  t.same(c.names(), ['connecting', 'retrying', 'retrying', 'retrying', 'closed'])
  t.same(c.statuses.slice(1, 4).map((s) => s.info.attempt), [1, 2, 3])
  const last = c.statuses[4].info
  t.equal(last.reason, 'max-retries')
  t.equal(last.error?.code, 'boom')
  t.equal(last.error?.status, 500)
  t.equal(last.error?.message, 'it broke')
  t.same(c.errors.map((e) => e.code), ['boom'], 'onError hears the error that ended the stream')
})

t.test('maxRetries counts consecutive failures: a successful open resets it', async (t) => {
  const feed = new Feed()
  const srv = await startServer(t, (req, res, n) => {
    if (n % 2 === 1) json(res, 503, { error: 'draining', message: 'bye' })
    else feed.attach(req, res)
  })
  // Each round: the drop (1) and a 503 (2) before the next open; 3 rounds stay within 2.
  const c = record(t, { url: srv.url, maxRetries: 2 })
  for (let round = 1; round <= 3; round++) {
    await waitFor(() => srv.requests.length === 2 * round && c.conn.status === 'open', 10_000, `open #${round}`)
    feed.publish({ round })
    await waitFor(() => c.events.length === round, 10_000, `event #${round}`)
    feed.drop()
  }
  await waitFor(() => srv.requests.length === 8 && c.conn.status === 'open', 10_000, 'final 503 and open')
  t.notOk(c.names().includes('closed'))
  t.same(c.statuses.filter((s) => s.status === 'retrying').map((s) => s.info.attempt), [1, 1, 2, 1, 2, 1, 2])
})

t.test('a connection that opens and hangs up at once counts as a failure', async (t) => {
  const srv = await startServer(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.end('retry: 5\n\n')
  })
  const c = record(t, { url: srv.url, maxRetries: 3 })
  await waitFor(() => c.conn.status === 'closed', 10_000, 'closed')
  t.equal(srv.requests.length, 4)
  t.equal(c.statuses.at(-1)?.info.reason, 'max-retries')
  t.equal(c.statuses.at(-1)?.info.error?.code, 'stream_ended')
})

t.test('401 and 403 are reported and not retried', async (t) => {
  for (const [status, code, reason] of [[401, 'unauthorized', 'unauthorized'], [403, 'forbidden_channel', 'forbidden']] as const) {
    const srv = await startServer(t, (_req, res) => json(res, status, { error: code, message: 'no' }))
    const c = record(t, { url: srv.url, token: 'bad' })
    await waitFor(() => c.conn.status === 'closed', 10_000, 'closed')
    t.equal(srv.requests.length, 1, `${status}: one request only`)
    t.same(c.names(), ['connecting', 'closed'])
    t.equal(c.statuses[1].info.reason, reason)
    t.equal(c.statuses[1].info.error?.code, code)
    t.equal(c.statuses[1].info.error?.status, status)
    t.same(c.errors.map((e) => e.code), [code])
  }
})

t.test('other answers: 404 and a non-SSE 200 are final, 502 is retried', async (t) => {
  const a = await startServer(t, (_req, res) => { res.writeHead(404); res.end('nope') })
  const c404 = record(t, { url: a.url })
  await waitFor(() => c404.conn.status === 'closed', 10_000, 'closed')
  t.equal(c404.statuses.at(-1)?.info.reason, 'http-error')
  t.equal(c404.statuses.at(-1)?.info.error?.code, 'http_404', 'a body that is not the gateway JSON')
  const b = await startServer(t, (_req, res) => { res.writeHead(200, { 'content-type': 'text/html' }); res.end('<html>login</html>') })
  const cHtml = record(t, { url: b.url })
  await waitFor(() => cHtml.conn.status === 'closed', 10_000, 'closed')
  t.equal(cHtml.statuses.at(-1)?.info.error?.code, 'bad_content_type')
  const feed = new Feed()
  const d = await startServer(t, (req, res, n) => { if (n === 1) { res.writeHead(502); res.end() } else feed.attach(req, res) })
  const c502 = record(t, { url: d.url })
  await waitFor(() => c502.conn.status === 'open', 10_000, 'open')
  t.same(c502.names(), ['connecting', 'retrying', 'open'])
})

t.test('429 and 503 wait for Retry-After', async (t) => {
  for (const status of [429, 503]) {
    const feed = new Feed()
    const srv = await startServer(t, (req, res, n) => {
      if (n === 1) json(res, status, { error: 'too_many_connections', message: 'later' }, { 'retry-after': '1' })
      else feed.attach(req, res)
    })
    const c = record(t, { url: srv.url })
    await waitFor(() => c.conn.status === 'open', 10_000, 'open')
    t.equal(c.statuses[1].info.delayMs, 1000, `${status}: Retry-After wins over the 5 ms backoff`)
    t.equal(c.statuses[1].info.error?.retryAfterMs, 1000)
    const waited = srv.requests[1].at - srv.requests[0].at
    t.ok(waited >= 950, `${status}: waited ${waited} ms`)
  }
})

t.test('a malformed JSON payload is reported and the stream carries on', async (t) => {
  const feed = new Feed()
  const srv = await startServer(t, (req, res) => feed.attach(req, res))
  const c = record(t, { url: srv.url })
  await waitFor(() => c.conn.status === 'open', 10_000, 'open')
  feed.publish('{"a":1}')
  feed.publish('{"broken": ')
  feed.publish('["also broken"')
  feed.publish('{"b":2}')
  feed.publish('2024-01-01 is not JSON, but it is not pretending to be')
  await waitFor(() => c.events.length === 5, 10_000, '5 events')
  t.same(c.errors.map((e) => e.code), ['malformed_json', 'malformed_json'])
  t.equal(c.errors[0].raw, '{"broken": ')
  t.equal(c.events[1].error?.code, 'malformed_json', 'the event carries the error')
  t.equal(c.events[1].data, '{"broken": ', 'and its raw text')
  t.same(c.events[3].data, { b: 2 })
  t.notOk(c.events[4].error)
  t.same(c.names(), ['connecting', 'open'], 'never dropped the stream')
  t.equal(srv.requests.length, 1)
})

t.test('json: false delivers text', async (t) => {
  const feed = new Feed()
  const srv = await startServer(t, (req, res) => feed.attach(req, res))
  const c = record(t, { url: srv.url, json: false })
  await waitFor(() => c.conn.status === 'open', 10_000, 'open')
  feed.publish({ a: 1 })
  await waitFor(() => c.events.length === 1, 10_000, 'event')
  t.equal(c.events[0].data, '{"a":1}')
})

t.test('a throwing onEvent is reported, and neither the parser nor the stream breaks', async (t) => {
  const feed = new Feed()
  const srv = await startServer(t, (req, res) => feed.attach(req, res))
  const seen: unknown[] = []
  const errors: GatewayClientError[] = []
  const conn = connect({
    url: srv.url,
    onEvent: (e) => { seen.push(e.data); if (e.data === 2) throw new Error('app bug') },
    onError: (e) => errors.push(e)
  })
  t.teardown(() => conn.close())
  await waitFor(() => conn.status === 'open', 10_000, 'open')
  // In one write, so the throw happens mid-chunk.
  feed.publish(1); feed.publish(2); feed.publish(3)
  await waitFor(() => seen.length === 3, 10_000, '3 events')
  t.same(seen, [1, 2, 3])
  t.same(errors.map((e) => [e.code, e.message]), [['callback', 'app bug']])
  t.equal(conn.status, 'open')
})

t.test('auth-expired: getToken() is called again and the stream resumes with the new token', async (t) => {
  const feed = new Feed()
  const srv = await startServer(t, (req, res, n) => {
    feed.attach(req, res)
    if (n === 1) {
      feed.publish({ i: 1 })
      res.end('event: auth-expired\ndata: {"message":"token expired"}\n\n')
    }
  })
  let calls = 0
  const c = record(t, { url: srv.url, getToken: async () => `tok-${++calls}`, retryDelay: () => 60_000 })
  await waitFor(() => srv.requests.length === 2 && c.conn.status === 'open', 10_000, 'reopen')
  feed.publish({ i: 2 })
  await waitFor(() => c.events.length === 3, 10_000, '3 events')
  t.same(c.events.map((e) => e.type), ['message', 'auth-expired', 'message'])
  t.equal(calls, 2)
  t.equal(srv.requests[0].headers.authorization, 'Bearer tok-1')
  t.equal(srv.requests[1].headers.authorization, 'Bearer tok-2')
  t.equal(srv.requests[1].headers['last-event-id'], 'c:1')
  t.same(c.names(), ['connecting', 'open', 'retrying', 'open'])
  const { attempt, delayMs, error } = c.statuses[2].info
  t.same({ attempt, delayMs, code: error?.code }, { attempt: 0, delayMs: 0, code: 'auth_expired' }, 'at once, not after the 60 s backoff, and not counted as a failure')
  t.same(c.errors, [], 'an expiry is not an error')
})

t.test('auth-expired without getToken closes the stream', async (t) => {
  const srv = await startServer(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.end('event: auth-expired\ndata: {}\n\n')
  })
  const c = record(t, { url: srv.url, token: 'static' })
  await waitFor(() => c.conn.status === 'closed', 10_000, 'closed')
  t.equal(c.statuses.at(-1)?.info.reason, 'auth-expired')
  t.equal(srv.requests.length, 1)
  t.equal(c.events[0].type, 'auth-expired', 'the app sees the event too')
})

t.test('a stream that expires at once goes through the backoff instead of looping', async (t) => {
  const srv = await startServer(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.end('event: auth-expired\ndata: {}\n\n')
  })
  const c = record(t, { url: srv.url, getToken: () => 'tok', maxRetries: 2 })
  await waitFor(() => c.conn.status === 'closed', 10_000, 'closed')
  t.equal(srv.requests.length, 3)
  t.equal(c.statuses.at(-1)?.info.reason, 'max-retries')
})

t.test('getToken failing is retried with backoff', async (t) => {
  const feed = new Feed()
  const srv = await startServer(t, (req, res) => feed.attach(req, res))
  let calls = 0
  const c = record(t, { url: srv.url, getToken: () => { if (++calls === 1) throw new Error('auth server down'); return 'tok' } })
  await waitFor(() => c.conn.status === 'open', 10_000, 'open')
  t.equal(c.statuses[1].info.error?.code, 'token')
  t.equal(srv.requests.length, 1)
})

t.test('an idle stream (no heartbeat) is reconnected', async (t) => {
  const srv = await startServer(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.write(': hi\n\n')
  })
  const c = record(t, { url: srv.url, idleTimeoutMs: 100 })
  await waitFor(() => srv.requests.length >= 2, 10_000, 'second request')
  t.equal(c.statuses.find((s) => s.status === 'retrying')?.info.error?.code, 'idle_timeout')
})

t.test('close() during the backoff wait stops for good', async (t) => {
  const srv = await startServer(t, (_req, res) => { res.writeHead(500); res.end() })
  const c = record(t, { url: srv.url, retryDelay: () => 60_000 })
  await waitFor(() => c.conn.status === 'retrying', 10_000, 'retrying')
  const started = Date.now()
  c.conn.close()
  t.equal(c.conn.status, 'closed')
  t.same(c.names(), ['connecting', 'retrying', 'closed'])
  t.ok(Date.now() - started < 1000)
  c.conn.close()
  t.equal(c.statuses.length, 3, 'a second close() is a no-op')
})

t.test('lastEventId option resumes a stream saved earlier', async (t) => {
  const feed = new Feed()
  feed.publish('old'); feed.publish('new')
  const srv = await startServer(t, (req, res) => feed.attach(req, res))
  const c = record(t, { url: srv.url, lastEventId: 'c:1' })
  await waitFor(() => c.events.length === 1, 10_000, 'event')
  t.equal(srv.requests[0].headers['last-event-id'], 'c:1')
  t.same(c.datas(), ['new'])
})

t.test('connect() needs a fetch', async (t) => {
  t.throws(() => connect({ url: 'http://127.0.0.1:1/events', onEvent: () => {}, fetch: 42 as unknown as typeof fetch }), TypeError)
  t.throws(() => connect({ url: 'http://127.0.0.1:1/events', onEvent: () => {}, mode: 'eventsource' }), TypeError)
})
