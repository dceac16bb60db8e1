// Issue 13: each attack that got through, as a test that failed before the fix. Real gateways
// (processes where an exit is the failure), real Redis, raw sockets.
import t from 'tap'
import net from 'node:net'
import { spawn, spawnSync } from 'node:child_process'
import { Writable } from 'node:stream'
import { Redis } from 'ioredis'
import pino from 'pino'
import { build, freePort, publish, RawStream, REDIS_URL, SECRET, sign, testConfig, uniquePrefix, waitFor } from './helper'
import { createPublisher } from '../src/publisher'
import { loggerOptions, redactUrl } from '../src/logger'
import { PUBLISH_LUA } from '../src/bus/redis/scripts'

const reader = (channels: string[] = ['topic:*']): Record<string, string> => ({ authorization: `Bearer ${sign({ sub: 'reader', channels })}` })

function nested (depth: number): unknown {
  const root: unknown[] = []
  let at = root
  for (let i = 1; i < depth; i++) {
    const next: unknown[] = []
    at.push(next)
    at = next
  }
  return root
}

/** Publishes straight into Redis with the gateway's own script, around every check: an older publisher, a raw XADD. */
async function injectRaw (redis: Redis, prefix: string, channel: string, envelopeJson: string): Promise<string> {
  const [id] = await redis.eval(PUBLISH_LUA, 1, `${prefix}history:${channel}`, '1000', '86400', `${prefix}${channel}`, envelopeJson) as string[]
  return id
}

async function metric (url: string, re: RegExp): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text()
  return Number(re.exec(text)?.[1] ?? 0)
}
const UNDELIVERABLE = /^gateway_delivery_messages_dropped_total\{reason="undeliverable"\} (\S+)$/m

async function live (s: RawStream): Promise<string> {
  await waitFor(() => s.frames().some(f => f.id !== undefined), 10000, 'stream live')
  return s.frames().find(f => f.id !== undefined)?.id as string
}

/** A gateway process: a crash is an exit, which the test sees. */
async function gatewayProcess (t: { teardown: (fn: () => void) => void }, env: Record<string, string>): Promise<{ url: string, port: number, exited: () => boolean }> {
  const port = await freePort()
  const child = spawn(process.execPath, ['dist/main.js'], {
    env: { PATH: process.env.PATH, PORT: String(port), HOST: '127.0.0.1', JWT_SECRET: SECRET, REDIS_URL, LOG_LEVEL: 'error', ...env },
    stdio: ['ignore', 'ignore', 'inherit']
  })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  const url = `http://127.0.0.1:${port}`
  await waitFor(async () => (await fetch(`${url}/readyz`).catch(() => null))?.status === 200, 20000, 'process ready')
  return { url, port, exited: () => child.exitCode !== null || child.signalCode !== null }
}

t.test('1. deeply nested data: refused by the publisher helper; one that arrives anyway is dropped by both instances, which stay up', async t => {
  const prefix = uniquePrefix()
  const gws = [await gatewayProcess(t, { CHANNEL_PREFIX: prefix }), await gatewayProcess(t, { CHANNEL_PREFIX: prefix })]
  const streams = gws.map(g => new RawStream(g.port, '/events?channel=topic:deep', reader()))
  t.teardown(() => { for (const s of streams) s.close() })
  const cursors = await Promise.all(streams.map(live))
  const redis = new Redis(REDIS_URL)
  t.teardown(() => redis.quit())
  const pub = createPublisher({ redis: REDIS_URL, prefix })
  t.teardown(() => pub.close())

  await t.rejects(pub.publish({ channel: 'topic:deep', data: nested(4140) }), /body\.data: nests deeper than 64 levels/, 'the helper names the field')
  t.equal(await redis.xlen(`${prefix}history:topic:deep`), 0, 'nothing published')

  // Deeper than any stack can stringify; JSON.parse (iterative in V8) still reads it.
  const depth = 100000
  await injectRaw(redis, prefix, 'topic:deep', `{"channel":"topic:deep","event":"message","data":${'['.repeat(depth)}${']'.repeat(depth)},"ts":1}`)
  const [after] = await pub.publish({ channel: 'topic:deep', event: 'after', data: { ok: true } })
  for (const [i, s] of streams.entries()) {
    const got = await s.waitMessages(1)
    t.same(got.map(m => [m.event, m.data]), [['after', '{"ok":true}']], `instance ${i}: the next message arrives, the nested one was stepped over`)
    t.ok(got[0].id?.split(':')[1].split(',').includes(after), 'its cursor holds the published id')
    t.notOk(s.ended(), `instance ${i}: the stream is still open`)
  }
  for (const [i, g] of gws.entries()) {
    t.notOk(g.exited(), `instance ${i} is alive`)
    t.equal((await fetch(`${g.url}/healthz`)).status, 200)
    t.equal(await metric(g.url, UNDELIVERABLE), 1, `instance ${i} counted it as undeliverable`)
  }

  // A resume across it on either instance steps over it too.
  for (const [i, g] of gws.entries()) {
    const again = new RawStream(g.port, '/events?channel=topic:deep', { ...reader(), 'last-event-id': cursors[i] })
    t.teardown(() => again.close())
    const got = await again.waitMessages(1)
    t.same(got.map(m => m.event), ['after'], `instance ${i}: the replay skips the nested message and is not cut`)
    t.notOk(again.ended())
    t.equal(await metric(g.url, UNDELIVERABLE), 2)
  }
})

for (const bus of ['memory', 'redis'] as const) {
  t.test(`2. deeply nested data in POST /publish on the ${bus} bus: 400 naming it, nothing published, nothing cut`, async t => {
    const gw = await build(t, bus === 'memory' ? { REDIS_URL: '' } : {})
    const s = new RawStream(gw.port, '/events?channel=topic:n', reader())
    t.teardown(() => s.close())
    const cursor = await live(s)
    for (const depth of [65, 10000]) {
      // Written by hand: the test's own JSON.stringify would overflow on it.
      const deep = `${'['.repeat(depth)}${']'.repeat(depth)}`
      const r = await publish(gw.url, `[{"channel":"topic:n","event":"before","data":1},{"channel":"topic:n","data":${deep}},{"channel":"topic:n","event":"after","data":2}]`)
      t.equal(r.status, 400, `depth ${depth}: 400`)
      t.equal(r.body.error, 'invalid_message')
      t.match(r.body.message, /^body\[1\]\.data: nests deeper than 64 levels/)
    }
    t.equal((await publish(gw.url, { channel: 'topic:n', data: nested(64) })).status, 202, '64 levels are fine')
    await publish(gw.url, { channel: 'topic:n', event: 'marker', data: 'm' })
    const got = await s.waitMessages(2)
    t.same(got.map(m => m.event), [undefined, 'marker'], 'only the accepted messages went out')
    const resumed = new RawStream(gw.port, '/events?channel=topic:n', { ...reader(), 'last-event-id': cursor })
    t.teardown(() => resumed.close())
    t.same((await resumed.waitMessages(2)).map(m => m.event), [undefined, 'marker'], 'history holds exactly what went out live')
    await t.rejects(gw.app.bus.publish([{ channel: 'topic:n', event: 'message', data: nested(65), ts: Date.now() }]), /messages\[0\]\.data: nests deeper/, 'the bus itself refuses it')
  })
}

t.test('3. a message whose frame is too large: 413 naming it; one that arrives anyway is dropped, readers are not cut', async t => {
  const gw = await build(t)
  const redis = new Redis(REDIS_URL)
  t.teardown(() => redis.quit())
  const s = new RawStream(gw.port, '/events?channel=topic:big', reader())
  t.teardown(() => s.close())
  const cursor = await live(s)
  // 800 KB of body, framed as ~2.8 MB: each \n becomes "\ndata: ".
  const lines = '\n'.repeat(400000)
  const r = await publish(gw.url, { channel: 'topic:big', data: lines })
  t.equal(r.status, 413)
  t.equal(r.body.error, 'message_too_large')
  t.match(r.body.message, /^body\.data: frames to 2800007 bytes, above MAX_FRAME_BYTES \(262144\)/)
  t.equal(await redis.xlen(`${gw.config.channelPrefix}history:topic:big`), 0, 'nothing published')

  await injectRaw(redis, gw.config.channelPrefix, 'topic:big', JSON.stringify({ channel: 'topic:big', event: 'message', data: lines, ts: Date.now() }))
  await publish(gw.url, { channel: 'topic:big', event: 'marker', data: 'm' })
  t.same((await s.waitMessages(1)).map(m => m.event), ['marker'])
  t.notOk(s.ended(), 'the reader was not cut as a slow consumer')
  const resumed = new RawStream(gw.port, '/events?channel=topic:big', { ...reader(), 'last-event-id': cursor })
  t.teardown(() => resumed.close())
  t.same((await resumed.waitMessages(1)).map(m => m.event), ['marker'], 'a resume steps over it')
  t.notOk(resumed.ended())
  t.equal((await gw.app.metrics.dropped.get()).values.find(v => v.labels.reason === 'undeliverable')?.value, 2)
  t.equal((await gw.app.metrics.connectionsClosed.get()).values.find(v => v.labels.reason === 'slow_consumer')?.value ?? 0, 0)
})

t.test('3. a burst bigger than the budget does not cut a client that reads at full speed; nor does a large replay', async t => {
  const gw = await build(t, { MAX_BUFFERED_BYTES: '1048576', MAX_FRAME_BYTES: '700000', MAX_BODY_BYTES: '4194304', BATCH_WINDOW_MS: '100' })
  const s = new RawStream(gw.port, '/events?channel=topic:burst', reader())
  t.teardown(() => s.close())
  const cursor = await live(s)
  const big = 'y'.repeat(600 * 1024)
  // Two in one request land in one batch window: 1.2 MB unsent by the gateway, none of it refused by the socket.
  for (let round = 0; round < 3; round++) {
    t.equal((await publish(gw.url, [{ channel: 'topic:burst', data: big }, { channel: 'topic:burst', data: big }])).status, 202)
  }
  const got = await s.waitMessages(6, 20000)
  t.ok(got.every(m => m.data === big), 'every message arrived whole')
  t.notOk(s.ended(), 'not cut')
  const resumed = new RawStream(gw.port, '/events?channel=topic:burst', { ...reader(), 'last-event-id': cursor })
  t.teardown(() => resumed.close())
  t.equal((await resumed.waitMessages(6, 20000)).length, 6, 'a 3.6 MB replay arrives within a 1 MB budget')
  t.notOk(resumed.ended())
  t.equal((await gw.app.metrics.connectionsClosed.get()).values.find(v => v.labels.reason === 'slow_consumer')?.value ?? 0, 0)
})

t.test('4. with JWT_ISSUER and JWT_AUDIENCE set, a token without iss or aud is refused (stream and publish)', async t => {
  const gw = await build(t, { JWT_ISSUER: 'https://auth.example', JWT_AUDIENCE: 'sse' })
  const cases: Array<[string, Record<string, unknown>, { iss?: string, aud?: string }, RegExp]> = [
    ['no iss', { sub: 'p', role: 'publisher' }, { aud: 'sse' }, /no iss claim/],
    ['no aud', { sub: 'p', role: 'publisher' }, { iss: 'https://auth.example' }, /no aud claim/],
    ['neither', { sub: 'p', role: 'publisher' }, {}, /no (iss|aud) claim/]
  ]
  for (const [what, claims, opts, message] of cases) {
    const token = sign(claims, opts)
    const stream = await fetch(`${gw.url}/events`, { headers: { authorization: `Bearer ${token}` } })
    t.equal(stream.status, 401, `${what}: no stream`)
    if (stream.status === 200) await stream.body?.cancel()
    else t.match((await stream.json()).message, message)
    const r = await publish(gw.url, { channel: 'topic:x', data: 1 }, token)
    t.equal(r.status, 401, `${what}: no publish`)
  }
  const good = sign({ sub: 'p', role: 'publisher' }, { iss: 'https://auth.example', aud: 'sse' })
  t.equal((await publish(gw.url, { channel: 'topic:x', data: 1 }, good)).status, 202, 'both present: accepted')
})

t.test('5. a credential under a percent-encoded query name does not authenticate, and is redacted from the logs', async t => {
  const lines: string[] = []
  const sink = new Writable({ write (chunk, _enc, cb) { lines.push(chunk.toString()); cb() } })
  const gw = await build(t, {}, { logger: pino(loggerOptions('info') as any, sink) as any })
  const token = sign({ sub: 'victim' })
  const ticketRes = await fetch(`${gw.url}/tickets`, { method: 'POST', headers: { authorization: `Bearer ${token}` } })
  const { ticket } = await ticketRes.json()
  for (const q of [`access%5Ftoken=${token}`, `access_tok%65n=${token}`, `%61ccess_token=${token}`, `ACCESS_TOKEN=${token}`, `tick%65t=${ticket}`]) {
    const r = await fetch(`${gw.url}/events?${q}`)
    t.equal(r.status, 401, `?${q.slice(0, 16)}...: not authenticated`)
    t.equal((await r.json()).error, 'unauthorized')
  }
  const ok = new RawStream(gw.port, `/events?ticket=${ticket}`)
  t.teardown(() => ok.close())
  await ok.waitHead()
  t.equal(ok.status, 200, 'the ticket was not spent by the misspelt attempt, and works under its own name')
  await waitFor(() => lines.filter(l => l.includes('request completed')).length >= 6, 5000, 'request logs')
  const all = lines.join('')
  t.notOk(all.includes(token), 'the token is in no log line')
  t.notOk(all.includes(ticket), 'the ticket is in no log line')
  t.match(all, /access%5Ftoken=\[REDACTED\]/)
  t.match(all, /tick%65t=\[REDACTED\]/)
})

t.test('5. redactUrl matches decoded names in any case and leaves the rest alone', async t => {
  t.equal(redactUrl('/events?channel=a&%61ccess_token=x.y.z&events=b'), '/events?channel=a&%61ccess_token=[REDACTED]&events=b')
  t.equal(redactUrl('/e?Ticket=abc&token=def#frag'), '/e?Ticket=[REDACTED]&token=[REDACTED]#frag')
  t.equal(redactUrl('/e?access_token'), '/e?access_token=[REDACTED]')
  t.equal(redactUrl('/e?bad%zz=1&x=2'), '/e?bad%zz=1&x=2', 'an undecodable name is kept as it is')
  t.equal(redactUrl('/healthz'), '/healthz')
})

t.test('6. CORS: * is any origin without credentials, null is never allowed', async t => {
  const star = await build(t, { CORS_ORIGINS: '*' })
  for (const origin of ['https://evil.test', 'null']) {
    const r = await fetch(`${star.url}/healthz`, { headers: { origin } })
    t.equal(r.headers.get('access-control-allow-origin'), '*', `${origin}: the literal *`)
    t.equal(r.headers.get('access-control-allow-credentials'), null, `${origin}: no credentials`)
    const pre = await fetch(`${star.url}/tickets`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization' } })
    t.equal(pre.headers.get('access-control-allow-origin'), '*')
    t.equal(pre.headers.get('access-control-allow-credentials'), null)
  }
  const list = await build(t, { CORS_ORIGINS: 'https://app.test' })
  const mine = await fetch(`${list.url}/healthz`, { headers: { origin: 'https://app.test' } })
  t.equal(mine.headers.get('access-control-allow-origin'), 'https://app.test')
  t.equal(mine.headers.get('access-control-allow-credentials'), 'true', 'a listed origin gets credentials')
  for (const origin of ['null', 'https://evil.test']) {
    const r = await fetch(`${list.url}/healthz`, { headers: { origin } })
    t.equal(r.headers.get('access-control-allow-origin'), null, `${origin}: not allowed`)
  }
  t.throws(() => testConfig({ CORS_ORIGINS: 'https://app.test,null' }), /CORS_ORIGINS must not contain "null"/)
})

t.test('7. the sse_token cookie authenticates stream reads only; writes need the Authorization header', async t => {
  const gw = await build(t)
  const cookie = `sse_token=${sign({ sub: 'c', role: 'publisher', channels: ['topic:*'] })}`
  const s = new RawStream(gw.port, '/events?channel=topic:c', { cookie })
  t.teardown(() => s.close())
  await s.waitHead()
  t.equal(s.status, 200, 'GET /events with the cookie')
  for (const [path, body] of [['/publish', { channel: 'topic:c', data: 'csrf' }], ['/tickets', {}], ['/predictions', { version: 'v', input: {} }]] as const) {
    const r = await fetch(`${gw.url}${path}`, { method: 'POST', headers: { cookie, 'content-type': 'application/json' }, body: JSON.stringify(body) })
    t.equal(r.status, 401, `POST ${path} with only the cookie: 401`)
    t.match((await r.json()).message, /needs Authorization: Bearer/)
  }
  await publish(gw.url, { channel: 'topic:c', event: 'marker', data: 1 })
  t.same((await s.waitMessages(1)).map(m => m.event), ['marker'], 'the cookie-authenticated publish put nothing on the channel')
})

t.test('10. one rule for user ids and channel names: a sub nobody could publish to gets no stream', async t => {
  const gw = await build(t)
  for (const [what, sub] of [['DEL', 'a\x7fb'], ['C1 control', 'a\u0085b'], ['lone surrogate', 'a\ud800b'], ['NUL', 'a\u0000b'], ['line separator', 'a\u2028b'], ['too long', 'x'.repeat(196)]] as const) {
    const r = await fetch(`${gw.url}/events`, { headers: { authorization: `Bearer ${sign({ sub })}` } })
    t.equal(r.status, 401, `${what}: 401`)
    t.match((await r.json()).message, /"sub" is not a usable user id/)
    const p = await publish(gw.url, { channel: `user:${sub}`, data: 1 })
    t.equal(p.status, 400, `${what}: user:<sub> is no channel either`)
  }
  const sub = 'ünïcödé-ok_' + 'x'.repeat(100)
  const s = new RawStream(gw.port, '/events', { authorization: `Bearer ${sign({ sub })}` })
  t.teardown(() => s.close())
  await s.waitHead()
  t.equal(s.status, 200, 'a sub whose channel is valid gets its stream')
  t.equal((await publish(gw.url, { channel: `user:${sub}`, data: 'hi' })).status, 202)
  t.same((await s.waitMessages(1)).map(m => m.data), ['hi'], 'and can be published to')
})

t.test('11. framework errors answer in the gateway shape', async t => {
  const gw = await build(t)
  const raw = async (request: string): Promise<{ status: number, headers: string, body: string }> => await new Promise((resolve, reject) => {
    const sock = net.connect(gw.port, '127.0.0.1')
    let data = ''
    sock.on('data', (c) => { data += c.toString('latin1') })
    sock.on('error', reject)
    sock.on('close', () => {
      const [head, body = ''] = data.split('\r\n\r\n')
      resolve({ status: Number(head.split(' ')[1]), headers: head, body })
    })
    sock.end(request)
  })
  const big = await raw(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20000)}\r\n\r\n`)
  t.equal(big.status, 431)
  t.match(big.headers, /content-type: application\/json/i)
  t.same(JSON.parse(big.body), { error: 'headers_too_large', message: 'the request headers are too large' })
  const garbage = await raw('NOT HTTP AT ALL\r\n\r\n')
  t.equal(garbage.status, 400)
  t.equal(JSON.parse(garbage.body).error, 'bad_request')
  const badUrl = await fetch(`${gw.url}/events%zz`)
  t.ok(badUrl.status >= 400 && badUrl.status < 500, `a malformed URL: ${badUrl.status}`)
  const body = await badUrl.json()
  t.same(Object.keys(body).sort(), ['error', 'message'], 'the { error, message } shape')
  t.equal((await fetch(`${gw.url}/healthz`)).status, 200, 'still serving')
})

t.test('11. NODE_ENV is validated; an unreachable Redis at start names REDIS_URL and the address', async t => {
  t.throws(() => testConfig({ NODE_ENV: 'Production' }), /NODE_ENV must be one of development, production, test/)
  const r = spawnSync(process.execPath, ['dist/main.js'], { env: { PATH: process.env.PATH, JWT_SECRET: 's', REDIS_URL: 'redis://user:hunter2@127.0.0.1:1', PORT: '0' }, encoding: 'utf8', timeout: 20000 })
  t.equal(r.status, 1)
  const lines = r.stderr.trim().split('\n')
  t.equal(lines.length, 1, 'one line')
  t.match(lines[0], /REDIS_URL: cannot connect to 127\.0\.0\.1:1: connection refused/)
  t.notMatch(r.stderr, /hunter2/, 'without the password')
})
