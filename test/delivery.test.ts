import t from 'tap'
import { build, publish, RawStream, sign, waitFor } from './helper'

async function live (s: RawStream): Promise<void> {
  await waitFor(() => s.frames().some(f => f.id !== undefined), 5000, 'stream live')
}

t.test('a burst of 50 messages within one window arrives in at most 2 socket reads', async t => {
  const gw = await build(t, { BATCH_WINDOW_MS: '100' })
  const s = new RawStream(gw.port, '/events', { authorization: `Bearer ${sign({ sub: 'b' })}` })
  t.teardown(() => s.close())
  await live(s)
  const before = s.readCount()
  const writesBefore = (await gw.app.metrics.socketWrites.get()).values[0]?.value ?? 0
  const r = await publish(gw.url, Array.from({ length: 50 }, (_, i) => ({ channel: 'user:b', data: i })))
  t.equal(r.status, 202)
  await s.waitMessages(50)
  t.ok(s.readCount() - before <= 2, `50 messages in ${s.readCount() - before} reads`)
  const writes = ((await gw.app.metrics.socketWrites.get()).values[0]?.value ?? 0) - writesBefore
  t.ok(writes <= 2, `${writes} socket writes for 50 messages`)
})

t.test('BATCH_WINDOW_MS=0 writes what one turn brought in one write, and holds nothing back', async t => {
  const gw = await build(t, { BATCH_WINDOW_MS: '0' })
  const s = new RawStream(gw.port, '/events', { authorization: `Bearer ${sign({ sub: 'i' })}` })
  t.teardown(() => s.close())
  await live(s)
  const writes = async (): Promise<number> => (await gw.app.metrics.socketWrites.get()).values[0]?.value ?? 0
  // One publish call fans out within one event-loop turn.
  await publish(gw.url, Array.from({ length: 5 }, (_, i) => ({ channel: 'user:i', key: 'k', data: i })))
  await s.waitMessages(5)
  t.equal(await writes(), 1, 'five messages of one turn, one write')
  t.same(s.frames().filter(f => f.data !== undefined).map(f => f.data), ['0', '1', '2', '3', '4'], 'all five, in order: window 0 conflates nothing, same key or not')
  // A later turn's message is written in its own turn: no window to wait for.
  await publish(gw.url, [{ channel: 'user:i', data: 5 }])
  await s.waitMessages(6)
  t.equal(await writes(), 2, 'the next turn, the next write')
})

t.test('conflation: a newer value with the same key replaces the unsent one', async t => {
  const gw = await build(t, { BATCH_WINDOW_MS: '200' })
  const s = new RawStream(gw.port, '/events', { authorization: `Bearer ${sign({ sub: 'c' })}` })
  t.teardown(() => s.close())
  await live(s)
  const msgs = [
    ...Array.from({ length: 20 }, (_, i) => ({ channel: 'user:c', event: 'likes', key: 'post:7:likes', data: i })),
    { channel: 'user:c', event: 'other', data: 'kept' }
  ]
  await publish(gw.url, msgs)
  await s.waitMessages(2)
  await publish(gw.url, { channel: 'user:c', event: 'end', data: 'end' })
  const all = await s.waitMessages(3)
  t.same(all.map(m => m.data), ['19', 'kept', 'end'], 'only the latest value of the key is written')
  const conflated = (await gw.app.metrics.dropped.get()).values.find(v => v.labels.reason === 'conflated')?.value
  t.equal(conflated, 19)
})

t.test('a client that stops reading is cut off; others are not delayed and memory stays bounded', async t => {
  const gw = await build(t, { MAX_BUFFERED_BYTES: '1048576', BATCH_WINDOW_MS: '20' })
  const slow = new RawStream(gw.port, '/events?channel=topic:big', { authorization: `Bearer ${sign({ sub: 'slow', channels: ['topic:*'] })}` })
  const fast = new RawStream(gw.port, '/events?channel=topic:big', { authorization: `Bearer ${sign({ sub: 'fast', channels: ['topic:*'] })}` })
  t.teardown(() => { slow.close(); fast.close() })
  await live(slow)
  await live(fast)
  slow.socket.pause()
  const big = 'x'.repeat(64 * 1024)
  let sent = 0
  // Far more than kernel socket buffers hold, so the gateway's own buffer must fill.
  while (gw.app.hub.connections.size === 2 && sent < 600) {
    await publish(gw.url, Array.from({ length: 2 }, () => ({ channel: 'topic:big', data: big })))
    sent += 2
    await waitFor(() => fast.messages().length >= sent, 10000, 'fast client keeps up')
  }
  await waitFor(() => gw.app.hub.connections.size === 1, 10000, 'slow consumer closed')
  const closed = (await gw.app.metrics.connectionsClosed.get()).values.find(v => v.labels.reason === 'slow_consumer')?.value
  t.equal(closed, 1, 'counted as slow_consumer')
  t.ok(sent < 600, `cut off after ${sent} x 64 KiB`)
  t.equal(fast.messages().length, sent, 'the reading client got every message')
})

t.test('MAX_CONNECTIONS answers 503 and MAX_CONNECTIONS_PER_USER 429, both with Retry-After', async t => {
  const gw = await build(t, { MAX_CONNECTIONS: '3', MAX_CONNECTIONS_PER_USER: '2' })
  const open = (sub: string) => new RawStream(gw.port, '/events', { authorization: `Bearer ${sign({ sub })}` })
  const a1 = open('a'); const a2 = open('a')
  t.teardown(() => { a1.close(); a2.close() })
  await live(a1); await live(a2)
  const a3 = await fetch(`${gw.url}/events`, { headers: { authorization: `Bearer ${sign({ sub: 'a' })}` } })
  t.equal(a3.status, 429)
  t.ok(Number(a3.headers.get('retry-after')) >= 1)
  t.equal((await a3.json()).error, 'too_many_connections')
  const b1 = open('b')
  t.teardown(() => b1.close())
  await live(b1)
  const b2 = await fetch(`${gw.url}/events`, { headers: { authorization: `Bearer ${sign({ sub: 'b' })}` } })
  t.equal(b2.status, 503)
  t.ok(Number(b2.headers.get('retry-after')) >= 1)
  t.equal((await b2.json()).error, 'instance_full')
  a1.close()
  await waitFor(() => gw.app.hub.connections.size === 2)
  const a4 = open('a')
  t.teardown(() => a4.close())
  await live(a4)
  t.equal(a4.status, 200, 'a freed slot is usable again')
  const rejected = (await gw.app.metrics.connectionsRejected.get()).values
  t.ok(rejected.some(v => v.labels.reason === 'too_many_connections' && v.value === 1))
  t.ok(rejected.some(v => v.labels.reason === 'instance_full' && v.value === 1))
})

t.test('at token expiry the stream gets event: auth-expired and closes', async t => {
  const gw = await build(t)
  const s = new RawStream(gw.port, '/events', { authorization: `Bearer ${sign({ sub: 'e' }, { ttlS: 2 })}` })
  t.teardown(() => s.close())
  await live(s)
  await s.waitClosed(10000)
  const last = s.frames().pop()
  t.equal(last?.event, 'auth-expired')
  t.equal(gw.app.hub.connections.size, 0)
})
