// The hub over the memory bus, with fake responses: no server, no Redis.
import t, { type Test } from 'tap'
import { MemoryBus } from '../../src/bus/memory-bus'
import { Connection, type CloseReason } from '../../src/delivery/connection'
import { channelSetHash } from '../../src/delivery/cursor'
import { Hub, startFrom, type HubOptions, type StreamStart } from '../../src/delivery/hub'
import { createMetrics } from '../../src/metrics/metrics'
import { FakeResponse } from '../fake-response'
import { waitFor } from '../wait'

const quiet = { info: () => {}, warn: () => {} }

function setup (t: Test, opts: Partial<HubOptions> = {}, historySize = 100) {
  const bus = new MemoryBus({ historySize, historyTtlS: 60 })
  const hub = new Hub(bus, { batchWindowMs: 0, heartbeatMs: 60_000, maxConnections: 100, maxConnectionsPerUser: 10, retryMs: 3000, busWaitMs: 0, log: quiet, ...opts }, createMetrics(undefined, { defaults: false }))
  t.teardown(async () => {
    hub.close()
    await bus.close()
  })
  const closed: Array<[string, CloseReason]> = []
  const stream = async (user: string, channels: string[], start: StreamStart = { from: 'live' }) => {
    const res = new FakeResponse()
    const sorted = [...channels].sort()
    const conn = new Connection({
      res: res.res,
      user,
      channels: sorted,
      hash: channelSetHash(sorted),
      events: null,
      maxBufferedBytes: 1 << 20,
      immediate: hub.immediate,
      metrics: createMetrics(undefined, { defaults: false }),
      onClose: (c, reason) => {
        closed.push([c.user, reason])
        hub.onClose(c, reason)
      }
    })
    let begun = false
    await hub.attach(conn, start, () => { begun = true; return '' })
    return { res, conn, begun }
  }
  // Window 0 writes at the end of the event-loop turn: the helper resolves after it.
  const publish = async (channel: string, data: unknown, event = 'm') => {
    const [id] = await bus.publish([{ channel, event, data, ts: Date.now() }])
    await new Promise(resolve => setImmediate(resolve))
    return id
  }
  return { bus, hub, stream, publish, closed }
}

t.test('admit answers the limit a new stream would hit, as a Problem', async t => {
  const { hub, stream, bus } = setup(t, { maxConnections: 3, maxConnectionsPerUser: 2 })
  t.equal(await hub.admit('ann'), null)
  await stream('ann', ['user:ann'])
  await stream('ann', ['user:ann'])
  t.same(await hub.admit('ann'), { code: 'too_many_connections', max: 2, retryAfterS: 3 })
  t.equal(await hub.admit('bob'), null, 'the per-user limit is per user')
  await stream('bob', ['user:bob'])
  t.same(await hub.admit('cat'), { code: 'instance_full', retryAfterS: 3 })
  hub.draining = true
  t.same(await hub.admit('cat'), { code: 'draining', retryAfterS: 3 })
  hub.draining = false
  await bus.close()
  const { hub: other, bus: down } = setup(t, { busWaitMs: 50 })
  await down.close()
  const started = Date.now()
  t.same(await other.admit('dan'), { code: 'bus_unavailable' })
  t.ok(Date.now() - started >= 40, 'waited for the bus first')
})

t.test('from live: the head runs once subscribed, an id-only frame carries the cursor, live messages follow', async t => {
  const { hub, bus, stream, publish } = setup(t)
  const before = await publish('topic:a', 'before')
  const s = await stream('ann', ['user:ann', 'topic:a'])
  t.ok(s.begun)
  t.same(s.res.frames(), [{ id: `${channelSetHash(['topic:a', 'user:ann'])}:${before},0-0` }], 'nothing replayed, the cursor starts at the head')
  const id = await publish('topic:a', { n: 1 })
  t.same(s.res.messages(), [{ event: 'm', data: '{"n":1}', id: `${s.conn.hash}:${id},0-0` }])
  const many = await Promise.all(Array.from({ length: 5 }, () => stream('bob', ['topic:a'])))
  t.equal(bus.subscriptionCount(), 2, 'one bus subscription per channel, whatever the streams')
  t.equal(hub.watchers('topic:a'), 6)
  for (const m of many) m.conn.close('client')
  s.conn.close('client')
  t.equal(bus.subscriptionCount(), 0, 'the last stream off a channel unsubscribes it')
  t.equal(hub.channelCount(), 0)
  t.equal(await hub.admit('bob'), null, 'per-user counts given back')
})

t.test('from a cursor: what was missed is replayed in order, then live, without duplicates', async t => {
  const { stream, publish } = setup(t)
  const first = await stream('ann', ['user:ann'])
  const a = await publish('user:ann', 'a')
  const cursor = first.res.messages()[0].id as string
  first.conn.close('client')
  const b = await publish('user:ann', 'b')
  const c = await publish('user:ann', 'c')
  const s = await stream('ann', ['user:ann'], startFrom(cursor))
  await publish('user:ann', 'd')
  t.same(s.res.messages().map(m => m.data), ['b', 'c', 'd'])
  t.same(s.res.messages().slice(0, 2).map(m => m.id), [`${s.conn.hash}:${b}`, `${s.conn.hash}:${c}`])
  t.not(a, b)
})

t.test('a cursor for another channel set or older than the history: event reset, then live', async t => {
  const { stream, publish } = setup(t, {}, 2)
  const other = await stream('ann', ['user:ann', 'topic:x'], startFrom('zzz:1-0,1-0'))
  t.same(other.res.frames()[0], { event: 'reset', data: '{"channels":["topic:x","user:ann"]}' })
  const old = await publish('user:ann', 1)
  await publish('user:ann', 2)
  await publish('user:ann', 3)
  const s = await stream('ann', ['user:ann'], startFrom(`${channelSetHash(['user:ann'])}:0-0`))
  t.equal(s.res.messages().length, 1)
  t.same(s.res.messages()[0].event, 'reset', 'trimmed past the cursor')
  t.not(old, '0-0')
})

t.test('from ids: a start position per channel (a snapshot taken at those heads)', async t => {
  const { stream, publish } = setup(t)
  const head = await publish('prediction:p', 'seen in the snapshot')
  await publish('prediction:p', 'after the snapshot')
  const s = await stream('ann', ['prediction:p'], { from: 'ids', ids: [head] })
  t.same(s.res.messages().map(m => m.data), ['after the snapshot'])
})

t.test('endStreams ends the streams dedicated to a channel, after what they were handed', async t => {
  const { hub, stream, publish, closed } = setup(t)
  const only = await stream('ann', ['prediction:p'])
  const mixed = await stream('ann', ['prediction:p', 'user:ann'])
  await publish('prediction:p', 'done', 'done')
  t.equal(hub.endStreams('prediction:p'), 1)
  t.ok(only.res.writableEnded)
  t.match(only.res.text(), /event: done/)
  t.equal(mixed.conn.state, 'live', 'a stream with other channels goes on')
  t.same(closed, [['ann', 'client']])
  t.equal(hub.endStreams('nothing:here'), 0)
})

t.test('batching: one flush tick writes each stream once per window', async t => {
  const { stream, publish } = setup(t, { batchWindowMs: 20 })
  const s = await stream('ann', ['user:ann'])
  const writes = s.res.chunks.length
  await publish('user:ann', 1)
  await publish('user:ann', 2)
  await publish('user:ann', 3)
  await waitFor(() => s.res.messages().length === 3, 5000, 'the flush')
  t.equal(s.res.chunks.length, writes + 1, 'three messages, one write')
})

t.test('drain closes every stream with a jittered retry hint and refuses new ones', async t => {
  const { hub, stream, closed } = setup(t)
  const streams = await Promise.all(Array.from({ length: 20 }, (_, i) => stream(`u${i}`, [`user:u${i}`])))
  await hub.drain(50)
  t.equal(closed.length, 20)
  t.ok(closed.every(([, r]) => r === 'drain'))
  const hints = streams.map(s => s.res.frames().at(-1)?.retry as number)
  t.ok(hints.every(ms => ms >= 1500 && ms <= 4500), 'retry between retryMs/2 and 1.5 x retryMs')
  t.same(await hub.admit('new'), { code: 'draining', retryAfterS: 3 })
})

t.test('a token that expires ends its stream with auth-expired', async t => {
  const { hub, stream, closed } = setup(t)
  const s = await stream('ann', ['user:ann'])
  const other = await stream('bob', ['user:bob'])
  hub.expireAt(s.conn, Date.now() + 20)
  await waitFor(() => closed.length === 1, 5000, 'the expiry')
  t.same(closed, [['ann', 'auth_expired']])
  t.match(s.res.text(), /event: auth-expired\n/)
  t.equal(other.conn.state, 'live')
})
