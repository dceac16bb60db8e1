// Issue 16, against the fake Replicate: each numbered failure of the first pass as a test.
import t from 'tap'
import { Writable } from 'node:stream'
import pino from 'pino'
import { loggerOptions } from '../src/logger'
import type { Prediction } from '../src/replicate/types'
import { signWebhook } from '../src/replicate/webhook'
import { RawStream, sign, waitFor } from './helper'
import { alice, api, create, data, history, metric, setup, statuses, watch } from './prediction-fixtures'

const bob = sign({ sub: 'bob' })
const events = (s: RawStream): string[] => s.messages().map(m => m.event === 'status' ? data(m).status : m.event as string)
const getsOf = (fake: { requests: Array<{ route: string, predictionId?: string, at: number, status: number }> }, id: string) =>
  fake.requests.filter(r => r.route === 'get' && r.predictionId === id)

t.test('1. a GET that never answers delays updates by at most its timeout plus one poll interval', async t => {
  const TIMEOUT = 400
  const POLL = 100
  const { fake, gw } = await setup(t, { fake: { advanceOnGet: false }, env: { REPLICATE_TIMEOUT_MS: String(TIMEOUT) }, replicate: { pollIntervalMs: POLL, retryBaseDelayMs: POLL } })
  const id = await create(gw)
  const s = watch(t, gw, id)
  await s.waitMessages(1)
  await waitFor(() => getsOf(fake, id).length >= 1, 5000, 'the first poll')
  fake.fail({ route: 'get', hang: true })
  const hungAt = Date.now()
  fake.advance(id) // the state to deliver sits behind the hung GET
  await waitFor(() => statuses(s).some(p => p.status === 'processing'), 10000, 'the update')
  const delay = Date.now() - hungAt
  // The GET may start up to one interval after the fault is queued; slack for a loaded machine.
  t.ok(delay <= TIMEOUT + 2 * POLL + 500, `update after ${delay} ms (timeout ${TIMEOUT} ms, interval ${POLL} ms)`)
  t.ok(await metric(gw, 'gateway_replicate_calls_total', { operation: 'get', outcome: 'retry' }) >= 1, 'the timed-out GET was retried like a 5xx')
  t.ok(statuses(s).some(p => p.upstream === 'retrying' && p.reason === 'timeout'), 'watchers were told it timed out')
})

t.test('1. the output stream has a connect timeout too', async t => {
  const { fake, gw } = await setup(t, { fake: { advanceOnGet: false, plan: { steps: 2, tokens: ['a', 'b'] } }, env: { REPLICATE_CONNECT_TIMEOUT_MS: '300' } })
  fake.fail({ route: 'stream', hang: true })
  const id = await create(gw)
  const s = watch(t, gw, id)
  await waitFor(() => fake.counts.stream >= 2, 10000, 'a second stream connection after the hung one')
  fake.finish(id)
  await s.waitClosed()
  t.same(s.messages().filter(m => m.event === 'output').map(data), ['a', 'b'], 'the output arrived over the second connection')
  t.equal(s.messages().at(-1)?.event, 'done')
})

t.test('2. a Retry-After past REPLICATE_MAX_RETRY_AFTER_S is honoured and announced with retry_at', async t => {
  const { fake, gw } = await setup(t, { fake: { advanceOnGet: false }, env: { REPLICATE_MAX_RETRY_AFTER_S: '0' } })
  const id = await create(gw)
  fake.fail({ route: 'get', status: 429, retryAfter: 2 })
  const s = watch(t, gw, id)
  await waitFor(() => statuses(s).some(p => p.upstream === 'retrying'), 5000, 'the notice')
  const notice = statuses(s).find(p => p.upstream === 'retrying')
  const first = getsOf(fake, id)[0]
  t.match(notice, { status: 'starting', reason: 'rate_limited', retry_in_ms: 2000 })
  const at = Date.parse(notice.retry_at)
  t.ok(Math.abs(at - (first.at + 2000)) < 500, `retry_at is when Retry-After points (${notice.retry_at})`)
  await waitFor(() => getsOf(fake, id).length >= 2, 10000, 'the retry')
  const gets = getsOf(fake, id)
  t.ok(gets[1].at - gets[0].at >= 1950, `never a faster retry: ${gets[1].at - gets[0].at} ms after a Retry-After of 2 s`)
  fake.finish(id)
  await s.waitClosed()
  t.equal(s.messages().at(-1)?.event, 'done')
})

t.test('3. with webhooks arriving, a 30 s prediction costs at most 3 upstream GETs', async t => {
  // Every interval scaled by 1/20: the prediction runs 30 steps of 50 ms (1.5 s for 30 s), the
  // gateway polls every 50 ms (1 s) without webhooks and every 1.5 s (30 s) with them, and the
  // fake throttles logs webhooks to one per 25 ms (500 ms).
  const { fake, gw } = await setup(t, {
    webhooks: true,
    fake: { stepMs: 50, timeScale: 0.05, plan: { steps: 29 } },
    replicate: { pollIntervalMs: 50, safetyPollMs: 1500 }
  })
  const started = Date.now()
  const id = await create(gw)
  t.same(fake.predictions.get(id)?.webhook_events_filter, ['start', 'output', 'logs', 'completed'], 'registered with every event')
  const s = watch(t, gw, id)
  await s.waitClosed(15000)
  const took = Date.now() - started
  t.equal(s.messages().at(-1)?.event, 'done')
  t.equal(statuses(s).at(-1).status, 'succeeded')
  const gets = getsOf(fake, id).length
  t.ok(gets <= 3, `${gets} GETs for a ${took} ms prediction (30 s scaled) with ${fake.webhooks.filter(w => w.predictionId === id).length} webhooks`)
  const polled = await metric(gw, 'gateway_replicate_polls_total', { mode: 'poll' })
  const safety = await metric(gw, 'gateway_replicate_polls_total', { mode: 'safety_net' })
  t.equal(polled + safety, gets, 'polls counted by mode')
  t.comment(`30 s (scaled): ${gets} GETs (poll ${polled}, safety_net ${safety}), ${fake.webhooks.length} webhooks`)

  const narrowed = await create(gw, { webhook_events_filter: ['completed'] })
  t.same(fake.predictions.get(narrowed)?.webhook_events_filter, ['completed'], 'a caller narrows it with Replicate\'s field name')
})

t.test('3. webhooks that stop: the safety net polls again', async t => {
  const { fake, gw } = await setup(t, { webhooks: true, fake: { advanceOnGet: false }, replicate: { pollIntervalMs: 30, safetyPollMs: 400 } })
  const id = await create(gw, { webhook_events_filter: ['start'] })
  const s = watch(t, gw, id)
  await fake.idle()
  await waitFor(async () => (await gw.app.store.get(`prediction:${id}:webhook-at`)) !== null, 5000, 'the start webhook')
  const before = getsOf(fake, id).length
  fake.advance(id) // no webhook for this one (the filter)
  await waitFor(() => statuses(s).some(p => p.status === 'processing'), 5000, 'the safety-net poll')
  t.ok(getsOf(fake, id).length - before <= 2, 'found by a slow poll, not a fast loop')
  t.ok(await metric(gw, 'gateway_replicate_polls_total', { mode: 'safety_net' }) >= 1)
  fake.finish(id)
  await s.waitClosed(5000)
})

t.test('4. streaming models stream without stream: true; output, logs and errors as plain JSON', async t => {
  const { fake, gw } = await setup(t, { fake: { advanceOnGet: false, plan: { steps: 3, tokens: ['{"a":1}', ' 42', 'l\nd'] } } })
  const id = await create(gw) // no `stream` flag
  const s = watch(t, gw, id)
  await waitFor(() => fake.streamConnections.length === 1, 5000, 'the upstream stream')
  fake.finish(id)
  await s.waitClosed()
  t.same(s.messages().filter(m => m.event === 'output').map(data), ['{"a":1}', ' 42', 'l\nd'], 'each token a JSON string, unchanged')
  t.ok(s.messages().filter(m => m.event === 'logs').map(data).every(l => typeof l === 'string'), 'logs events are JSON strings')

  fake.plan({ steps: 1, tokens: ['x'], outcome: 'failed', error: 'CUDA out of memory' })
  const bad = await create(gw)
  const s2 = watch(t, gw, bad)
  await waitFor(() => fake.streamConnections.length === 2, 5000, 'the second stream')
  fake.finish(bad)
  await s2.waitClosed()
  const err = s2.messages().find(m => m.event === 'stream-error')
  t.ok(err, 'the stream\'s error reached the browser')
  t.same(data(err as any), { detail: 'CUDA out of memory' }, 'as a JSON object, not a JSON string of JSON')
  t.same(events(s2).slice(-2), ['failed', 'done'])
})

t.test('5. nobody on /predictions/:id/events: the owner\'s stream still gets every status', async t => {
  const { fake, gw } = await setup(t, { fake: { plan: { steps: 2 } } })
  const user = new RawStream(gw.port, '/events', { Authorization: `Bearer ${alice}` })
  t.teardown(() => user.close())
  await waitFor(() => user.text().includes('id: '), 5000, 'user stream ready')
  const id = await create(gw)
  await waitFor(() => user.messages().some(m => m.event === 'prediction' && data(m).status === 'succeeded'), 10000, 'the end on the user stream')
  t.same(user.messages().filter(m => m.event === 'prediction').map(data).map(p => p.status), ['starting', 'processing', 'succeeded'])
  t.ok(fake.counts.get > 0, 'polled for the owner')
  await waitFor(async () => (await gw.app.store.get(`prediction:${id}:poller`)) === null, 5000, 'the poller ended')
})

t.test('6. lean frames: appended logs only, large outputs by reference, no frame past the limit', async t => {
  const big = 'data:image/png;base64,' + Buffer.alloc(900_000, 7).toString('base64') // 1.2 MB as a data: URI
  const { fake, gw } = await setup(t, { fake: { advanceOnGet: false, plan: { steps: 10, output: [big, 'https://replicate.delivery/x.txt'] } } })
  const id = await create(gw)
  const s = watch(t, gw, id)
  await s.waitMessages(1)
  for (let i = 0; i < 10; i++) {
    fake.advance(id)
    await waitFor(() => statuses(s).length >= i + 2, 5000, `step ${i + 1}`)
  }
  fake.finish(id)
  await s.waitClosed(10000)
  t.same(events(s).slice(-2), ['succeeded', 'done'], 'the final status and done arrived')
  const frames = s.text().split('\n\n')
  const largest = Math.max(...frames.map(f => Buffer.byteLength(f)))
  t.ok(largest < 256 * 1024, `largest frame ${largest} bytes`)
  const seen = statuses(s)
  const logs = fake.predictions.get(id)?.logs as string
  let rebuilt = ''
  for (const f of seen) if (f.logs !== undefined) rebuilt = rebuilt.slice(0, f.logs_offset) + f.logs
  t.equal(rebuilt, logs, 'the appended pieces add up to the full logs')
  const sent = seen.reduce((n, f) => n + (f.logs?.length ?? 0), 0)
  t.ok(sent <= logs.length * 1.5, `log text sent ${sent} for ${logs.length} of logs (each piece once)`)
  const last = seen.at(-1)
  t.same(last.output_refs, [0])
  t.equal(last.output[0], `/predictions/${id}/output/0`)
  t.equal(last.output[1], 'https://replicate.delivery/x.txt', 'small items stay inline')

  const full = await api(gw, 'GET', `/predictions/${id}`, alice)
  t.equal(full.body.logs, logs, 'GET answers the whole logs')
  const res = await fetch(`${gw.url}/predictions/${id}/output/0`, { headers: { authorization: `Bearer ${alice}` } })
  t.equal(res.status, 200)
  t.equal(res.headers.get('content-type'), 'image/png')
  t.same(Buffer.from(await res.arrayBuffer()), Buffer.alloc(900_000, 7), 'the gateway serves the decoded bytes')
  const hosted = await api(gw, 'GET', `/predictions/${id}/output/1`, alice)
  t.equal(hosted.status, 302)
  t.equal(hosted.headers.get('location'), 'https://replicate.delivery/x.txt')
  t.equal((await api(gw, 'GET', `/predictions/${id}/output/2`, alice)).status, 404)
  t.equal((await api(gw, 'GET', `/predictions/${id}/output/0`, bob)).status, 404, 'owner only')
})

t.test('7. deployments, Prefer: wait, Cancel-After, the missing fields', async t => {
  const { fake, gw } = await setup(t, { fake: { stepMs: 20, timeScale: 0.01, plan: { steps: 3 } } })
  const dep = await api(gw, 'POST', '/predictions', alice, { deployment: 'acme/painter', input: { prompt: 'x' } }, { prefer: 'wait=30' })
  t.equal(dep.status, 201)
  t.match(dep.body, { status: 'succeeded', deployment: 'acme/painter', model: 'acme/painter', version: String, started_at: String, completed_at: String, created_at: String, output: [String] },
    'Prefer: wait answers with the finished prediction')
  t.ok(fake.requests.some(r => r.route === 'create' && r.path === '/v1/deployments/acme/painter/predictions' && r.headers.prefer === 'wait=30'), 'through the deployment, with the wait')

  fake.plan({ steps: 1000 })
  const slow = await api(gw, 'POST', '/predictions', alice, { version: 'v1', input: {} }, { 'cancel-after': '10s' })
  t.equal(slow.status, 201)
  t.equal(fake.requests.find(r => r.predictionId === undefined && r.route === 'create' && r.headers['cancel-after'] !== undefined)?.headers['cancel-after'], '10s')
  const s = watch(t, gw, slow.body.id)
  await s.waitClosed(10000)
  t.same(events(s).slice(-2), ['canceled', 'done'], 'Replicate canceled it after the (scaled) 10 s')

  for (const [headers, why] of [[{ prefer: 'wait=99' }, /Prefer/], [{ 'cancel-after': 'soon' }, /Cancel-After/]] as const) {
    const bad = await api(gw, 'POST', '/predictions', alice, { version: 'v1', input: {} }, headers)
    t.equal(bad.status, 400)
    t.match(bad.body, { error: 'invalid_request', message: why })
  }
})

t.test('7. GET /predictions lists the caller\'s own, newest first, paginated', async t => {
  const { gw } = await setup(t, { fake: { advanceOnGet: false } })
  const mine: string[] = []
  for (let i = 0; i < 5; i++) mine.push(await create(gw))
  await create(gw, {}, bob)
  const page1 = await api(gw, 'GET', '/predictions?limit=2', alice)
  t.equal(page1.status, 200)
  t.same(page1.body.results.map((p: any) => p.id), [mine[4], mine[3]])
  t.match(page1.body.results[0], { status: 'starting', events_url: `/predictions/${mine[4]}/events`, created_at: String })
  const page2 = await api(gw, 'GET', page1.body.next, alice)
  t.same(page2.body.results.map((p: any) => p.id), [mine[2], mine[1]])
  const page3 = await api(gw, 'GET', page2.body.next, alice)
  t.same(page3.body.results.map((p: any) => p.id), [mine[0]])
  t.equal(page3.body.next, null)
  t.same((await api(gw, 'GET', '/predictions', bob)).body.results.length, 1, 'only one\'s own')
  t.match(await api(gw, 'GET', '/predictions?limit=0', alice), { status: 400, body: { error: 'invalid_request', message: /"limit"/ } })
  t.match(await api(gw, 'GET', '/predictions?after=..%2F', alice), { status: 400, body: { error: 'invalid_request', message: /"after"/ } })
})

t.test('7. a final record is refreshed, so data_removed shows', async t => {
  const { fake, gw } = await setup(t, { fake: { advanceOnGet: false, plan: { steps: 1 } }, replicate: { finalStaleMs: 50 } })
  const id = await create(gw)
  fake.finish(id)
  const s = watch(t, gw, id)
  await s.waitClosed()
  t.equal((await api(gw, 'GET', `/predictions/${id}/output/0`, alice)).status, 302)
  fake.removeData(id)
  await waitFor(async () => (await api(gw, 'GET', `/predictions/${id}`, alice)).body.data_removed === true, 5000, 'data_removed')
  t.match((await api(gw, 'GET', `/predictions/${id}`, alice)).body, { status: 'succeeded', data_removed: true })
  t.match(await api(gw, 'GET', `/predictions/${id}/output/0`, alice), { status: 410, body: { error: 'output_removed' } })
  t.same((await history(gw, id)).filter(m => m.event === 'done').length, 1, 'nothing published after done')
})

t.test('8. polling stops within 3 s of the last watcher; GET answers at once through 429s', async t => {
  const { fake, gw } = await setup(t, { fake: { advanceOnGet: false }, replicate: { pollIntervalMs: 1000, lockTtlMs: 2000 } })
  const id = await create(gw)
  const s = watch(t, gw, id)
  await waitFor(() => getsOf(fake, id).length >= 1, 5000, 'polling')
  s.close()
  const leftAt = Date.now()
  await waitFor(async () => (await gw.app.store.get(`prediction:${id}:poller`)) === null, 10000, 'the poller gone')
  const last = getsOf(fake, id).at(-1)?.at as number
  t.ok(last - leftAt <= 3000, `last poll ${last - leftAt} ms after the last watcher left`)
  t.ok(Date.now() - leftAt <= 3500, `poller ended ${Date.now() - leftAt} ms after`)

  fake.fail({ route: 'get', status: 429, retryAfter: 6, times: 5 })
  const started = Date.now()
  const got = await api(gw, 'GET', `/predictions/${id}`, alice)
  t.equal(got.status, 200)
  t.equal(got.body.status, 'starting')
  t.ok(Date.now() - started < 1000, `answered from the record in ${Date.now() - started} ms`)
})

t.test('8. a resuming client never sees an older state after a newer one', async t => {
  const { fake, gw } = await setup(t, { fake: { advanceOnGet: false, plan: { steps: 6 } } })
  const id = await create(gw)
  const first = watch(t, gw, id)
  await first.waitMessages(1)
  fake.advance(id)
  await waitFor(() => statuses(first).length >= 2, 5000, 'a step')
  const cursor = first.frames().filter(f => f.id !== undefined).at(-1)?.id as string
  first.close()
  for (let i = 0; i < 3; i++) fake.advance(id)
  const watcher = watch(t, gw, id)
  await waitFor(() => statuses(watcher).some(p => p.progress?.current >= 28), 5000, 'the newest step')
  watcher.close()
  const resumed = watch(t, gw, id, alice, { 'Last-Event-ID': cursor })
  await waitFor(() => statuses(resumed).some(p => p.progress?.current >= 28), 5000, 'the replay')
  const pct = statuses(resumed).map(p => p.progress?.percentage ?? 0)
  t.same(pct, [...pct].sort((a, b) => a - b), `progress only goes forward: ${pct.join(' → ')}`)
  t.equal(resumed.messages()[0].id !== undefined, true, 'no id-less snapshot before the replay')
})

t.test('issue 13: a signed webhook for a prediction the gateway never created is acknowledged and ignored', async t => {
  const { fake, gw } = await setup(t, { fake: { advanceOnGet: false } })
  const res = await fetch(`${fake.url}/predictions`, { method: 'POST', headers: { authorization: `Bearer ${fake.token}`, 'content-type': 'application/json' }, body: JSON.stringify({ version: 'v', input: {} }) })
  const foreign = await res.json() as Prediction
  const body = JSON.stringify({ ...foreign, status: 'succeeded' })
  const timestamp = Math.floor(Date.now() / 1000)
  const hook = await fetch(`${gw.url}/webhooks/replicate`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'webhook-id': 'msg_foreign', 'webhook-timestamp': String(timestamp), 'webhook-signature': signWebhook({ id: 'msg_foreign', timestamp, body, secret: fake.webhookSecret }) },
    body
  })
  t.equal(hook.status, 200, '2xx, so Replicate stops retrying')
  t.same(await history(gw, foreign.id), [], 'nothing published')
  for (const k of ['state', 'owner', 'webhook-at', 'done']) t.equal(await gw.app.store.get(`prediction:${foreign.id}:${k}`), null, `no ${k} stored`)
  t.equal(await metric(gw, 'gateway_replicate_webhooks_total', { outcome: 'unknown' }), 1)
})

t.test('issue 13: error bodies never carry upstream URLs, credentials or raw upstream text; logs strip credentials', async t => {
  const lines: string[] = []
  const sink = new Writable({ write (chunk, _enc, cb) { lines.push(String(chunk)); cb() } })
  const logger = pino(loggerOptions('warn') as any, sink)
  const { fake, gw } = await setup(t, { build: { logger: logger as any } })
  const withCreds = fake.url.replace('http://', 'http://user:s3cret-pw@')
  gw.app.config.replicate.baseUrl = withCreds
  const res = await api(gw, 'POST', '/predictions', alice, { version: 'v1', input: {} })
  t.equal(res.status, 502)
  t.same(res.body, { error: 'replicate_unreachable', message: 'Replicate could not be reached' })
  gw.app.config.replicate.baseUrl = fake.url
  fake.fail({ route: 'create', status: 500, detail: `internal error at ${fake.url}/v1/secret-path token=r8_leakedtoken` })
  const five = await api(gw, 'POST', '/predictions', alice, { version: 'v1', input: {} })
  t.same(five.body, { error: 'replicate_unavailable', message: 'Replicate is unavailable' })
  for (const r of [res, five]) t.notMatch(JSON.stringify(r.body), /s3cret|127\.0\.0\.1|secret-path|r8_/)
  await waitFor(() => lines.some(l => l.includes('replicate call failed')), 5000, 'the log lines')
  const log = lines.join('')
  t.match(log, /replicate call failed/)
  t.notMatch(log, /s3cret-pw|r8_leakedtoken/, 'no credentials in the log')
})
