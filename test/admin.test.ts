import t from 'tap'
import { loadConfig } from '../src/config'
import { build, RawStream, SECRET, sign, waitFor } from './helper'

const admin = sign({ sub: 'ops', role: 'admin' })
const KEY = 'k'.repeat(40)

async function get (url: string, headers: Record<string, string> = {}): Promise<{ status: number, type: string | null, body: string, headers: Headers }> {
  const res = await fetch(url, { headers })
  return { status: res.status, type: res.headers.get('content-type'), body: await res.text(), headers: res.headers }
}

t.test('off unless ADMIN is set', async t => {
  const gw = await build(t, { REDIS_URL: '' })
  t.equal((await get(`${gw.url}/admin`, { authorization: `Bearer ${admin}` })).status, 404)
  t.equal((await get(`${gw.url}/admin/events`, { authorization: `Bearer ${admin}` })).status, 404)
  t.throws(() => loadConfig({ JWT_SECRET: SECRET, ADMIN: 'short' }), /ADMIN/, 'a key shorter than 32 characters stops the start')
})

t.test('served to role admin only, from a header, the cookie or ?access_token=', async t => {
  const gw = await build(t, { REDIS_URL: '', ADMIN: 'true' })
  const page = await get(`${gw.url}/admin`, { authorization: `Bearer ${admin}` })
  t.equal(page.status, 200)
  t.equal(page.type, 'text/html; charset=utf-8')
  t.equal(page.headers.get('cache-control'), 'no-store')
  t.match(page.body, /import \{ connect \} from '\/client.js'/, 'the same client library as /demo')
  t.equal((await get(`${gw.url}/admin?access_token=${admin}`)).status, 200)
  t.equal((await get(`${gw.url}/admin`, { cookie: `sse_token=${admin}` })).status, 200)
  t.equal((await get(`${gw.url}/admin`)).status, 401)
  for (const role of [undefined, 'publisher', 'Admin']) {
    const r = await get(`${gw.url}/admin`, { authorization: `Bearer ${sign({ sub: 'x', role })}` })
    t.equal(r.status, 403, `role ${String(role)}`)
    t.same(JSON.parse(r.body), { error: 'forbidden', message: 'the operator page needs a token with role "admin"' })
  }
  t.equal((await get(`${gw.url}/admin`, { authorization: `Bearer ${KEY}` })).status, 401, 'no key configured: a key is just a bad token')
})

t.test('ADMIN=<key> opens it with the key too', async t => {
  const gw = await build(t, { REDIS_URL: '', ADMIN: KEY })
  t.equal((await get(`${gw.url}/admin`, { authorization: `Bearer ${KEY}` })).status, 200)
  t.equal((await get(`${gw.url}/admin?access_token=${KEY}`)).status, 200)
  t.equal((await get(`${gw.url}/admin`, { authorization: `Bearer ${KEY.slice(1)}x` })).status, 401)
  t.equal((await get(`${gw.url}/admin`, { authorization: `Bearer ${admin}` })).status, 200, 'and admin tokens still')
  const p = await get(`${gw.url}/admin/presence/room:1`, { authorization: `Bearer ${KEY}` })
  t.same(JSON.parse(p.body), { channel: 'room:1', count: 0, members: [] })
})

t.test('the admin stream carries every instance\'s stats and the tailed channel; bad input is a 400', async t => {
  const gw = await build(t, { ADMIN: 'true' })
  const bad = await get(`${gw.url}/admin/events?tail=${encodeURIComponent('a b')}`, { authorization: `Bearer ${admin}` })
  t.equal(bad.status, 400)
  t.equal(JSON.parse(bad.body).error, 'invalid_channel')
  t.equal((await get(`${gw.url}/admin/presence/user:x`, { authorization: `Bearer ${admin}` })).status, 400)
  const s = new RawStream(gw.port, '/admin/events?tail=room:1', { authorization: `Bearer ${admin}` })
  t.teardown(() => s.close())
  await waitFor(() => s.messages().some(m => m.event === 'stats'), 10000, 'a stats frame')
  const stats = JSON.parse(s.messages().find(m => m.event === 'stats')?.data as string)
  t.match(stats, { instance: /^[0-9a-f]{12}$/, name: new RegExp(`:${gw.port}$`), connections: 1, channels: 1, delivered: Number, latency: { le: Array, counts: Array } })
  t.same(stats.top, [['room:1', 1]], 'the gateway\'s own channels are not listed')
})
