import t from 'tap'
import { Redis } from 'ioredis'
import { EventSource } from 'eventsource'
import { build, publish, publisherToken, RawStream, sign, waitFor } from './helper'

const CHANNELS = ['feed:a', 'feed:b', 'feed:c']

t.test('10,000 messages over 3 channels, client cut off and resuming on the other instance: exact per channel', async t => {
  const a = await build(t, { HISTORY_SIZE: '20000' })
  const b = await build(t, { CHANNEL_PREFIX: a.config.channelPrefix, HISTORY_SIZE: '20000' })
  const token = sign({ sub: 'r', channels: ['feed:*'] })
  const path = '/events?' + CHANNELS.map(c => `channel=${c}`).join('&')
  const seen = new Map<string, number[]>(CHANNELS.map(c => [c, []]))
  let last: string | undefined
  let stream: RawStream | null = null
  let parsed = 0
  let reconnects = 0
  const consume = (): void => {
    if (stream === null) return
    const frames = stream.frames()
    for (; parsed < frames.length; parsed++) {
      const f = frames[parsed]
      if (f.id !== undefined) last = f.id
      if (f.data !== undefined) {
        const m = JSON.parse(f.data)
        seen.get(m.c)?.push(m.n)
      }
    }
  }
  const connect = (gw: typeof a): void => {
    stream = new RawStream(gw.port, path, { authorization: `Bearer ${token}`, ...(last !== undefined ? { 'last-event-id': last } : {}) })
    parsed = 0
  }
  connect(a)
  await waitFor(() => { consume(); return last !== undefined })

  const TOTAL = 10000
  const publisher = publisherToken()
  const publishing = (async () => {
    for (let n = 0; n < TOTAL; n += 100) {
      const batch = Array.from({ length: 100 }, (_, k) => ({ channel: CHANNELS[(n + k) % 3], event: 'seq', data: { c: CHANNELS[(n + k) % 3], n: n + k } }))
      const r = await publish(n % 200 === 0 ? a.url : b.url, batch, publisher)
      if (r.status !== 202) throw new Error(`publish failed: ${JSON.stringify(r.body)}`)
    }
  })()
  // Cut the client off several times while publishing goes on, alternating instances.
  while (reconnects < 6) {
    const before = [...seen.values()].reduce((s, l) => s + l.length, 0)
    await waitFor(() => { consume(); return [...seen.values()].reduce((s, l) => s + l.length, 0) > before + 300 || reconnects > 0 && before >= TOTAL }, 20000, 'progress')
    if (before >= TOTAL) break
    consume();
    (stream as RawStream | null)?.close()
    reconnects++
    connect(reconnects % 2 === 1 ? b : a)
  }
  await publishing
  await waitFor(() => { consume(); return [...seen.values()].reduce((s, l) => s + l.length, 0) >= TOTAL }, 30000, 'all messages')
  consume()
  for (const c of CHANNELS) {
    const expected = Array.from({ length: TOTAL }, (_, n) => n).filter(n => CHANNELS[n % 3] === c)
    t.same(seen.get(c), expected, `${c}: every message once, in order`)
  }
  t.ok(reconnects >= 3, `client reconnected ${reconnects} times`)
  ;(stream as RawStream | null)?.close()
})

t.test('a cursor older than the history gets event: reset', async t => {
  const gw = await build(t, { HISTORY_SIZE: '5' })
  const token = sign({ sub: 'old' })
  const s = new RawStream(gw.port, '/events', { authorization: `Bearer ${token}` })
  await waitFor(() => s.frames().some(f => f.id !== undefined))
  const cursor = s.frames().find(f => f.id !== undefined)?.id as string
  s.close()
  for (let i = 0; i < 3; i++) await publish(gw.url, Array.from({ length: 4 }, (_, k) => ({ channel: 'user:old', data: i * 4 + k })))
  const again = new RawStream(gw.port, '/events', { authorization: `Bearer ${token}`, 'last-event-id': cursor })
  t.teardown(() => again.close())
  await waitFor(() => again.frames().some(f => f.event === 'reset'))
  const reset = again.frames().find(f => f.event === 'reset')
  t.same(JSON.parse(reset?.data as string), { channels: ['user:old'] })
  await publish(gw.url, { channel: 'user:old', data: 'after' })
  const msgs = await again.waitMessages(2)
  t.equal(msgs[1].data, 'after', 'live delivery continues after the reset')

  const fresh = new RawStream(gw.port, '/events?lastEventId=' + encodeURIComponent(again.frames().filter(f => f.id).pop()?.id as string), { authorization: `Bearer ${token}` })
  t.teardown(() => fresh.close())
  await waitFor(() => fresh.frames().some(f => f.id !== undefined))
  await publish(gw.url, { channel: 'user:old', data: 'next' })
  const m2 = await fresh.waitMessages(1)
  t.same(m2.map(m => m.data), ['next'], '?lastEventId= resumes exactly (no replay of what was seen)')
})

t.test('resume replays only what was missed, with the eventsource client reconnecting by itself', async t => {
  const gw = await build(t)
  const token = sign({ sub: 'es' })
  const got: string[] = []
  const es = new EventSource(`${gw.url}/events?access_token=${token}`)
  t.teardown(() => es.close())
  es.addEventListener('n', (e: any) => got.push(e.data))
  await waitFor(() => gw.app.hub.connections.size === 1 && [...gw.app.hub.connections][0].state === 'live')
  await publish(gw.url, [1, 2, 3].map(n => ({ channel: 'user:es', event: 'n', data: String(n) })))
  await waitFor(() => got.length === 3)
  // Server side cut: the client reconnects with Last-Event-ID on its own.
  for (const c of gw.app.hub.connections) c.close('error')
  await publish(gw.url, [4, 5].map(n => ({ channel: 'user:es', event: 'n', data: String(n) })))
  await waitFor(() => got.length >= 5, 15000, 'replay after reconnect')
  await publish(gw.url, { channel: 'user:es', event: 'n', data: '6' })
  await waitFor(() => got.length >= 6)
  t.same(got, ['1', '2', '3', '4', '5', '6'])
})

t.test('CLIENT KILL of the subscriber connection: resubscribes and nothing is lost', async t => {
  const gw = await build(t)
  const token = sign({ sub: 'k' })
  const s = new RawStream(gw.port, '/events', { authorization: `Bearer ${token}` })
  t.teardown(() => s.close())
  await waitFor(() => s.frames().some(f => f.id !== undefined))
  const admin = new Redis(gw.config.redisUrl as string)
  t.teardown(() => admin.quit())
  const reconnects = async (): Promise<number> => (await gw.app.metrics.busReconnects.get()).values[0]?.value ?? 0
  let n = 0
  const stop = { v: false }
  const publishing = (async () => {
    while (!stop.v && n < 2000) {
      const r = await publish(gw.url, Array.from({ length: 10 }, (_, k) => ({ channel: 'user:k', data: n + k })))
      if (r.status === 202) n += 10
      else if (r.status !== 503) throw new Error(`publish answered ${r.status}`)
    }
  })()
  await waitFor(() => s.messages().length > 100, 10000, 'live traffic')
  // Only this gateway's subscriber: other test files share the Redis and must not feel this.
  const name = `sse-gateway:sub:${gw.config.channelPrefix}`
  const line = String(await admin.call('CLIENT', 'LIST', 'TYPE', 'pubsub')).split('\n').find(l => l.includes(` name=${name} `))
  t.ok(line, 'found the subscriber connection by name')
  const killed = await admin.client('KILL', 'ID', /\bid=(\d+)/.exec(line as string)?.[1] as string)
  t.equal(Number(killed), 1, 'killed the subscriber connection')
  await waitFor(async () => await reconnects() >= 1, 10000, 'bus reconnect')
  await waitFor(() => s.messages().length > 300 + 200, 20000, 'traffic after reconnect')
  stop.v = true
  await publishing
  await waitFor(() => s.messages().length >= n, 20000, `all ${n} messages`).catch(() => {
    const got = s.messages().map(m => Number(m.data))
    const set = new Set(got)
    const missing = Array.from({ length: n }, (_, i) => i).filter(i => !set.has(i))
    t.comment(`got ${got.length}, missing ${missing.length}: ${missing.slice(0, 20).join(',')}`)
  })
  t.same(s.messages().map(m => Number(m.data)), Array.from({ length: n }, (_, i) => i), 'no gap, no duplicate')
})
