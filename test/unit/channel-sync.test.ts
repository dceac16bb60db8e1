// ChannelSync (guarantee 3 of src/bus/bus.ts on the Redis buses) against scripted history
// reads: no Redis. Each read waits until the test answers it, so every interleaving of live
// messages, reads and resubscriptions is set up by hand.
import t from 'tap'
import type { BusMessage, ReadResult } from '../../src/bus/bus'
import { ChannelSync } from '../../src/bus/redis/channel-sync'
import { waitFor } from '../wait'

interface Pending<T> { args: string[], answer: (v: T) => void, fail: (e: Error) => void }

function scripted () {
  const reads: Array<Pending<ReadResult>> = []
  const heads: Array<Pending<string>> = []
  const warnings: string[] = []
  const sync = new ChannelSync({
    read: (channel, after) => new Promise((resolve, reject) => reads.push({ args: [channel, after], answer: resolve, fail: reject })),
    head: (channel) => new Promise((resolve, reject) => heads.push({ args: [channel], answer: resolve, fail: reject })),
    log: { warn: (_o, m) => warnings.push(m) }
  })
  return { sync, reads, heads, warnings }
}

const msg = (id: string, data: unknown = id): BusMessage => ({ id, channel: 'c', event: 'm', data, ts: 0 })

function listener () {
  const got: string[] = []
  const resets: string[] = []
  return { got, resets, l: { onMessage: (m: BusMessage) => got.push(m.id), onReset: (_c: string, head: string) => resets.push(head) } }
}

/** A channel subscribed and brought live at `head`, with its listener. */
async function subscribed (head: string) {
  const s = scripted()
  const a = listener()
  const { st } = s.sync.add('c', a.l)
  const first = s.sync.fill('c', st)
  await waitFor(() => s.heads.length === 1, 1000, 'the head read')
  s.heads[0].answer(head)
  await first
  return { ...s, a, st }
}

t.test('first subscribe: the head is read once confirmed; live messages above it are delivered after, once', async t => {
  const { sync, heads, reads } = scripted()
  const a = listener()
  const { st, created } = sync.add('c', a.l)
  t.ok(created)
  t.notOk(sync.add('c', a.l).created, 'a second listener shares the channel')
  let ready = false
  void st.ready.then(() => { ready = true })
  sync.live(st, msg('1-0')) // published before the head we are about to read
  const fill = sync.fill('c', st)
  sync.live(st, msg('2-0'))
  await waitFor(() => heads.length === 1, 1000, 'the head read')
  sync.live(st, msg('3-0'))
  heads[0].answer('1-0')
  await fill
  t.same(a.got, ['2-0', '3-0'], 'the buffer released, ids at or below the head skipped')
  t.equal(reads.length, 0, 'no history read on the first subscribe')
  t.ok(ready, 'subscribe resolves once the channel is live')
  sync.live(st, msg('3-0'))
  sync.live(st, msg('4-0'))
  t.same(a.got, ['2-0', '3-0', '4-0'], 'live from here, duplicates dropped')
  t.equal(sync.position('c'), '4-0')
})

t.test('after a lapse: history after the last delivered id, then the buffer, overlap deduplicated', async t => {
  const { sync, reads, a, st } = await subscribed('5-0')
  sync.suspend(st)
  sync.live(st, msg('7-0')) // arrived on the new subscription before the refill
  sync.live(st, msg('8-0'))
  const refill = sync.fill('c', st)
  await waitFor(() => reads.length === 1, 1000, 'the refill')
  t.same(reads[0].args, ['c', '5-0'], 'reads after the last delivered id')
  reads[0].answer({ messages: [msg('6-0'), msg('7-0')], head: '7-0', reset: false })
  await refill
  t.same(a.got, ['6-0', '7-0', '8-0'], 'in order, exactly once')
})

t.test('a gap larger than the history: onReset with the head, then live from there', async t => {
  const { sync, reads, a, st } = await subscribed('1-0')
  sync.suspend(st)
  const refill = sync.fill('c', st)
  await waitFor(() => reads.length === 1, 1000, 'the refill')
  reads[0].answer({ messages: [], head: '90-0', reset: true })
  await refill
  t.same(a.resets, ['90-0'])
  t.equal(sync.position('c'), '90-0')
  sync.live(st, msg('50-0'))
  sync.live(st, msg('91-0'))
  t.same(a.got, ['91-0'])
})

t.test('a fill overtaken by a second lapse gives way; only the newest one delivers', async t => {
  const { sync, reads, a, st } = await subscribed('1-0')
  sync.suspend(st)
  const stale = sync.fill('c', st)
  await waitFor(() => reads.length === 1, 1000, 'the first refill')
  sync.suspend(st) // the connection dropped again while reading
  const fresh = sync.fill('c', st)
  await waitFor(() => reads.length === 2, 1000, 'the second refill')
  reads[0].answer({ messages: [msg('2-0', 'stale')], head: '2-0', reset: false })
  await stale
  t.same(a.got, [], 'the overtaken fill delivered nothing')
  reads[1].answer({ messages: [msg('2-0'), msg('3-0')], head: '3-0', reset: false })
  await fresh
  t.same(a.got, ['2-0', '3-0'])
})

t.test('a failed read is retried (with backoff) and reported once', async t => {
  const { sync, heads, warnings } = scripted()
  const a = listener()
  const { st } = sync.add('c', a.l)
  const fill = sync.fill('c', st)
  heads[0].fail(new Error('connection lost'))
  await waitFor(() => heads.length === 2, 5000, 'the retry')
  heads[1].answer('4-0')
  await fill
  t.same(warnings, ['history read failed; retrying'])
  t.equal(sync.position('c'), '4-0')
})

t.test('the last listener off a channel ends it; close resolves every pending subscribe', async t => {
  const { sync } = scripted()
  const a = listener()
  const b = listener()
  sync.add('c', a.l)
  sync.add('c', b.l)
  t.notOk(sync.remove('c', a.l), 'another listener remains')
  t.ok(sync.remove('c', b.l), 'the last one: the bus unsubscribes')
  t.notOk(sync.remove('c', b.l), 'removing twice does nothing')
  t.equal(sync.size, 0)
  t.equal(sync.position('c'), '0-0')
  const { st } = sync.add('d', a.l)
  sync.close()
  await st.ready
  t.equal(sync.size, 0)
})
