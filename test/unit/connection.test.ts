// Connection below HTTP: a fake response object, no server, no Redis.
import t from 'tap'
import { Connection, type CloseReason, type Frame } from '../../src/delivery/connection'
import { ExpirySweep } from '../../src/delivery/expiry'
import { messageBody } from '../../src/delivery/sse'
import { createMetrics } from '../../src/metrics/metrics'
import { FakeResponse } from '../fake-response'
import { waitFor } from '../wait'

const metrics = createMetrics(undefined, { defaults: false })

function open (o: { channels?: string[], events?: string[], immediate?: boolean, max?: number } = {}) {
  const res = new FakeResponse()
  const closed: CloseReason[] = []
  const conn = new Connection({
    res: res.res,
    user: 'u',
    channels: o.channels ?? ['a'],
    hash: 'h',
    events: o.events === undefined ? null : new Set(o.events),
    maxBufferedBytes: o.max ?? 1 << 20,
    immediate: o.immediate ?? true,
    metrics,
    onClose: (_c, reason) => closed.push(reason)
  })
  return { res, conn, closed }
}

const frame = (id: string, data: unknown, o: { event?: string, key?: string, channel?: string } = {}): Frame =>
  ({ id, channel: o.channel ?? 'a', event: o.event ?? 'message', key: o.key, ts: Date.now(), body: messageBody(o.event ?? 'message', data) })

t.test('live, window 0: frames wait for the flush at the end of the turn, then leave in one write, each with the full cursor as its id', async t => {
  const { res, conn } = open({ channels: ['a', 'b'] })
  conn.goLive()
  conn.push(0, frame('1-0', 'x'))
  conn.push(1, frame('5-0', { n: 1 }, { channel: 'b', event: 'note' }))
  t.equal(res.chunks.length, 0, 'nothing before the flush')
  t.ok(conn.hasPending())
  conn.flush(Date.now())
  t.equal(res.chunks.length, 1, 'one write')
  t.same(res.messages(), [{ data: 'x', id: 'h:1-0,0-0' }, { event: 'note', data: '{"n":1}', id: 'h:1-0,5-0' }])
  t.equal(conn.cursor(), 'h:1-0,5-0')
})

t.test('a frame whose id is not above the channel position is dropped (duplicates, overlap)', async t => {
  const { res, conn } = open()
  conn.setPositions(['3-0'])
  conn.goLive()
  conn.push(0, frame('2-0', 'old'))
  conn.push(0, frame('3-0', 'same'))
  conn.push(0, frame('4-0', 'new'))
  conn.push(0, frame('4-0', 'again'))
  conn.flush(Date.now())
  t.same(res.messages().map(m => m.data), ['new'])
})

t.test('?events= filtering happens in the connection', async t => {
  const { res, conn } = open({ events: ['keep'] })
  conn.goLive()
  conn.push(0, frame('1-0', 'no', { event: 'drop' }))
  conn.push(0, frame('2-0', 'yes', { event: 'keep' }))
  conn.flush(Date.now())
  t.same(res.messages().map(m => m.data), ['yes'])
  t.ok(conn.accepts('keep'))
  t.notOk(conn.accepts('drop'))
})

t.test('while syncing, live frames wait; goLive releases those above the replayed position', async t => {
  const { res, conn } = open()
  conn.push(0, frame('1-0', 'replayed already'))
  conn.push(0, frame('2-0', 'new'))
  t.equal(res.chunks.length, 0, 'nothing written while syncing')
  conn.setPositions(['1-0'])
  conn.goLive()
  conn.flush(Date.now())
  t.same(res.messages().map(m => [m.data, m.id]), [['new', 'h:2-0']])
})

t.test('batched: pending frames go out in one write on flush; a newer value with the same key replaces the unsent one', async t => {
  const { res, conn } = open({ channels: ['a', 'b'], immediate: false })
  conn.goLive()
  conn.push(0, frame('1-0', 'p1', { key: 'price' }))
  conn.push(0, frame('2-0', 'other'))
  conn.push(0, frame('4-0', 'p2', { key: 'price' }))
  t.ok(conn.hasPending())
  t.equal(res.chunks.length, 0, 'nothing before the flush')
  conn.flush(Date.now())
  t.equal(res.chunks.length, 1, 'one socket write')
  t.same(res.messages().map(m => m.data), ['other', 'p2'])
  t.same(res.messages().map(m => m.id), ['h:2-0,0-0', 'h:4-0,0-0'], 'every frame carries the cursor as of itself')
  conn.flush(Date.now())
  t.equal(res.chunks.length, 1, 'an empty flush writes nothing')

  // Across channels a key never replaces: the cursor would skip the older value's channel.
  conn.push(0, frame('5-0', 'a-price', { key: 'price' }))
  conn.push(1, frame('6-0', 'b-price', { key: 'price', channel: 'b' }))
  conn.flush(Date.now())
  t.same(res.messages().slice(2).map(m => m.data), ['a-price', 'b-price'])
})

t.test('a slow consumer is closed once its unsent bytes pass the bound', async t => {
  const pending = open({ immediate: false, max: 100 })
  pending.conn.goLive()
  pending.conn.push(0, frame('1-0', 'x'.repeat(60)))
  t.equal(pending.conn.state, 'live')
  pending.conn.push(0, frame('2-0', 'x'.repeat(60)))
  t.equal(pending.conn.state, 'closed', 'pending frames over the bound')
  t.same(pending.closed, ['slow_consumer'])
  t.ok(pending.res.destroyed, 'cut off, not ended behind its backlog')

  const socket = open({ max: 100 })
  socket.conn.goLive()
  socket.res.full = true
  socket.conn.push(0, frame('1-0', 'x'.repeat(60)))
  socket.conn.flush(Date.now())
  t.equal(socket.conn.state, 'live')
  socket.conn.push(0, frame('2-0', 'x'.repeat(60)))
  t.equal(socket.conn.state, 'live', 'each frame alone is under the bound')
  socket.conn.flush(Date.now())
  t.same(socket.closed, ['slow_consumer'], 'bytes queued in the socket count too')
})

t.test('writeAsync waits for drain when the socket is full', async t => {
  const { res, conn } = open()
  res.full = true
  let done = false
  const p = conn.writeAsync('replay').then(() => { done = true })
  await new Promise(resolve => setImmediate(resolve))
  t.notOk(done, 'still waiting')
  res.drain()
  await p
  t.ok(done)
  t.equal(res.text(), 'replay')
})

t.test('heartbeat only on a live stream with nothing pending', async t => {
  const { res, conn } = open({ immediate: false })
  conn.heartbeat()
  t.equal(res.text(), '', 'not while syncing')
  conn.goLive()
  conn.push(0, frame('1-0', 'x'))
  conn.heartbeat()
  t.equal(res.text(), '', 'not with a frame pending (the flush is as good)')
  conn.flush(Date.now())
  conn.heartbeat()
  t.match(res.text(), /:\n\n$/)
})

t.test('end flushes what is pending, writes the last frame and reports the reason once', async t => {
  const { res, conn, closed } = open({ immediate: false })
  conn.goLive()
  conn.push(0, frame('1-0', 'last message'))
  conn.end('retry: 1234\n\n', 'drain')
  t.match(res.text(), /data: last message\nid: h:1-0\n\nretry: 1234\n\n$/)
  t.ok(res.writableEnded)
  t.same(closed, ['drain'])
  await new Promise(resolve => res.once('close', resolve))
  t.same(closed, ['drain'], 'the close event afterwards does not count twice')
  conn.push(0, frame('2-0', 'after'))
  t.notMatch(res.text(), /after/)
})

t.test('a token that expires ends the stream with its frame (the hub\'s expiry sweep)', async t => {
  const { res, conn, closed } = open()
  conn.goLive()
  const sweep = new ExpirySweep<Connection>((c) => c.end('event: auth-expired\ndata: {}\n\n', 'auth_expired'))
  t.teardown(() => sweep.close())
  sweep.add(conn, Date.now() + 20)
  await waitFor(() => closed.length === 1, 5000, 'expiry')
  t.same(closed, ['auth_expired'])
  t.match(res.text(), /event: auth-expired/)
})

t.test('the client hanging up closes the connection as "client"', async t => {
  const { res, closed, conn } = open()
  res.hangUp()
  t.same(closed, ['client'])
  t.ok(conn.closed)
})
