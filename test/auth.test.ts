import t from 'tap'
import { generateKeyPairSync } from 'node:crypto'
import { Writable } from 'node:stream'
import pino from 'pino'
import { build, RawStream, sign, waitFor } from './helper'
import { loggerOptions } from '../src/logger'

t.test('every bad token form is a 401 with a JSON body naming the problem', async t => {
  const gw = await build(t)
  const cases: Array<[string, Record<string, string>, RegExp]> = [
    ['no token', {}, /no token/],
    ['not Bearer', { authorization: 'Basic abc' }, /Bearer/],
    ['malformed', { authorization: 'Bearer not.a.jwt' }, /malformed|invalid/],
    ['bad signature', { authorization: `Bearer ${sign({ sub: 'a' }, { key: 'another-secret-entirely' })}` }, /signature/],
    ['expired', { authorization: `Bearer ${sign({ sub: 'a', exp: Math.floor(Date.now() / 1000) - 60 })}` }, /expired/],
    ['no sub', { authorization: `Bearer ${sign({ channels: [] })}` }, /sub/],
    ['channels not a list', { authorization: `Bearer ${sign({ sub: 'a', channels: 'topic:*' })}` }, /channels/],
    ['bad cookie', { cookie: 'sse_token=garbage' }, /malformed|invalid/]
  ]
  for (const [what, headers, message] of cases) {
    const res = await fetch(`${gw.url}/events`, { headers })
    t.equal(res.status, 401, what)
    const body = await res.json()
    t.equal(body.error, 'unauthorized', what)
    t.match(body.message, message, what)
  }
  const q = await fetch(`${gw.url}/events?access_token=${sign({ sub: 'a' }, { key: 'wrong-secret-value' })}`)
  t.equal(q.status, 401, 'query token verified too')
  t.equal(gw.app.hub.connections.size, 0)
})

t.test('token from header, cookie or query; issuer and audience checked', async t => {
  const gw = await build(t, { JWT_ISSUER: 'https://auth.example', JWT_AUDIENCE: 'sse' })
  const good = sign({ sub: 'ok' }, { iss: 'https://auth.example', aud: 'sse' })
  for (const [what, path, headers] of [
    ['header', '/events', { authorization: `Bearer ${good}` }],
    ['cookie', '/events', { cookie: `sse_token=${good}` }],
    ['query', `/events?access_token=${good}`, {}]
  ] as const) {
    const s = new RawStream(gw.port, path, headers)
    await s.waitHead()
    t.equal(s.status, 200, what)
    s.close()
  }
  const wrongIss = await fetch(`${gw.url}/events`, { headers: { authorization: `Bearer ${sign({ sub: 'x' }, { iss: 'evil', aud: 'sse' })}` } })
  t.equal(wrongIss.status, 401)
  const wrongAud = await fetch(`${gw.url}/events`, { headers: { authorization: `Bearer ${sign({ sub: 'x' }, { iss: 'https://auth.example', aud: 'other' })}` } })
  t.equal(wrongAud.status, 401)
})

t.test('RS256 and ES256 public keys', async t => {
  for (const [alg, type, opts] of [['RS256', 'rsa', { modulusLength: 2048 }], ['ES256', 'ec', { namedCurve: 'P-256' }]] as const) {
    const { publicKey, privateKey } = generateKeyPairSync(type as any, { ...opts, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } } as any) as unknown as { publicKey: string, privateKey: string }
    const gw = await build(t, { JWT_SECRET: '', JWT_PUBLIC_KEY: publicKey })
    const s = new RawStream(gw.port, '/events', { authorization: `Bearer ${sign({ sub: 'k' }, { key: privateKey, algorithm: alg })}` })
    t.teardown(() => s.close())
    await s.waitHead()
    t.equal(s.status, 200, `${alg} token accepted`)
    const hs = await fetch(`${gw.url}/events`, { headers: { authorization: `Bearer ${sign({ sub: 'k' })}` } })
    t.equal(hs.status, 401, `${alg}: an HS256 token is refused`)
  }
})

t.test('tickets: single use, on any instance, with the claims of the asking token', async t => {
  const a = await build(t)
  const b = await build(t, { CHANNEL_PREFIX: a.config.channelPrefix })
  const token = sign({ sub: 'tk', channels: ['topic:*'] })
  const res = await fetch(`${a.url}/tickets`, { method: 'POST', headers: { authorization: `Bearer ${token}` } })
  t.equal(res.status, 201)
  const { ticket, expires_in: ttl } = await res.json()
  t.equal(ttl, 30)
  t.match(ticket, /^[A-Za-z0-9_-]{20,}$/)
  const s = new RawStream(b.port, `/events?ticket=${ticket}&channel=topic:x`)
  t.teardown(() => s.close())
  await s.waitHead()
  t.equal(s.status, 200, 'redeemed on the other instance, with the token channels')
  const again = await fetch(`${b.url}/events?ticket=${ticket}`)
  t.equal(again.status, 401, 'a ticket works once')
  t.match((await again.json()).message, /ticket/)
  const noAuth = await fetch(`${a.url}/tickets`, { method: 'POST' })
  t.equal(noAuth.status, 401)
})

t.test('tokens never reach the logs (query token, ticket, header)', async t => {
  const lines: string[] = []
  const sink = new Writable({ write (chunk, _enc, cb) { lines.push(chunk.toString()); cb() } })
  const logger = pino(loggerOptions('debug') as any, sink)
  const gw = await build(t, {}, { logger: logger as any })
  const token = sign({ sub: 'secretive' })
  const s = new RawStream(gw.port, `/events?access_token=${token}`, {})
  await s.waitHead()
  s.close()
  const bad = await fetch(`${gw.url}/events?ticket=abcdef123456&x=1`)
  t.equal(bad.status, 401)
  await fetch(`${gw.url}/tickets`, { method: 'POST', headers: { authorization: `Bearer ${token}` } })
  await waitFor(() => lines.some(l => l.includes('stream closed')), 5000, 'close log')
  const all = lines.join('')
  t.notOk(all.includes(token), 'the token is in no log line')
  t.notOk(all.includes('abcdef123456'), 'the ticket is in no log line')
  t.ok(all.includes('access_token=[REDACTED]'), 'the request is logged with the token redacted')
  const opened = JSON.parse(lines.find(l => l.includes('stream opened')) as string)
  const closed = JSON.parse(lines.find(l => l.includes('stream closed')) as string)
  t.equal(closed.reqId, opened.reqId, 'open and close lines carry the request id')
  t.equal(closed.reason, 'client')
  t.type(closed.durationMs, 'number')
})
