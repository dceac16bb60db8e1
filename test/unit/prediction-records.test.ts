// Prediction records over the memory bus and store: no server, no Redis, no Replicate.
import t, { type Test } from 'tap'
import { MemoryBus } from '../../src/bus/memory-bus'
import { MemoryStore } from '../../src/bus/store'
import { createMetrics } from '../../src/metrics/metrics'
import { PredictionRecords } from '../../src/replicate/records'
import { keys } from '../../src/replicate/state'
import type { Prediction } from '../../src/replicate/types'

function setup (t: Test, budget = 4096) {
  const bus = new MemoryBus({ historySize: 1000, historyTtlS: 60 })
  const store = new MemoryStore()
  t.teardown(() => bus.close())
  const records = new PredictionRecords({
    bus,
    store,
    metrics: createMetrics(undefined, { defaults: false }),
    instanceId: 'test',
    recordTtlMs: 60_000,
    frames: { budget, outputUrl: (id, i) => `/predictions/${id}/output/${i}` }
  })
  const published = async (channel: string) => (await bus.read(channel, '0-0')).messages.map(m => ({ event: m.event, data: m.data as any }))
  return { bus, store, records, published }
}

function snapshot (over: Partial<Prediction> = {}): Prediction {
  return {
    id: 'p1', model: 'acme/m', version: 'v1', input: {}, status: 'starting', logs: '', output: null, error: null,
    created_at: '2030-01-01T00:00:00.000Z', urls: { get: 'x', cancel: 'y' }, ...over
  }
}

t.test('register: the owner, the first status on both channels, the stream URL, the owner\'s list', async t => {
  const { records, store, published } = setup(t)
  const rec = await records.register('alice', snapshot({ urls: { get: 'x', cancel: 'y', stream: 'https://stream/p1' } }))
  t.equal(rec.status, 'starting')
  t.equal(await records.owner('p1'), 'alice')
  t.equal(await store.get(keys.stream('p1')), 'https://stream/p1', 'a stream URL is kept without any stream flag')
  t.same((await published('prediction:p1')).map(m => m.event), ['status'])
  t.same((await published('user:alice')).map(m => m.data), [{ id: 'p1', status: 'starting' }])
  t.same((await records.list('alice', { limit: 10 })).records.map(r => r.id), ['p1'])
})

t.test('apply: forward only; frames carry the appended logs at their offset; done once, with the final status', async t => {
  const { records, published } = setup(t)
  await records.register('alice', snapshot())
  const outcomes = []
  outcomes.push((await records.apply(snapshot({ status: 'processing', logs: 'one\n' }))).outcome)
  outcomes.push((await records.apply(snapshot({ status: 'processing', logs: 'one\ntwo\n' }))).outcome)
  outcomes.push((await records.apply(snapshot({ status: 'processing', logs: 'one\n' }))).outcome) // older
  outcomes.push((await records.apply(snapshot({ status: 'processing', logs: 'one\ntwo\n' }))).outcome) // same
  outcomes.push((await records.apply(snapshot({ status: 'succeeded', logs: 'one\ntwo\nend\n', output: ['x'] }))).outcome)
  outcomes.push((await records.apply(snapshot({ status: 'processing', logs: 'one\ntwo\nend\nmore\n' }))).outcome) // after the end
  t.same(outcomes, ['ok', 'ok', 'stale', 'duplicate', 'ok', 'stale'])
  const msgs = await published('prediction:p1')
  t.same(msgs.map(m => m.event === 'status' ? m.data.status : m.event), ['starting', 'processing', 'processing', 'succeeded', 'done'])
  t.same(msgs.filter(m => m.data.logs !== undefined).map(m => [m.data.logs_offset, m.data.logs]), [[0, 'one\n'], [4, 'two\n'], [8, 'end\n']], 'each piece once')
  await records.finalize((await records.record('p1'))!)
  t.equal((await published('prediction:p1')).filter(m => m.event === 'done').length, 1, 'finalize after the claim publishes nothing')
  t.not(await records.doneId('p1'), null)
})

t.test('a final record moves only to data_removed, which is stored and not published', async t => {
  const { records, published } = setup(t)
  await records.register('alice', snapshot({ status: 'succeeded', output: ['https://x/y.png'] }))
  const before = (await published('prediction:p1')).length
  const { outcome, record } = await records.apply(snapshot({ status: 'succeeded', output: null, data_removed: true }))
  t.equal(outcome, 'ok')
  t.match(record, { dataRemoved: true, output: null })
  t.equal((await published('prediction:p1')).length, before, 'done stays last')
})

t.test('outputs too large for a frame go by reference; small ones stay inline', async t => {
  const { records, published } = setup(t, 4096)
  await records.register('alice', snapshot())
  await records.apply(snapshot({ status: 'succeeded', output: ['data:text/plain,' + 'a'.repeat(5000), 'small'] }))
  const final = (await published('prediction:p1')).find(m => m.data.status === 'succeeded')
  t.same(final?.data.output, ['/predictions/p1/output/0', 'small'])
  t.same(final?.data.output_refs, [0])
  t.equal(((await records.record('p1'))!.output as string[])[0].length, 5016, 'the record keeps the whole item')
})

t.test('notifyRetry: watchers learn when the next try is; nothing after the end', async t => {
  const { records, published } = setup(t)
  await records.register('alice', snapshot())
  const before = Date.now()
  await records.notifyRetry('p1', { reason: 'rate_limited', delayMs: 90_000 })
  const notice = (await published('prediction:p1')).at(-1)?.data
  t.match(notice, { status: 'starting', upstream: 'retrying', reason: 'rate_limited', retry_in_ms: 90_000 })
  const at = Date.parse(notice.retry_at)
  t.ok(at >= before + 90_000 && at <= Date.now() + 90_000, 'retry_at is 90 s out')
  await records.apply(snapshot({ status: 'canceled' }))
  const n = (await published('prediction:p1')).length
  await records.notifyRetry('p1', { reason: 'server_error', delayMs: 10 })
  t.equal((await published('prediction:p1')).length, n)
})

t.test('holdUntil / heldUntil and the webhook mark', async t => {
  const { records } = setup(t)
  t.equal(await records.heldUntil('p1'), null)
  const at = Date.now() + 60_000
  await records.holdUntil('p1', at)
  t.equal(await records.heldUntil('p1'), at)
  t.equal(await records.lastWebhookAt('p1'), null)
  await records.markWebhook('p1')
  t.ok((await records.lastWebhookAt('p1'))! <= Date.now())
})

t.test('list: newest first, pages by id, one owner\'s only', async t => {
  const { records } = setup(t)
  for (const id of ['a1', 'a2', 'a3']) await records.register('alice', snapshot({ id }))
  await records.register('bob', snapshot({ id: 'b1' }))
  const p1 = await records.list('alice', { limit: 2 })
  t.same(p1.records.map(r => r.id), ['a3', 'a2'])
  t.equal(p1.next, 'a2')
  const p2 = await records.list('alice', { limit: 2, after: p1.next as string })
  t.same(p2.records.map(r => r.id), ['a1'])
  t.equal(p2.next, null)
  t.same((await records.list('alice', { limit: 2, after: 'zz' })).records, [], 'an unknown cursor is an empty page')
})
