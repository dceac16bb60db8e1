import t, { type Test } from 'tap'
import { Redis } from 'ioredis'
import { MemoryBus } from '../src/bus/memory-bus'
import { Presence } from '../src/presence/presence'
import { RedisPresenceBackend } from '../src/presence/redis'
import { build, freePort, RawStream, REDIS_URL, sign, uniquePrefix, waitFor, type Gateway } from './helper'
import { GatewayProcess } from './gateway-process'

const pub = sign({ sub: 'backend', role: 'publisher' })

async function presence (url: string, channel: string, token = pub): Promise<{ status: number, body: any }> {
  const res = await fetch(`${url}/channels/${encodeURIComponent(channel)}/presence`, { headers: { authorization: `Bearer ${token}` } })
  return { status: res.status, body: await res.json() }
}

function open (t: Test, port: number, user: string, channels: string[]): RawStream {
  const q = channels.map(c => `channel=${encodeURIComponent(c)}`).join('&')
  const s = new RawStream(port, `/events?${q}`, { authorization: `Bearer ${sign({ sub: user, channels: ['room:*', 'topic:*'] })}` })
  t.teardown(() => s.close())
  return s
}

async function live (s: RawStream): Promise<RawStream> {
  await waitFor(() => s.frames().some(f => f.id !== undefined), 10000, 'stream live')
  return s
}

/** Waits until both instances answer `members` for `channel`. */
async function agree (gws: Gateway[] | Array<{ url: string }>, channel: string, members: string[], ms = 10000): Promise<void> {
  let last: unknown = null
  await waitFor(async () => {
    const views = await Promise.all(gws.map(async g => (await presence(g.url, channel)).body))
    last = views
    return views.every(v => v.count === members.length && JSON.stringify(v.members) === JSON.stringify(members))
  }, ms, `presence of ${channel} to be ${members.join(',')}`).catch((err: Error) => { throw new Error(`${err.message}; last: ${JSON.stringify(last)}`) })
}

const CLUSTER = process.env.REDIS_CLUSTER_NODES
const kinds = CLUSTER !== undefined && CLUSTER !== '' ? ['redis', 'cluster'] : ['redis']

for (const kind of kinds) {
  t.test(`${kind}: two instances agree with the open streams`, async t => {
    const prefix = uniquePrefix()
    const env: Record<string, string> = kind === 'cluster' ? { REDIS_URL: '', REDIS_CLUSTER_NODES: CLUSTER as string, CHANNEL_PREFIX: prefix } : { CHANNEL_PREFIX: prefix }
    const a = await build(t, env)
    const b = await build(t, env)
    const u1a = await live(open(t, a.port, 'u1', ['room:1']))
    const u1b = await live(open(t, b.port, 'u1', ['room:1', 'topic:x']))
    await live(open(t, b.port, 'u2', ['room:1']))
    await live(open(t, a.port, 'u3', ['topic:x']))
    await agree([a, b], 'room:1', ['u1', 'u2'])
    await agree([a, b], 'topic:x', ['u1', 'u3'])
    await agree([a, b], 'room:empty', [])
    u1a.close()
    await waitFor(() => a.app.hub.connections.size === 1, 10000, 'u1 gone from A')
    await agree([a, b], 'room:1', ['u1', 'u2'])
    t.pass('u1 is still there through its stream on B')
    u1b.close()
    await agree([a, b], 'room:1', ['u2'])
    await agree([a, b], 'topic:x', ['u3'])
    const metrics = await (await fetch(`${b.url}/metrics`)).text()
    t.match(metrics, /^gateway_presence_members 1$/m, 'B holds one member: u2 on room:1')
    t.match(metrics, /^gateway_presence_channels 1$/m)
    t.notMatch(metrics, /gateway_presence[^\n]*\{[^\n]*(u2|room)/, 'no user or channel label')
  })
}

t.test('a killed instance\'s members drop out within PRESENCE_TTL_S; the survivor announces their leave', async t => {
  const prefix = uniquePrefix()
  const ttlS = 2
  const env = { CHANNEL_PREFIX: prefix, PRESENCE_TTL_S: String(ttlS), PRESENCE_EVENTS: 'room:*' }
  const a = await build(t, env)
  const crashing = new GatewayProcess(await freePort(), prefix, { PRESENCE_TTL_S: String(ttlS), PRESENCE_EVENTS: 'room:*' })
  t.teardown(() => crashing.kill())
  await crashing.start()
  const watcher = await live(open(t, a.port, 'w', ['room:k']))
  for (const u of ['k1', 'k2']) await live(open(t, crashing.port, u, ['room:k']))
  await agree([a, crashing], 'room:k', ['k1', 'k2', 'w'])
  crashing.kill()
  const killed = Date.now()
  await agree([a], 'room:k', ['w'], ttlS * 1000 + 2000)
  const took = Date.now() - killed
  t.comment(`members of the killed instance gone after ${took} ms (PRESENCE_TTL_S=${ttlS})`)
  t.ok(took <= ttlS * 1000 + 1000, `within the TTL (+ the polling): ${took} ms`)
  await waitFor(() => watcher.messages().some(m => m.event === 'leave'), 10000, 'a leave event')
  const left = watcher.messages().filter(m => m.event === 'leave').flatMap(m => JSON.parse(m.data as string).members)
  t.same(left.sort(), ['k1', 'k2'], 'one leave listing both, published by the instance that noticed')
})

t.test('join and leave are coalesced: a reconnect storm sends nothing, N joins are one message', async t => {
  const bus = new MemoryBus({ historySize: 1000, historyTtlS: 60 })
  const r = new Redis(REDIS_URL)
  t.teardown(() => r.quit())
  const prefix = uniquePrefix()
  // Two instances' presence on one Redis, flushed by hand (no timer) so the windows are exact.
  const mk = (id: string): Presence => new Presence(new RedisPresenceBackend(r, prefix, id, 30), bus, { ttlS: 30, events: ['room:*'], maxMembers: 20, flushMs: 3_600_000 })
  const p1 = mk('i1')
  const p2 = mk('i2')
  t.teardown(async () => { await p1.close(); await p2.close() })
  const got: Array<{ event: string, members: string[] }> = []
  await bus.subscribe('room:s', { onMessage: m => got.push({ event: m.event, members: (m.data as { members: string[] }).members }) })

  const users = Array.from({ length: 50 }, (_, i) => ({ user: `s${String(i).padStart(2, '0')}`, channels: ['room:s'] }))
  for (const u of users) p1.opened(u)
  await p1.flush()
  t.same(got.map(g => g.event), ['join', 'join', 'join'], '50 joins in messages of at most PRESENCE_MAX_MEMBERS (20)')
  t.same(got.flatMap(g => g.members), users.map(u => u.user), 'every member once')
  got.length = 0

  // Every stream drops and comes back on the same instance within one window.
  for (const u of users) { p1.closed(u); p1.opened(u) }
  await p1.flush()
  t.same(got, [], 'a reconnect storm inside one window: no message at all')

  // They move to the other instance: whichever side lands first, nobody is announced twice.
  for (const u of users) p2.opened(u)
  await p2.flush()
  for (const u of users) p1.closed(u)
  await p1.flush()
  t.same(got, [], 'moving between instances: still present throughout, no join or leave')
  t.same(await p1.query('room:s', 100).then(v => v.count), 50)

  for (const u of users.slice(0, 3)) p2.closed(u)
  p2.opened({ user: 'late', channels: ['room:s', 'user:late'] })
  await p2.flush()
  t.same(got, [{ event: 'leave', members: ['s00', 's01', 's02'] }, { event: 'join', members: ['late'] }], 'one leave and one join per window')
  t.same((await p2.query('room:s', 5)), { count: 48, members: ['late', 's03', 's04', 's05', 's06'] })
})

t.test('who sees what: count for any token, members for readers, truncation, bad names', async t => {
  const gw = await build(t, { REDIS_URL: '', PRESENCE_MAX_MEMBERS: '2' })
  for (const u of ['m1', 'm2', 'm3']) await live(open(t, gw.port, u, ['room:v']))
  await waitFor(async () => (await presence(gw.url, 'room:v')).body.count === 3, 10000, 'three members (memory bus)')
  t.same((await presence(gw.url, 'room:v')).body, { channel: 'room:v', count: 3, members: ['m1', 'm2'], truncated: true }, 'a publisher: members, truncated at PRESENCE_MAX_MEMBERS')
  t.same((await presence(gw.url, 'room:v', sign({ sub: 'm9', channels: ['room:*'] }))).body, { channel: 'room:v', count: 3, members: ['m1', 'm2'], truncated: true }, 'a reader of the channel')
  t.same((await presence(gw.url, 'room:v', sign({ sub: 'o' }))).body, { channel: 'room:v', count: 3 }, 'anyone else: the count only')
  const noToken = await fetch(`${gw.url}/channels/room:v/presence`)
  t.equal(noToken.status, 401)
  const own = await presence(gw.url, 'user:m1', sign({ sub: 'm1' }))
  t.equal(own.status, 400)
  t.same(own.body, { error: 'invalid_channel', message: 'channel "user:m1": presence is kept for shared channels, not user:<sub>' })
  const bad = await presence(gw.url, 'room v')
  t.equal(bad.status, 400)
  t.equal(bad.body.error, 'invalid_channel')
})
