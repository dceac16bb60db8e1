import t, { type Test } from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { build, freePort, publish, RawStream, sign, waitFor, type Gateway } from './helper'

interface Call { body: any, headers: http.IncomingHttpHeaders, raw: string }
type Answer = (call: Call, res: http.ServerResponse) => void

/** A real backend on loopback: records every call, answers as the test says. */
async function backend (t: Test): Promise<{ url: string, calls: Call[], answer: (a: Answer) => void }> {
  const calls: Call[] = []
  let answer: Answer = (_c, res) => json(res, 200, { allow: true })
  const srv = http.createServer((req, res) => {
    let raw = ''
    req.on('data', (c: Buffer) => { raw += c.toString('utf8') })
    req.on('end', () => {
      const call = { body: JSON.parse(raw), headers: req.headers, raw }
      calls.push(call)
      answer(call, res)
    })
  })
  await new Promise<void>(resolve => srv.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { srv.closeAllConnections(); srv.close() })
  return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}/hook`, calls, answer: (a) => { answer = a } }
}

function json (res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(typeof body === 'string' ? body : JSON.stringify(body))
}

async function connect (gw: Gateway, token: string, query = ''): Promise<{ status: number, headers: Headers, body: any }> {
  const ac = new AbortController()
  const res = await fetch(`${gw.url}/events${query}`, { headers: { authorization: `Bearer ${token}` }, signal: ac.signal })
  const out = { status: res.status, headers: res.headers, body: res.headers.get('content-type')?.startsWith('application/json') === true ? await res.json() : null }
  ac.abort()
  return out
}

const token = sign({ sub: 'h1', channels: ['room:*'], jti: 'tok-1' })

t.test('the backend is asked before the stream opens, with claims, channels and request id, never the token', async t => {
  const be = await backend(t)
  const gw = await build(t, { AUTH_HOOK_URL: be.url, AUTH_HOOK_CACHE_S: '0' })
  const s = new RawStream(gw.port, '/events?channel=room:1', { authorization: `Bearer ${token}`, 'x-request-id': 'req-77' })
  t.teardown(() => s.close())
  await s.waitHead()
  t.equal(s.status, 200, 'allowed')
  t.equal(be.calls.length, 1)
  const [call] = be.calls
  t.match(call.body, { claims: { sub: 'h1', channels: ['room:*'], jti: 'tok-1' }, channels: ['room:1', 'user:h1'], request_id: 'req-77' })
  t.equal(call.headers['content-type'], 'application/json')
  t.notOk(call.raw.includes(token) || JSON.stringify(call.headers).includes(token), 'the raw token is not sent')
  t.notOk(call.raw.includes(token.split('.')[2]), 'nor its signature')
})

t.test('a denying hook gets a 403 before any stream opens', async t => {
  const be = await backend(t)
  const gw = await build(t, { AUTH_HOOK_URL: be.url })
  be.answer((_c, res) => json(res, 200, { allow: false, reason: 'not today' }))
  const r = await connect(gw, token, '?channel=room:1')
  t.equal(r.status, 403)
  t.same(r.body, { error: 'forbidden', message: 'the auth hook denied the stream: not today' })
  be.answer((_c, res) => json(res, 403, { whatever: true }))
  const r2 = await connect(gw, sign({ sub: 'h2' }))
  t.equal(r2.status, 403, 'a 403 from the backend is a deny too')
  t.same(r2.body, { error: 'forbidden', message: 'the auth hook denied the stream' })
  const metrics = await (await fetch(`${gw.url}/metrics`)).text()
  t.match(metrics, /^gateway_connections_opened_total 0$/m, 'no stream was ever opened')
})

t.test('the hook can narrow the channels, never widen them', async t => {
  const be = await backend(t)
  const gw = await build(t, { AUTH_HOOK_URL: be.url })
  be.answer((_c, res) => json(res, 200, { allow: true, channels: ['room:1', 'room:9', 'team:secret'] }))
  const s = new RawStream(gw.port, '/events?channel=room:1&channel=room:2', { authorization: `Bearer ${token}` })
  t.teardown(() => s.close())
  await waitFor(() => s.frames().some(f => f.id !== undefined), 10000, 'stream live')
  t.same([...gw.app.hub.connections].map(c => c.channels), [['room:1', 'user:h1']], 'room:2 dropped, nothing added, the own channel kept')
  await publish(gw.url, [{ channel: 'room:2', event: 'x', data: 2 }, { channel: 'room:1', event: 'x', data: 1 }])
  const [m] = await s.waitMessages(1)
  t.equal(m.data, '1')
})

t.test('timeout, 5xx, garbage or an unreachable hook fail closed with 503 and Retry-After', async t => {
  const be = await backend(t)
  const gw = await build(t, { AUTH_HOOK_URL: be.url, AUTH_HOOK_CACHE_S: '0' })
  const cases: Array<[string, Answer, RegExp]> = [
    ['5xx', (_c, res) => json(res, 502, 'bad gateway'), /status 502/],
    ['a redirect', (_c, res) => { res.writeHead(302, { location: 'http://127.0.0.1:1/' }).end() }, /unreachable|status 302/],
    ['not JSON', (_c, res) => json(res, 200, 'allow'), /not JSON/],
    ['no boolean allow', (_c, res) => json(res, 200, { allow: 'yes' }), /no boolean "allow"/],
    ['bad channels', (_c, res) => json(res, 200, { allow: true, channels: 'room:1' }), /"channels" is not a list/],
    ['a huge answer', (_c, res) => json(res, 200, { allow: true, pad: 'x'.repeat(100_000) }), /larger than 65536 bytes/],
    ['a hang', () => { /* never answers */ }, /timeout/]
  ]
  for (const [what, answer, message] of cases) {
    be.answer(answer)
    const started = Date.now()
    const r = await connect(gw, token)
    t.equal(r.status, 503, what)
    t.equal(r.headers.get('retry-after'), '2', `${what}: Retry-After`)
    t.equal(r.body.error, 'auth_hook_unavailable', what)
    t.match(r.body.message, message, what)
    if (what === 'a hang') t.ok(Date.now() - started >= 1900, 'waited for the 2 s timeout')
  }
  t.equal(gw.app.hub.connections.size, 0)

  const down = await build(t, { AUTH_HOOK_URL: `http://127.0.0.1:${await freePort()}/hook` })
  const r = await connect(down, token)
  t.equal(r.status, 503)
  t.match(r.body.message, /unreachable/)
})

t.test('answers are cached for AUTH_HOOK_CACHE_S per claims and channels', async t => {
  const be = await backend(t)
  const gw = await build(t, { AUTH_HOOK_URL: be.url, AUTH_HOOK_CACHE_S: '60' })
  be.answer((c, res) => json(res, 200, { allow: c.body.claims.sub !== 'banned' }))
  t.equal((await connect(gw, token, '?channel=room:1')).status, 200)
  t.equal((await connect(gw, token, '?channel=room:1')).status, 200)
  t.equal(be.calls.length, 1, 'the second connect used the cached allow')
  t.equal((await connect(gw, token, '?channel=room:2')).status, 200)
  t.equal(be.calls.length, 2, 'other channels: asked again')
  const banned = sign({ sub: 'banned' })
  t.equal((await connect(gw, banned)).status, 403)
  t.equal((await connect(gw, banned)).status, 403)
  t.equal(be.calls.length, 3, 'a deny is cached too')
})
