import t, { type Test } from 'tap'
import { startFakeReplicate, type FakeReplicate, type FakeReplicateOptions } from '../dev/fake-replicate'
import type { ReplicateOptions } from '../src/replicate/service'
import { build, RawStream, sign, waitFor, type Gateway, type SseFrame } from './helper'

// Two gateways on one Redis (same CHANNEL_PREFIX), each with its own counting fetch, so the
// tests see which instance talks to Replicate.
const FAST = { pollIntervalMs: 30, lockTtlMs: 600, retryBaseDelayMs: 20, streamGraceMs: 3000 }
const alice = sign({ sub: 'alice' })

interface Counter { gets: number, streams: number, fetch: typeof fetch }

function counting (): Counter {
  const c: Counter = {
    gets: 0,
    streams: 0,
    fetch: async (input, init) => {
      const url = input instanceof Request ? input.url : String(input)
      const method = init?.method ?? (input instanceof Request ? input.method : 'GET')
      if (method === 'GET' && /\/v1\/predictions\/[a-z0-9]+$/.test(url)) c.gets++
      if (url.includes('/stream/')) c.streams++
      return await fetch(input, init)
    }
  }
  return c
}

interface Pair { fake: FakeReplicate, a: Gateway, b: Gateway, ca: Counter, cb: Counter }

async function pair (t: Test, o: { fake?: FakeReplicateOptions, replicate?: ReplicateOptions } = {}): Promise<Pair> {
  const fake = await startFakeReplicate(o.fake)
  t.teardown(() => fake.close())
  const env = { REPLICATE_API_TOKEN: fake.token, REPLICATE_BASE_URL: fake.url, BATCH_WINDOW_MS: '10' }
  const ca = counting()
  const cb = counting()
  const a = await build(t, env, { replicate: { ...FAST, ...o.replicate, fetch: ca.fetch } })
  const b = await build(t, { ...env, CHANNEL_PREFIX: a.config.channelPrefix }, { replicate: { ...FAST, ...o.replicate, fetch: cb.fetch } })
  return { fake, a, b, ca, cb }
}

async function create (gw: Gateway, body: Record<string, unknown> = {}): Promise<string> {
  const res = await fetch(`${gw.url}/predictions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${alice}`, 'content-type': 'application/json' },
    body: JSON.stringify({ version: 'v1', input: { prompt: 'a cat' }, ...body })
  })
  const out = await res.json() as { id: string }
  if (res.status !== 201) throw new Error(`create answered ${res.status}: ${JSON.stringify(out)}`)
  return out.id
}

function watch (t: Test, gw: Gateway, id: string): RawStream {
  const s = new RawStream(gw.port, `/predictions/${id}/events`, { Authorization: `Bearer ${alice}` })
  t.teardown(() => s.close())
  return s
}

const data = (f: SseFrame): any => JSON.parse(f.data as string)
const ending = (s: RawStream): string[] => s.messages().slice(-2).map(m => m.event === 'status' ? data(m).status : m.event as string)
const outputs = (s: RawStream): string[] => s.messages().filter(m => m.event === 'output').map(data)

function gaps (fake: FakeReplicate, id: string): number[] {
  const at = fake.requests.filter(r => r.route === 'get' && r.predictionId === id).map(r => r.at)
  return at.slice(1).map((x, i) => x - at[i])
}

t.test('two watchers on two instances cost one poll loop', async t => {
  const { fake, a, b, ca, cb } = await pair(t, { fake: { advanceOnGet: false } })
  const id = await create(a)
  const sa = watch(t, a, id)
  const sb = watch(t, b, id)
  await Promise.all([sa.waitMessages(1), sb.waitMessages(1)])
  const start = Date.now()
  await waitFor(() => fake.counts.get >= 30, 10000, '30 polls')
  const elapsed = Date.now() - start
  t.ok((ca.gets === 0) !== (cb.gets === 0), `exactly one instance polls (a: ${ca.gets}, b: ${cb.gets})`)
  t.equal(fake.counts.get, ca.gets + cb.gets, 'every GET Replicate saw came from that loop')
  const g = gaps(fake, id)
  // One loop waits the 30 ms interval between polls; two loops would interleave closer.
  t.ok(Math.min(...g) >= 20, `no two polls closer than the interval (min gap ${Math.min(...g)} ms)`)
  t.comment(`polls: ${fake.counts.get} in ~${elapsed} ms with 2 watchers on 2 instances (interval 30 ms)`)
  t.equal(a.app.predictions.pollerCount + b.app.predictions.pollerCount, 1)

  fake.advance(id)
  await waitFor(() => [sa, sb].every(s => s.messages().some(m => m.event === 'status' && data(m).status === 'processing')), 5000, 'both see processing')
  fake.finish(id)
  await Promise.all([sa.waitClosed(), sb.waitClosed()])
  t.same(ending(sa), ['succeeded', 'done'])
  t.same(ending(sb), ['succeeded', 'done'])
  const history = await a.app.bus.read(`prediction:${id}`, '0-0')
  t.equal(history.messages.filter(m => m.event === 'done').length, 1, 'done published once cluster-wide')
  await waitFor(async () => (await a.app.store.get(`prediction:${id}:poller`)) === null, 5000, 'lock released')
})

/** What main.ts does on SIGTERM: drain the streams, then close. */
async function shutDown (gw: Gateway): Promise<void> {
  await gw.app.hub.drain(0)
  await gw.app.close()
}

async function holderOf (p: Pair): Promise<{ holder: Gateway, other: Gateway, otherCount: Counter }> {
  await waitFor(() => p.ca.gets + p.cb.gets >= 3, 10000, 'polling')
  return p.ca.gets > 0 ? { holder: p.a, other: p.b, otherCount: p.cb } : { holder: p.b, other: p.a, otherCount: p.ca }
}

t.test('closing the polling instance hands polling to the other', async t => {
  const p = await pair(t, { fake: { advanceOnGet: false } })
  const id = await create(p.a)
  const streams = new Map([[p.a, watch(t, p.a, id)], [p.b, watch(t, p.b, id)]])
  const { holder, other, otherCount } = await holderOf(p)
  t.equal(otherCount.gets, 0)
  const closedAt = Date.now()
  await shutDown(holder)
  t.equal(await other.app.store.get(`prediction:${id}:poller`) === null || other.app.predictions.isPolling(id), true, 'lock given back on close')
  await waitFor(() => otherCount.gets > 0, 10000, 'the other instance polls')
  t.comment(`handover after a clean close: ${Date.now() - closedAt} ms`)
  const survivor = streams.get(other) as RawStream
  p.fake.advance(id)
  p.fake.finish(id)
  await survivor.waitClosed()
  t.same(ending(survivor), ['succeeded', 'done'])
})

t.test('a holder that dies without releasing: the lock expires and the other takes over', async t => {
  const p = await pair(t, { fake: { advanceOnGet: false }, replicate: { releaseOnClose: false } })
  const id = await create(p.a)
  const streams = new Map([[p.a, watch(t, p.a, id)], [p.b, watch(t, p.b, id)]])
  const { holder, other, otherCount } = await holderOf(p)
  const diedAt = Date.now()
  await shutDown(holder)
  t.not(await other.app.store.get(`prediction:${id}:poller`), null, 'the dead holder\'s lock is still there')
  await waitFor(() => otherCount.gets > 0, 10000, 'the other instance polls')
  const ms = Date.now() - diedAt
  t.ok(ms >= 150, `nobody polled while the lock lived (${ms} ms, TTL 600 ms)`)
  t.comment(`takeover after a crash: ${ms} ms with a 600 ms lock TTL`)
  const survivor = streams.get(other) as RawStream
  p.fake.finish(id)
  await survivor.waitClosed()
  t.same(ending(survivor), ['succeeded', 'done'])
})

t.test('streamed output: one upstream stream for watchers on two instances, forwarded once', async t => {
  const { fake, a, b, ca, cb } = await pair(t, { fake: { advanceOnGet: false, plan: { steps: 3, tokens: ['Hello', ' wor', 'l\nd'] } } })
  const id = await create(a, { stream: true })
  const sa = watch(t, a, id)
  const sb = watch(t, b, id)
  await waitFor(() => fake.streamConnections.length === 1, 10000, 'the upstream stream')
  for (let i = 0; i < 3; i++) fake.advance(id)
  fake.finish(id)
  await Promise.all([sa.waitClosed(), sb.waitClosed()])
  for (const s of [sa, sb]) {
    t.same(outputs(s), ['Hello', ' wor', 'l\nd'], 'every token once, in order, unchanged')
    t.same(ending(s), ['succeeded', 'done'], 'the final status, then done last')
    t.ok(s.messages().some(m => m.event === 'logs'), 'logs forwarded')
  }
  t.equal(fake.streamConnections.length, 1, 'one upstream connection')
  t.equal(ca.streams + cb.streams, 1)
  const history = await a.app.bus.read(`prediction:${id}`, '0-0')
  t.equal(history.messages.filter(m => m.event === 'output').length, 3, 'published once each')
})

t.test('a follower taking over resumes the upstream stream with Last-Event-ID', async t => {
  const p = await pair(t, { fake: { advanceOnGet: false, plan: { steps: 4, tokens: ['a', 'b', 'c', 'd'] } } })
  const { fake } = p
  const id = await create(p.a, { stream: true })
  const streams = new Map([[p.a, watch(t, p.a, id)], [p.b, watch(t, p.b, id)]])
  await waitFor(() => fake.streamConnections.length === 1, 10000, 'the upstream stream')
  const { holder, other } = await holderOf(p)
  fake.advance(id)
  fake.advance(id)
  const lastId = fake.streamEvents(id).at(-1)?.id
  await waitFor(async () => (await other.app.store.get(`prediction:${id}:stream-cursor`)) === lastId, 5000, 'the cursor stored')
  await shutDown(holder)
  await waitFor(() => fake.streamConnections.length === 2, 10000, 'the new follower')
  t.equal(fake.streamConnections[1].lastEventId, lastId, 'resumed after the last forwarded event')
  fake.advance(id)
  fake.advance(id)
  fake.finish(id)
  const survivor = streams.get(other) as RawStream
  await survivor.waitClosed()
  t.same(outputs(survivor), ['a', 'b', 'c', 'd'], 'nothing lost, nothing twice')
  t.same(ending(survivor), ['succeeded', 'done'])
})

t.test('with the default timings a crashed holder\'s polling moves within 3 s', async t => {
  const p = await pair(t, { fake: { advanceOnGet: false }, replicate: { pollIntervalMs: 1000, lockTtlMs: 2000, releaseOnClose: false } })
  const id = await create(p.a)
  const streams = new Map([[p.a, watch(t, p.a, id)], [p.b, watch(t, p.b, id)]])
  await waitFor(() => p.ca.gets + p.cb.gets >= 1, 10000, 'polling')
  const [holder, other, otherCount] = p.ca.gets > 0 ? [p.a, p.b, p.cb] : [p.b, p.a, p.ca]
  const gets = (): number[] => p.fake.requests.filter(r => r.route === 'get').map(r => r.at)
  const before = gets().length
  const diedAt = Date.now()
  await shutDown(holder)
  await waitFor(() => otherCount.gets > 0 && gets().length > before, 10000, 'the other instance polls')
  const took = (gets().at(-1) as number) - diedAt
  // Lock TTL (2 s) after the last renewal plus one tick (667 ms), plus slack for a busy machine.
  t.ok(took <= 3000 + 300, `the other instance polled ${took} ms after the crash`)
  t.comment(`takeover after a crash with default timings: ${took} ms`)
  p.fake.finish(id)
  const survivor = streams.get(other) as RawStream
  await survivor.waitClosed()
  t.same(ending(survivor), ['succeeded', 'done'])
})
