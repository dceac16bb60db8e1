// The poll scheduler and the poller over the memory bus and store, with a scripted upstream
// behind the poller's narrow PollerHost: no server, no Redis, no Replicate.
import t, { type Test } from 'tap'
import { MemoryBus } from '../../src/bus/memory-bus'
import { MemoryStore } from '../../src/bus/store'
import { createMetrics } from '../../src/metrics/metrics'
import type { PollerHost, PollerTiming } from '../../src/replicate/poller'
import { PredictionRecords } from '../../src/replicate/records'
import { PollScheduler, type LocalStreams } from '../../src/replicate/scheduler'
import { keys } from '../../src/replicate/state'
import type { Prediction } from '../../src/replicate/types'
import { UpstreamError } from '../../src/replicate/upstream'
import { waitFor } from '../wait'

const quiet = { warn: () => {}, debug: () => {} }
const TIMING: PollerTiming = { pollIntervalMs: 20, safetyPollMs: 60_000, lockTtlMs: 300, streamGraceMs: 100, callTimeoutMs: 200 }

function snapshot (status: Prediction['status'], logs = ''): Prediction {
  return { id: 'p1', model: 'm', version: 'v', input: {}, status, logs, output: null, error: null, created_at: '2030-01-01T00:00:00.000Z', urls: { get: 'x', cancel: 'y' } }
}

/** Local streams as the hub would count them, settable by the test. */
class Streams implements LocalStreams {
  readonly counts = new Map<string, number>()
  readonly ended: string[] = []
  watchers (channel: string): number { return this.counts.get(channel) ?? 0 }
  endStreams (channel: string): number { this.ended.push(channel); return 0 }
}

function world (t: Test) {
  const bus = new MemoryBus({ historySize: 1000, historyTtlS: 60 })
  const store = new MemoryStore()
  t.teardown(() => bus.close())
  const records = new PredictionRecords({ bus, store, metrics: createMetrics(undefined, { defaults: false }), instanceId: 'x', recordTtlMs: 60_000, frames: { budget: 4096, outputUrl: () => '' } })
  return { bus, store, records }
}

type Get = (id: string, signal: AbortSignal) => Promise<Prediction>

function instance (t: Test, w: ReturnType<typeof world>, name: string, get: Get, timing: Partial<PollerTiming> = {}) {
  const gets: number[] = []
  const polls: string[] = []
  const streams = new Streams()
  const host: PollerHost = {
    store: w.store,
    timing: { ...TIMING, ...timing },
    log: quiet,
    get: async (id, signal) => { gets.push(Date.now()); return await get(id, signal) },
    apply: async (p, o) => (await w.records.apply(p, o)).record,
    record: async id => await w.records.record(id),
    finalize: async rec => await w.records.finalize(rec, true),
    notifyRetry: async (id, reason, delayMs, attempt) => await w.records.notifyRetry(id, { reason, delayMs, attempt }),
    holdUntil: async (id, at) => await w.records.holdUntil(id, at),
    heldUntil: async id => await w.records.heldUntil(id),
    lastWebhookAt: async id => await w.records.lastWebhookAt(id),
    countPoll: mode => polls.push(mode),
    follow: async () => {}
  }
  const scheduler = new PollScheduler({ bus: w.bus, streams, host, instanceId: name, log: quiet }, false)
  t.teardown(() => scheduler.close())
  return { scheduler, streams, gets, polls }
}

t.test('a watched prediction gets one poller; the final state publishes done, ends the streams, frees the lock', async t => {
  const w = world(t)
  await w.records.register('alice', snapshot('starting'))
  let n = 0
  const a = instance(t, w, 'a', async () => ++n < 3 ? snapshot('processing', 'x'.repeat(n)) : snapshot('succeeded', 'xxx'))
  a.streams.counts.set('prediction:p1', 1)
  a.scheduler.watch('p1')
  await waitFor(async () => (await w.records.doneId('p1')) !== null, 5000, 'done')
  await waitFor(() => a.streams.ended.includes('prediction:p1'), 5000, 'the streams ended')
  await waitFor(async () => (await w.store.get(keys.poller('p1'))) === null, 5000, 'the lock freed')
  t.equal(a.gets.length, 3)
  t.same(a.polls, ['poll', 'poll', 'poll'], 'no webhooks: counted as plain polls')
  t.equal(a.scheduler.pollerCount, 0)
})

t.test('the owner\'s own stream is interest too; nobody left stops the poller within a TTL and a slice', async t => {
  const w = world(t)
  await w.records.register('alice', snapshot('starting'))
  const a = instance(t, w, 'a', async () => snapshot('processing'))
  a.streams.counts.set('user:alice', 1)
  a.scheduler.watch('p1', 'alice')
  await waitFor(() => a.gets.length >= 2, 5000, 'polling for the owner')
  a.streams.counts.set('user:alice', 0)
  const left = Date.now()
  await waitFor(() => a.scheduler.pollerCount === 0, 5000, 'the poller stopped')
  t.ok(Date.now() - left <= TIMING.lockTtlMs + TIMING.lockTtlMs / 3 + 500, `stopped ${Date.now() - left} ms after the last watcher`)
})

t.test('a poller stuck in a call that never settles stops renewing; another instance takes over', async t => {
  const w = world(t)
  await w.records.register('alice', snapshot('starting'))
  // Hangs with no timeout of its own; only the poller's stop (at teardown) ends it.
  const a = instance(t, w, 'a', async (_id, signal) => await new Promise<Prediction>((_resolve, reject) => signal.addEventListener('abort', () => reject(signal.reason))))
  a.streams.counts.set('prediction:p1', 1)
  a.scheduler.watch('p1')
  await waitFor(() => a.gets.length === 1, 5000, 'the hung call')
  const b = instance(t, w, 'b', async () => snapshot('succeeded'))
  b.streams.counts.set('prediction:p1', 1)
  b.scheduler.watch('p1')
  await waitFor(() => b.gets.length >= 1, 5000, 'the other instance polls')
  await waitFor(async () => (await w.records.record('p1'))?.status === 'succeeded', 5000, 'its answer applied')
  // The stuck poller gave the prediction up once its lock lapsed; its instance may have raced
  // for the lock again (a fresh poller, a fresh call), but never ran two at once.
  t.ok(a.scheduler.pollerCount <= 1)
  await waitFor(() => a.scheduler.pollerCount === 0, 5000, 'the stuck instance lets go once the prediction is done')
})

t.test('once webhooks arrive, polls drop to the safety net', async t => {
  const w = world(t)
  await w.records.register('alice', snapshot('starting'))
  await w.records.markWebhook('p1')
  const a = instance(t, w, 'a', async () => snapshot('processing'), { safetyPollMs: 400 })
  a.streams.counts.set('prediction:p1', 1)
  a.scheduler.watch('p1')
  await waitFor(() => a.gets.length >= 1, 5000, 'the safety-net poll')
  const first = a.gets[0]
  await w.records.apply(snapshot('succeeded')) // the completed webhook
  a.scheduler.poke('p1')
  await waitFor(async () => (await w.records.doneId('p1')) !== null, 5000, 'done')
  t.same(a.polls, ['safety_net'])
  t.ok(a.gets.length === 1 && first > 0, 'one GET in all, the end came by webhook')
})

t.test('a Retry-After past the limit is announced and waited out, never retried sooner', async t => {
  const w = world(t)
  await w.records.register('alice', snapshot('starting'))
  let n = 0
  const a = instance(t, w, 'a', async () => {
    if (++n === 1) throw new UpstreamError(429, 'replicate_rate_limited', 'slow down', 503, 600)
    return snapshot('succeeded')
  })
  a.streams.counts.set('prediction:p1', 1)
  a.scheduler.watch('p1')
  await waitFor(async () => (await w.records.doneId('p1')) !== null, 5000, 'done')
  t.ok(a.gets[1] - a.gets[0] >= 590, `retried ${a.gets[1] - a.gets[0]} ms after a Retry-After of 600 ms`)
  const notice = (await w.bus.read('prediction:p1', '0-0')).messages.map(m => m.data as any).find(d => d.upstream === 'retrying')
  t.match(notice, { reason: 'rate_limited', retry_in_ms: 600, retry_at: String })
})
