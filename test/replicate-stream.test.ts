import t, { type Test } from 'tap'
import { startFakeReplicate, type FakeReplicate } from '../dev/fake-replicate'
import { followStream, type StreamRetryInfo } from '../src/replicate/stream'
import { SseParser } from '../src/shared/sse-parser'
import { UpstreamError } from '../src/replicate/upstream'
import { waitFor } from './wait'

type Got = Array<[string, string, string | undefined]>

async function streaming (t: Test, plan = {}): Promise<{ fake: FakeReplicate, id: string, url: string }> {
  const fake = await startFakeReplicate({ advanceOnGet: false, plan: { steps: 4, tokens: ['Once', ' upon', ' a', ' time'], ...plan } })
  t.teardown(() => fake.close())
  const res = await fetch(`${fake.url}/predictions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${fake.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ version: 'v', input: {}, stream: true })
  })
  const p = await res.json() as { id: string, urls: { stream: string } }
  return { fake, id: p.id, url: p.urls.stream }
}

const noWait = { sleep: async () => {} }
const asTriples = (fake: FakeReplicate, id: string): Got => fake.streamEvents(id).map(e => [e.event, e.data, e.id])

t.test('events arrive in order and the follow ends on done', async t => {
  const { fake, id, url } = await streaming(t)
  fake.finish(id)
  const got: Got = []
  const result = await followStream({ url, onEvent: (e, d, i) => { got.push([e, d, i]) }, retry: noWait })
  t.same(got, asTriples(fake, id))
  t.same(got.filter(g => g[0] === 'output').map(g => g[1]), ['Once', ' upon', ' a', ' time'])
  t.same(got.at(-1)?.slice(0, 2), ['done', '{}'])
  t.same(result, { lastEventId: got.at(-1)?.[2], reconnects: 0 })
  t.match(got[0][2], /^\d+:0$/, 'Replicate-style ids')
})

t.test('live: events as the prediction advances, no sleeps', async t => {
  const { fake, id, url } = await streaming(t)
  const got: Got = []
  const following = followStream({ url, onEvent: (e, d, i) => { got.push([e, d, i]) }, retry: noWait })
  await waitFor(() => fake.streamConnections.length === 1, 10_000, 'the stream connection')
  fake.advance(id)
  await waitFor(() => got.length === 3, 10_000, 'the first step') // seed line, bar, token
  fake.finish(id)
  await following
  t.same(got, asTriples(fake, id))
})

t.test('a drop mid-way reconnects with Last-Event-ID and repeats nothing', async t => {
  const { fake, id, url } = await streaming(t)
  fake.finish(id)
  fake.fail({ route: 'stream', dropAfter: 3 })
  const got: Got = []
  const retries: StreamRetryInfo[] = []
  const result = await followStream({ url, onEvent: (e, d, i) => { got.push([e, d, i]) }, retry: { ...noWait, random: () => 0, onRetry: r => retries.push(r) } })
  const all = asTriples(fake, id)
  t.same(got, all, 'every event once, in order')
  t.same(fake.streamConnections.map(c => c.lastEventId), [undefined, all[2][2]])
  t.equal(result.reconnects, 1)
  t.same(retries.map(r => [r.attempt, r.lastEventId, r.delayMs]), [[1, all[2][2], 250]])
})

t.test('a live drop (the upstream cuts every open stream) resumes too', async t => {
  const { fake, id, url } = await streaming(t)
  const got: Got = []
  const following = followStream({ url, onEvent: (e, d, i) => { got.push([e, d, i]) }, retry: noWait })
  await waitFor(() => fake.streamConnections.length === 1, 10_000, 'the first connection')
  fake.advance(id)
  await waitFor(() => got.length === 3, 10_000, 'the first step')
  t.equal(fake.dropStreams(id), 1)
  await waitFor(() => fake.streamConnections.length === 2, 10_000, 'the reconnect')
  fake.finish(id)
  const result = await following
  t.same(got, asTriples(fake, id))
  t.equal(fake.streamConnections[1].lastEventId, got[2][2])
  t.equal(result.reconnects, 1)
})

t.test('a failed prediction streams error then done', async t => {
  const { fake, id, url } = await streaming(t, { outcome: 'failed', error: 'NSFW content detected' })
  fake.finish(id)
  const got: Got = []
  await followStream({ url, onEvent: (e, d, i) => { got.push([e, d, i]) }, retry: noWait })
  t.same(got.slice(-2).map(g => [g[0], JSON.parse(g[1])]), [['error', { detail: 'NSFW content detected' }], ['done', { reason: 'error' }]])
})

t.test('canceled mid-stream ends with done reason canceled', async t => {
  const { fake, id, url } = await streaming(t)
  const got: Got = []
  const following = followStream({ url, onEvent: (e, d, i) => { got.push([e, d, i]) }, retry: noWait })
  await waitFor(() => fake.streamConnections.length === 1, 10_000, 'the stream connection')
  fake.advance(id)
  const res = await fetch(fake.predictions.get(id)!.urls.cancel, { method: 'POST', headers: { authorization: `Bearer ${fake.token}` } })
  t.equal((await res.json() as any).status, 'canceled')
  await following
  t.same(got.at(-1)?.slice(0, 2), ['done', '{"reason":"canceled"}'])
})

t.test('resume from a given lastEventId', async t => {
  const { fake, id, url } = await streaming(t)
  fake.finish(id)
  const all = asTriples(fake, id)
  const got: Got = []
  await followStream({ url, lastEventId: all[4][2], onEvent: (e, d, i) => { got.push([e, d, i]) }, retry: noWait })
  t.same(got, all.slice(5))
})

t.test('5xx and 429 on connect are retried; 404 is final', async t => {
  const { fake, id, url } = await streaming(t)
  fake.finish(id)
  fake.fail({ route: 'stream', status: 503 })
  fake.fail({ route: 'stream', status: 429, retryAfter: 7 })
  const retries: StreamRetryInfo[] = []
  const got: Got = []
  await followStream({ url, onEvent: (e, d, i) => { got.push([e, d, i]) }, retry: { ...noWait, random: () => 0, onRetry: r => retries.push(r) } })
  t.same(retries.map(r => [r.attempt, r.reason, r.status, r.delayMs]), [[1, 'server_error', 503, 250], [2, 'rate_limited', 429, 7000]])
  t.same(got, asTriples(fake, id))

  const err = await followStream({ url: url.replace(id, 'nope'), onEvent: () => {}, retry: noWait }).catch(e => e)
  t.type(err, UpstreamError)
  t.match(err, { code: 'replicate_not_found', status: 404, detail: 'The requested resource could not be found.' })
  t.equal(fake.counts.stream, 4, 'the 404 was not retried')
})

t.test('gives up after maxAttempts failures in a row', async t => {
  const { fake, id, url } = await streaming(t)
  fake.finish(id)
  fake.fail({ route: 'stream', reset: true, times: 5 })
  await t.rejects(followStream({ url, onEvent: () => {}, retry: { ...noWait, maxAttempts: 3 } }), { code: 'replicate_unreachable' })
  t.equal(fake.counts.stream, 4, 'the first try and three retries')
})

t.test('abort stops the follow; a throwing consumer is not retried', async t => {
  const { fake, id, url } = await streaming(t)
  const ac = new AbortController()
  const following = followStream({ url, signal: ac.signal, onEvent: () => {}, retry: noWait })
  await waitFor(() => fake.streamConnections.length === 1, 10_000, 'the stream connection')
  ac.abort(new Error('nobody watches'))
  await t.rejects(following, { message: 'nobody watches' })

  fake.finish(id)
  await t.rejects(followStream({ url, onEvent: () => { throw new Error('consumer broke') }, retry: noWait }), { message: 'consumer broke' })
  t.equal(fake.counts.stream, 2)
})

t.test('the parser (the shared one, as the follower uses it): CRLF split across chunks, comments, multi-line data, BOM, retry', async t => {
  const events: Array<{ event: string, data: string, id?: string }> = []
  const retries: number[] = []
  const parser = new SseParser({ onMessage: m => events.push({ event: m.type, data: m.data, id: m.lastEventId || undefined }), onRetry: ms => retries.push(ms) })
  const feed = (s: string): void => parser.feed(new TextEncoder().encode(s))
  feed('\uFEFFretry: 1500\r')
  feed('\n: a comment\r\nevent: output\r\nid: 1:0\r\ndata: line one\r\ndata:line two\r')
  feed('\n\r\ndata: no event name\n\nid: 1:2\nevent: done\ndata\n\n')
  feed('event: output\ndata: unterminated')
  parser.end()
  t.same(events, [
    { event: 'output', data: 'line one\nline two', id: '1:0' },
    { event: 'message', data: 'no event name', id: '1:0' },
    { event: 'done', data: '', id: '1:2' }
  ])
  t.same(retries, [1500])
})
