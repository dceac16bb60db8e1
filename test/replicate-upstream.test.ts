import t, { type Test } from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { startFakeReplicate, type FakeReplicate } from '../dev/fake-replicate'
import { UpstreamError, retryDelay as backoffDelay, createUpstream, parseRetryAfter, type RetryInfo, type UpstreamOptions } from '../src/replicate/upstream'

async function setup (t: Test, o: Partial<UpstreamOptions> = {}): Promise<{ fake: FakeReplicate, up: ReturnType<typeof createUpstream>, delays: number[], retries: RetryInfo[] }> {
  const fake = await startFakeReplicate()
  t.teardown(() => fake.close())
  const delays: number[] = []
  const retries: RetryInfo[] = []
  const up = createUpstream({
    baseUrl: fake.url,
    token: fake.token,
    // Backoff is asserted from the delays asked for, so nothing here waits for real.
    sleep: async ms => { delays.push(ms) },
    random: () => 0,
    onRetry: info => retries.push(info),
    ...o
  })
  return { fake, up, delays, retries }
}

async function rejection (p: Promise<unknown>): Promise<UpstreamError> {
  try {
    await p
  } catch (err) {
    if (err instanceof UpstreamError) return err
    throw err
  }
  throw new Error('expected a rejection')
}

t.test('create by version, by model and by owner/name:version; get; cancel', async t => {
  const { fake, up } = await setup(t)
  const byVersion = await up.create({ version: 'abc123', input: { prompt: 'a cat' }, stream: true })
  t.equal(byVersion.status, 'starting')
  t.equal(byVersion.version, 'abc123')
  t.same(byVersion.input, { prompt: 'a cat' })
  t.equal(byVersion.urls.get, `${fake.url}/predictions/${byVersion.id}`)
  t.ok(byVersion.urls.stream, 'stream asked for, stream URL given')

  const byModel = await up.create({ model: 'acme/painter', input: { prompt: 'a dog' } })
  t.equal(byModel.model, 'acme/painter')
  t.notOk(byModel.urls.stream)
  const pinned = await up.create({ model: 'acme/painter:f00d', input: {} })
  t.equal(pinned.version, 'f00d')
  t.same(fake.requests.filter(r => r.route === 'create').map(r => r.path),
    ['/v1/predictions', '/v1/models/acme/painter/predictions', '/v1/predictions'])

  const statuses: string[] = []
  for (let p = byModel; p.status !== 'succeeded'; p = await up.get(byModel.id)) statuses.push(p.status)
  t.same(statuses, ['starting', 'processing', 'processing', 'processing'])
  const done = await up.get(byModel.id)
  t.equal(done.status, 'succeeded')
  t.ok(done.completed_at && done.metrics?.predict_time !== undefined)
  t.match(done.output, [/^https:\/\//])

  const canceled = await up.cancel(byVersion.id)
  t.equal(canceled.status, 'canceled')
  t.equal((await up.get(byVersion.id)).status, 'canceled', 'terminal stays terminal')
  t.same(fake.counts, { create: 3, get: 6, cancel: 1, list: 0, stream: 0, other: 0 })
})

t.test('a 429 storm waits exactly what Retry-After asks, then succeeds', async t => {
  const { fake, up, delays, retries } = await setup(t)
  const p = await up.create({ version: 'v', input: {} })
  fake.fail({ route: 'get', status: 429, times: 3, retryAfter: 2 })
  t.equal((await up.get(p.id)).status, 'processing')
  t.same(delays, [2000, 2000, 2000])
  t.same(retries.map(r => [r.op, r.attempt, r.reason, r.status, r.delayMs]), [
    ['get', 1, 'rate_limited', 429, 2000], ['get', 2, 'rate_limited', 429, 2000], ['get', 3, 'rate_limited', 429, 2000]
  ])
  t.equal(fake.counts.get, 4, 'the client added no retries of its own')
})

t.test('retry_after in the problem+json body, and Retry-After as an HTTP date', async t => {
  const now = Date.parse('2030-01-01T00:00:00Z')
  const { fake, up, delays } = await setup(t, { now: () => now })
  fake.fail({ route: 'create', status: 429, retryAfterBody: 3 })
  fake.fail({ route: 'create', status: 429, retryAfter: new Date(now + 5000).toUTCString() })
  fake.fail({ route: 'create', status: 429, retryAfter: 1, retryAfterBody: 9 })
  const p = await up.create({ version: 'v', input: {} })
  t.equal(p.status, 'starting', 'a 429 on create is retried: it was not processed')
  t.same(delays, [3000, 5000, 1000], 'the header wins over the body')
  t.equal(fake.counts.create, 4)
  t.equal(fake.predictions.size, 1)
})

t.test('a 429 without any hint backs off; a Retry-After past the limit fails at once', async t => {
  const { fake, up, delays } = await setup(t, { maxRetryAfterMs: 10_000 })
  const p = await up.create({ version: 'v', input: {} })
  fake.fail({ route: 'get', status: 429, times: 2 })
  await up.get(p.id)
  t.same(delays, [500, 1000])
  fake.fail({ route: 'get', status: 429, retryAfter: 120 })
  const err = await rejection(up.get(p.id))
  t.match(err, { code: 'replicate_rate_limited', status: 429, httpStatus: 503, retryAfterMs: 120_000 })
  t.same(delays, [500, 1000], 'did not wait two minutes in-process')
})

t.test('5xx on get backs off exponentially with jitter, capped, then succeeds', async t => {
  const { fake, up, delays, retries } = await setup(t, { maxAttempts: 8, maxDelayMs: 8000 })
  const p = await up.create({ version: 'v', input: {} })
  fake.fail({ route: 'get', status: 503, times: 6 })
  t.equal((await up.get(p.id)).status, 'processing')
  // random() = 0 gives the lower half of each step: 1 s, 2 s, 4 s, 8 s, capped at 8 s.
  t.same(delays, [500, 1000, 2000, 4000, 4000, 4000])
  t.ok(retries.every(r => r.reason === 'server_error' && r.status === 503))
  t.equal(fake.counts.get, 7)
})

t.test('jitter stays within the upper half of the step', async t => {
  for (const r of [0, 0.25, 0.999]) {
    const d = backoffDelay(3, { baseMs: 1000, maxMs: 30_000, random: () => r })
    t.ok(d >= 2000 && d <= 4000, `${d}`)
  }
  t.equal(backoffDelay(20, { baseMs: 1000, maxMs: 30_000, random: () => 0.999 }), 29_985)
  t.equal(parseRetryAfter('1.5', 0), 1500)
  t.equal(parseRetryAfter('Thu, 01 Jan 1970 00:00:10 GMT', 4000), 6000)
  t.equal(parseRetryAfter('Thu, 01 Jan 1970 00:00:10 GMT', 60_000), 0, 'a past date means now')
  t.equal(parseRetryAfter('soon', 0), undefined)
})

t.test('5xx that outlast the attempts become replicate_unavailable', async t => {
  const { fake, up, retries } = await setup(t, { maxAttempts: 4 })
  const p = await up.create({ version: 'v', input: {} })
  fake.fail({ route: 'get', status: 502, times: 10, detail: 'upstream is down' })
  const err = await rejection(up.get(p.id))
  t.match(err, { code: 'replicate_unavailable', status: 502, httpStatus: 502, detail: 'upstream is down' })
  t.equal(fake.counts.get, 4, 'exactly maxAttempts requests, however many times the client loops')
  t.equal(retries.length, 3)
})

t.test('a 5xx on create is not retried: the prediction may exist', async t => {
  const { fake, up, retries } = await setup(t)
  fake.fail({ route: 'create', status: 500, detail: 'boom' })
  const err = await rejection(up.create({ version: 'v', input: {} }))
  t.match(err, { code: 'replicate_unavailable', status: 500, detail: 'boom' })
  t.equal(fake.counts.create, 1)
  t.equal(retries.length, 0)
})

t.test('network errors: get and cancel retry, a create in flight does not', async t => {
  const { fake, up, retries } = await setup(t)
  const p = await up.create({ version: 'v', input: {} })
  fake.fail({ route: 'get', reset: true, times: 2 })
  t.equal((await up.get(p.id)).status, 'processing')
  t.same(retries.map(r => [r.op, r.reason, r.delayMs]), [['get', 'network_error', 500], ['get', 'network_error', 1000]])
  t.equal(fake.counts.get, 3)

  fake.fail({ route: 'cancel', reset: true })
  t.equal((await up.cancel(p.id)).status, 'canceled')
  t.equal(fake.counts.cancel, 2)

  fake.fail({ route: 'create', reset: true })
  const err = await rejection(up.create({ version: 'v', input: {} }))
  t.match(err, { code: 'replicate_unreachable', status: 0, httpStatus: 502 })
  t.equal(fake.counts.create, 2, 'one create, one in-flight failure, and no blind resend by the client')
})

t.test('a refused connection is retried even for create, up to maxAttempts', async t => {
  // A port that was just free: nothing listens there, so every connect is refused.
  const probe = http.createServer()
  await new Promise<void>(resolve => probe.listen(0, '127.0.0.1', resolve))
  const port = (probe.address() as AddressInfo).port
  await new Promise(resolve => probe.close(resolve))
  const retries: RetryInfo[] = []
  const up = createUpstream({ baseUrl: `http://127.0.0.1:${port}/v1`, token: 't', sleep: async () => {}, maxAttempts: 3, onRetry: r => retries.push(r) })
  const err = await rejection(up.create({ version: 'v', input: {} }))
  t.match(err, { code: 'replicate_unreachable', status: 0, detail: /ECONNREFUSED/ })
  t.same(retries.map(r => [r.op, r.attempt, r.reason]), [['create', 1, 'network_error'], ['create', 2, 'network_error']])
})

t.test('401, 402, 404 and 422 map to clear errors without retries', async t => {
  const { fake, up, retries } = await setup(t)
  const bad = createUpstream({ baseUrl: fake.url, token: 'wrong', sleep: async () => {} })
  t.match(await rejection(bad.create({ version: 'v', input: {} })),
    { status: 401, code: 'replicate_unauthorized', httpStatus: 502, detail: 'You did not pass a valid authentication token' })

  fake.fail({ route: 'create', status: 402, detail: 'You have insufficient credit to run this model.' })
  t.match(await rejection(up.create({ version: 'v', input: {} })),
    { status: 402, code: 'replicate_payment_required', httpStatus: 502, detail: 'You have insufficient credit to run this model.' })

  t.match(await rejection(up.get('doesnotexist')),
    { status: 404, code: 'replicate_not_found', httpStatus: 404, detail: 'The requested resource could not be found.' })
  t.match(await rejection(up.cancel('doesnotexist')), { status: 404, code: 'replicate_not_found' })

  t.match(await rejection(up.create({ version: 'v', input: 'not an object' as any })),
    { status: 422, code: 'replicate_invalid_input', httpStatus: 422, detail: /input/ })

  t.equal(retries.length, 0)
  t.same(fake.counts, { create: 3, get: 1, cancel: 1, list: 0, stream: 0, other: 0 })
})

t.test('inputs that must not reach the URL or the network', async t => {
  const { fake, up } = await setup(t)
  t.match(await rejection(up.get('../models/x')), { code: 'replicate_not_found', status: 0 })
  t.match(await rejection(up.cancel('a/b')), { code: 'replicate_not_found' })
  t.match(await rejection(up.create({ model: '../x', input: {} })), { code: 'replicate_invalid_input', httpStatus: 400 })
  t.match(await rejection(up.create({ input: {} })), { code: 'replicate_invalid_input' })
  t.match(await rejection(up.create({ version: 'v', model: 'a/b', input: {} })), { code: 'replicate_invalid_input' })
  t.equal(fake.requests.length, 0)
})

t.test('aborting during a backoff stops the call at once', async t => {
  const fake = await startFakeReplicate()
  t.teardown(() => fake.close())
  const ac = new AbortController()
  const up = createUpstream({ baseUrl: fake.url, token: fake.token, onRetry: () => ac.abort(new Error('nobody watches')) })
  const p = await up.create({ version: 'v', input: {} })
  fake.fail({ route: 'get', status: 429, retryAfter: 30 })
  const started = Date.now()
  await t.rejects(up.get(p.id, { signal: ac.signal }), { message: 'nobody watches' })
  t.ok(Date.now() - started < 10_000, 'did not sit out the 30 s')
  t.equal(fake.counts.get, 1)
})
