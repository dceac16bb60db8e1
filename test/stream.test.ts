import t from 'tap'
import { EventSource } from 'eventsource'
import { CONTROL_CHANNEL } from '../src/revocation/revocations'
import { build, publish, RawStream, sendMarker, sign, waitFor } from './helper'

t.test('a published event reaches the user stream with exact SSE framing', async t => {
  const gw = await build(t)
  const s = new RawStream(gw.port, '/events', { authorization: `Bearer ${sign({ sub: '42' })}` })
  t.teardown(() => s.close())
  await s.waitHead()
  t.equal(s.status, 200)
  t.equal(s.headers['content-type'], 'text/event-stream; charset=utf-8')
  t.equal(s.headers['cache-control'], 'no-cache')
  t.equal(s.headers['x-accel-buffering'], 'no')
  await waitFor(() => s.frames().some(f => f.id !== undefined), 5000, 'initial cursor')
  t.match(s.text(), /^retry: 3000\n\n: connected\n\n/, 'first frame is retry, then a comment')
  const first = s.frames().find(f => f.id !== undefined)
  t.equal(first?.data, undefined, 'the initial cursor frame dispatches nothing')

  const r = await publish(gw.url, [
    { channel: 'user:42', event: 'note', data: { text: 'héllo ✓ 😀', n: 1 } },
    { channel: 'user:42', data: 'line one\nline two\r\nline three' },
    { channel: 'user:7', event: 'note', data: 'not for 42' }
  ])
  t.equal(r.status, 202)
  t.equal(r.body.ids.length, 3)
  const msgs = await s.waitMessages(2)
  t.equal(msgs[0].event, 'note')
  t.same(JSON.parse(msgs[0].data as string), { text: 'héllo ✓ 😀', n: 1 }, 'unicode survives')
  t.equal(msgs[1].event, undefined, 'default event name is omitted')
  t.equal(msgs[1].data, 'line one\nline two\nline three', 'multi-line data becomes several data: lines')
  t.match(s.text(), /data: line one\ndata: line two\ndata: line three\nid: /)
  t.ok(msgs[0].id?.endsWith(r.body.ids[0]), 'the cursor carries the message id')
  await sendMarker(gw.url, s, 'user:42')
  t.same(s.messages().map(m => m.event), ['note', undefined, 'marker'], "another user's event never arrives")
})

t.test('the eventsource package receives events (access_token in the URL)', async t => {
  const gw = await build(t)
  const token = sign({ sub: 'ann', channels: ['topic:*'] })
  const es = new EventSource(`${gw.url}/events?channel=topic:news&access_token=${token}`)
  t.teardown(() => es.close())
  const got: Array<{ type: string, data: string, lastEventId: string }> = []
  es.addEventListener('headline', (e: any) => got.push({ type: e.type, data: e.data, lastEventId: e.lastEventId }))
  await new Promise<void>((resolve, reject) => { es.onopen = () => resolve(); es.onerror = reject })
  await waitFor(() => gw.app.hub.connections.size === 1 && [...gw.app.hub.connections][0].state === 'live')
  await publish(gw.url, { channel: 'topic:news', event: 'headline', data: { title: 'SSE' } })
  await waitFor(() => got.length === 1)
  t.same(JSON.parse(got[0].data), { title: 'SSE' })
  t.match(got[0].lastEventId, /^[0-9a-z]+:\d+-\d+,\d+-\d+$/, 'cursor covers both channels')
})

t.test('channels: allowed by claim, 403 when not, 400 when malformed, before any stream opens', async t => {
  const gw = await build(t)
  const token = sign({ sub: 'bob', channels: ['team:42', 'topic:*'] })
  const get = (q: string) => fetch(`${gw.url}/events${q}`, { headers: { authorization: `Bearer ${token}` } })
  const forbidden = await get('?channel=team:43')
  t.equal(forbidden.status, 403)
  t.same(await forbidden.json(), { error: 'forbidden_channel', message: 'the token does not allow channel "team:43"' })
  const other = await get('?channel=user:alice')
  t.equal(other.status, 403, "another user's channel is forbidden")
  const bad = await get('?channel=' + encodeURIComponent('topic:a b'))
  t.equal(bad.status, 400)
  t.equal((await bad.json()).error, 'invalid_channel')
  const wild = await get('?channel=topic:*')
  t.equal(wild.status, 400, 'wildcards are not channel names')
  t.equal(gw.app.hub.connections.size, 0)
  t.equal(gw.app.bus.subscriptionCount(), 1, 'nothing subscribed but the control channel')
  const ok = new RawStream(gw.port, '/events?channel=team:42&channel=topic:x', { authorization: `Bearer ${token}` })
  t.teardown(() => ok.close())
  await ok.waitHead()
  t.equal(ok.status, 200)
})

t.test('?events= filters by event name at the gateway', async t => {
  const gw = await build(t)
  const s = new RawStream(gw.port, '/events?events=keep,also', { authorization: `Bearer ${sign({ sub: 'f' })}` })
  t.teardown(() => s.close())
  await waitFor(() => s.frames().some(f => f.id !== undefined))
  await publish(gw.url, ['drop', 'keep', 'other', 'also'].map(event => ({ channel: 'user:f', event, data: event })))
  await s.waitMessages(2)
  await sendMarker(gw.url, s, 'user:f', 'keep')
  t.same(s.messages().map(m => m.event), ['keep', 'also', 'keep'], 'drop and other never arrive')
  t.match(s.messages()[2].data, /^marker-/, 'the last one is the marker')
})

t.test('heartbeat comments come from one shared timer', async t => {
  const gw = await build(t, { HEARTBEAT_MS: '100' })
  const s = new RawStream(gw.port, '/events', { authorization: `Bearer ${sign({ sub: 'hb' })}` })
  t.teardown(() => s.close())
  await waitFor(() => (s.text().match(/^:\n\n/gm) ?? []).length >= 2, 5000, 'two heartbeats')
  t.pass('heartbeats arrive')
})

t.test('1,000 connects and disconnects leave no subscription, listener or counter behind', async t => {
  const gw = await build(t, { MAX_CONNECTIONS_PER_USER: '1000' })
  const token = sign({ sub: 'churn', channels: ['room:*'] })
  for (let round = 0; round < 10; round++) {
    const streams = Array.from({ length: 100 }, (_, i) =>
      new RawStream(gw.port, `/events?channel=room:${i % 7}`, { authorization: `Bearer ${token}` }))
    // A stream that the gateway refused or whose socket failed will never open: stop waiting
    // for it and say which it was, so a client-side reset reads differently from a 503.
    const open = (s: RawStream): boolean => s.text().includes('id: ')
    await waitFor(() => streams.every(s => open(s) || s.ended() || (s.status !== 0 && s.status !== 200)), 20000, `round ${round}: streams open or ended`).catch(err => {
      throw new Error(`${(err as Error).message}; ${streams.filter(s => !open(s)).length} not open: ${streams.filter(s => !open(s)).slice(0, 3).map(s => s.describe()).join(' | ')}`)
    })
    const failed = streams.filter(s => !open(s))
    t.same(failed.map(s => s.describe()), [], `round ${round}: every stream opened`)
    for (const s of streams) s.close()
  }
  await waitFor(() => gw.app.hub.connections.size === 0, 10000, 'hub empty')
  t.equal(gw.app.hub.channelCount(), 0, 'hub holds no channel')
  t.equal(gw.app.bus.subscriptionCount(), 1, 'bus holds no subscription but the control channel')
  const { Redis } = await import('ioredis')
  const r = new Redis(gw.config.redisUrl as string)
  t.teardown(() => r.quit())
  const channels = await r.pubsub('CHANNELS', `${gw.config.channelPrefix}*`)
  await waitFor(async () => (await r.pubsub('CHANNELS', `${gw.config.channelPrefix}*`)).length === 1, 5000, 'redis unsubscribed (but the control channel)')
  t.ok(channels.length <= 8, 'no leaked Redis subscription')
  t.equal(gw.app.server.listenerCount('request'), 1, 'no listener piles up on the server')
})

t.test('two instances on one Redis: published on A, delivered on B', async t => {
  const a = await build(t)
  const b = await build(t, { CHANNEL_PREFIX: a.config.channelPrefix })
  const s = new RawStream(b.port, '/events', { authorization: `Bearer ${sign({ sub: 'x' })}` })
  t.teardown(() => s.close())
  await waitFor(() => s.frames().some(f => f.id !== undefined))
  await publish(a.url, { channel: 'user:x', event: 'cross', data: { from: 'A' } })
  const [m] = await s.waitMessages(1)
  t.equal(m.event, 'cross')
})

t.test('an instance subscribes in Redis only to channels its streams want', async t => {
  const gw = await build(t)
  const { Redis } = await import('ioredis')
  const r = new Redis(gw.config.redisUrl as string)
  t.teardown(() => r.quit())
  const subscribed = async (): Promise<string[]> => (await r.pubsub('CHANNELS', `${gw.config.channelPrefix}*`) as string[])
    .map(c => c.slice(gw.config.channelPrefix.length)).filter(c => c !== CONTROL_CHANNEL).sort()
  t.same(await subscribed(), [], 'nothing before any stream')
  const token = sign({ sub: 'sel', channels: ['topic:*'] })
  const s1 = new RawStream(gw.port, '/events?channel=topic:a', { authorization: `Bearer ${token}` })
  const s2 = new RawStream(gw.port, '/events?channel=topic:a&channel=topic:b', { authorization: `Bearer ${token}` })
  t.teardown(() => { s1.close(); s2.close() })
  await waitFor(() => s1.text().includes('id: ') && s2.text().includes('id: '))
  t.same(await subscribed(), ['topic:a', 'topic:b', 'user:sel'], 'one subscription per wanted channel, shared by streams')
  s2.close()
  await waitFor(async () => (await subscribed()).length === 2, 5000, 'topic:b released')
  t.same(await subscribed(), ['topic:a', 'user:sel'])
})
