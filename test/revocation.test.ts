import t, { type Test } from 'tap'
import { build, publish, RawStream, sign, uniquePrefix, waitFor, type Gateway } from './helper'

const pub = sign({ sub: 'backend', role: 'publisher' })

async function disconnect (url: string, body: unknown, token: string | null = pub, raw = false): Promise<{ status: number, body: any }> {
  const res = await fetch(`${url}/disconnect`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token === null ? {} : { authorization: `Bearer ${token}` }) },
    body: raw ? body as string : JSON.stringify(body)
  })
  return { status: res.status, body: await res.json() }
}

async function open (t: Test, gw: Gateway, token: string, query = ''): Promise<RawStream> {
  const s = new RawStream(gw.port, `/events${query}`, { authorization: `Bearer ${token}` })
  t.teardown(() => s.close())
  await s.waitHead()
  await waitFor(() => s.frames().some(f => f.id !== undefined), 10000, 'stream live')
  return s
}

async function status (gw: Gateway, token: string): Promise<{ status: number, body: any }> {
  const ac = new AbortController()
  const res = await fetch(`${gw.url}/events`, { headers: { authorization: `Bearer ${token}` }, signal: ac.signal })
  const out = { status: res.status, body: res.status === 200 ? null : await res.json() }
  ac.abort()
  return out
}

function disconnectFrame (s: RawStream): unknown {
  const f = s.frames().find(f => f.event === 'disconnect')
  return f === undefined ? undefined : JSON.parse(f.data as string)
}

const CLUSTER = process.env.REDIS_CLUSTER_NODES
const kinds = CLUSTER !== undefined && CLUSTER !== '' ? ['redis', 'cluster'] : ['redis']
for (const kind of kinds) {
t.test(`${kind}: a revoked token is gone from both instances within 1 s and refused on reconnect`, async t => {
  const prefix = uniquePrefix()
  const env: Record<string, string> = kind === 'cluster' ? { REDIS_URL: '', REDIS_CLUSTER_NODES: CLUSTER as string, CHANNEL_PREFIX: prefix } : { CHANNEL_PREFIX: prefix }
  const a = await build(t, env)
  const b = await build(t, env)
  const exp = Math.floor(Date.now() / 1000) + 600
  const j1 = sign({ sub: 'u1', jti: 'j1', exp })
  const j2 = sign({ sub: 'u1', jti: 'j2', exp })
  const onA = await open(t, a, j1)
  const onB = await open(t, b, j1)
  const other = await open(t, a, j2)

  const started = Date.now()
  const r = await disconnect(a.url, { jti: 'j1', reason: 'logged out elsewhere', exp })
  t.equal(r.status, 202)
  t.same(r.body, { revoked: 'jti', until: exp }, 'until the token would expire')
  // The bound counts from the 202 (the revocation is stored and published then): what remains is delivery.
  const answered = Date.now()
  await waitFor(() => onA.ended() && onB.ended(), 1000, 'both j1 streams to end within 1 s')
  t.comment(`both streams ended ${Date.now() - answered} ms after the 202 (${Date.now() - started} ms after the request was sent)`)
  t.same(disconnectFrame(onA), { reason: 'logged out elsewhere' }, 'event: disconnect on instance A')
  t.same(disconnectFrame(onB), { reason: 'logged out elsewhere' }, 'and on instance B')
  t.match(onB.text(), /event: disconnect\ndata: \{"reason":"logged out elsewhere"\}\n\n$/, 'the last frame of the stream')

  await publish(a.url, { channel: 'user:u1', event: 'still', data: 1 })
  await other.waitMessages(1)
  t.notOk(other.ended(), 'the same user with another token keeps its stream')

  for (const gw of [a, b]) {
    const again = await status(gw, j1)
    t.equal(again.status, 401)
    t.same(again.body, { error: 'unauthorized', message: 'token has been revoked' })
  }
  t.equal((await status(b, j2)).status, 200, 'the other token still connects')
  const ticket = await fetch(`${b.url}/tickets`, { method: 'POST', headers: { authorization: `Bearer ${j1}` } })
  t.equal(ticket.status, 401, 'nor does it get a ticket')

  const late = await build(t, env)
  t.equal((await status(late, j1)).status, 401, 'an instance started later learns it from the control channel')
})
}

t.test('revoking a user ends every stream of it and refuses the tokens issued before', async t => {
  const prefix = uniquePrefix()
  const a = await build(t, { CHANNEL_PREFIX: prefix })
  const b = await build(t, { CHANNEL_PREFIX: prefix })
  const old = sign({ sub: 'u2', channels: ['topic:*'] })
  const s1 = await open(t, a, old, '?channel=topic:x')
  const s2 = await open(t, b, old)
  const bystander = await open(t, b, sign({ sub: 'u3' }))
  const r = await disconnect(b.url, { sub: 'u2' })
  t.equal(r.status, 202)
  t.equal(r.body.revoked, 'sub')
  t.ok(r.body.until >= Math.floor(Date.now() / 1000) + 86000, 'by default for HISTORY_TTL_S')
  await waitFor(() => s1.ended() && s2.ended(), 1000, 'both streams of u2 to end')
  t.same(disconnectFrame(s1), { reason: 'revoked' }, 'the default reason')
  t.notOk(bystander.ended(), 'another user is untouched')
  t.equal((await status(a, old)).status, 401, 'a token issued before is refused')
  t.equal((await status(a, sign({ sub: 'u2', iat: Math.floor(Date.now() / 1000) + 2 }))).status, 200, 'a token issued after is accepted')
})

t.test('a revocation ends at its exp', async t => {
  const gw = await build(t, { REDIS_URL: '' })
  const token = sign({ sub: 'u4', jti: 'short' })
  // exp is whole seconds: +1 can be a millisecond away, already past when a loaded machine
  // reaches the check; +3 leaves at least two seconds to see the refusal.
  const r = await disconnect(gw.url, { jti: 'short', exp: Math.floor(Date.now() / 1000) + 3 })
  t.equal(r.status, 202)
  t.equal((await status(gw, token)).status, 401, 'refused while revoked (memory bus)')
  await waitFor(async () => (await status(gw, token)).status === 200, 10000, 'the revocation to lapse')
  t.pass('accepted again after exp')
})

t.test('bad requests change nothing', async t => {
  const gw = await build(t)
  const bad = async (body: unknown, message: RegExp, raw = false): Promise<void> => {
    const r = await disconnect(gw.url, body, pub, raw)
    t.equal(r.status, 400, JSON.stringify(body))
    t.match(r.body.message, message, JSON.stringify(body))
  }
  await bad({}, /^body: give exactly one of "sub" or "jti"/)
  await bad({ sub: 'a', jti: 'b' }, /^body: give exactly one/)
  await bad([{ sub: 'a' }], /^body: must be an object/)
  await bad({ sub: 5 }, /^sub: must be a user id/)
  await bad({ sub: 'a b' }, /^sub:/)
  await bad({ sub: 'x'.repeat(129) }, /^sub:/)
  await bad({ jti: '' }, /^jti: must be 1-256 printable/)
  await bad({ jti: 'a', exp: 1 }, /^exp: must be in the future/)
  await bad({ jti: 'a', exp: '2030' }, /^exp: must be epoch seconds/)
  await bad({ jti: 'a', reason: 'line\nbreak' }, /^reason:/)
  await bad({ jti: 'a', everything: true }, /^everything: unknown field/)
  const junk = await disconnect(gw.url, '{"jti":', pub, true)
  t.equal(junk.status, 400)
  t.equal(junk.body.error, 'invalid_json')
  const big = await disconnect(gw.url, { jti: 'a', reason: 'x'.repeat(5000) })
  t.equal(big.status, 413, 'bodies are small')

  const user = await disconnect(gw.url, { sub: 'u' }, sign({ sub: 'u' }))
  t.equal(user.status, 403)
  t.same(user.body, { error: 'forbidden', message: 'disconnecting needs a token with role "publisher"' })
  const cookie = await fetch(`${gw.url}/disconnect`, { method: 'POST', headers: { cookie: `sse_token=${pub}`, 'content-type': 'application/json' }, body: '{"sub":"u"}' })
  t.equal(cookie.status, 401, 'a cookie does not authorize a write')
  t.equal((await disconnect(gw.url, { sub: 'u' }, null)).status, 401)
  t.equal((await status(gw, sign({ sub: 'u' }))).status, 200, 'nothing was revoked')
})
