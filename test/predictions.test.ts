import t, { type Test } from 'tap'
import { signWebhook } from '../src/replicate/webhook'
import type { Prediction } from '../src/replicate/types'
import { build, RawStream, waitFor, type Gateway, type SseFrame } from './helper'
import { FAST, alice, api, create, data, history, mallory, metric, setup, statuses, watch } from './prediction-fixtures'

const RANK: Record<string, number> = { starting: 0, processing: 1, succeeded: 2, failed: 2, canceled: 2, aborted: 2 }

/**
 * The logs as a watcher rebuilds them from lean frames (appended text at an offset); fails on
 * a gap or on text that would move the end backwards.
 */
function assembleLogs (t: Test, seen: any[]): string {
  let logs = ''
  for (const f of seen) {
    if (f.logs === undefined) continue
    if (f.logs_offset > logs.length) t.fail(`a gap in the logs: offset ${f.logs_offset} after ${logs.length} characters`)
    if (f.logs_offset + f.logs.length < logs.length) t.fail('logs went back')
    logs = logs.slice(0, f.logs_offset) + f.logs
  }
  return logs
}

function neverRegresses (t: Test, seen: any[]): void {
  for (let i = 1; i < seen.length; i++) {
    if (RANK[seen[i].status] < RANK[seen[i - 1].status]) t.fail(`status went back: ${seen[i - 1].status} -> ${seen[i].status}`)
    const p = seen[i].progress?.percentage
    const q = seen[i - 1].progress?.percentage
    if (p !== undefined && q !== undefined && p < q) t.fail(`progress went back: ${q} -> ${p}`)
  }
  assembleLogs(t, seen)
}

async function postWebhook (gw: Gateway, snapshot: Prediction, o: { id?: string, timestamp?: number, secret: string }): Promise<{ status: number, body: any }> {
  const body = JSON.stringify(snapshot)
  const id = o.id ?? `msg_${Math.random().toString(36).slice(2)}`
  const timestamp = o.timestamp ?? Math.floor(Date.now() / 1000)
  const res = await fetch(`${gw.url}/webhooks/replicate`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'webhook-id': id, 'webhook-timestamp': String(timestamp), 'webhook-signature': signWebhook({ id, timestamp, body, secret: o.secret }) },
    body
  })
  return { status: res.status, body: await res.json() }
}



t.test('create, watch to the end: progress from tqdm logs, done last, owner channel, GET', async t => {
  const { fake, gw } = await setup(t, { fake: { plan: { steps: 4 } } })
  const user = new RawStream(gw.port, '/events', { Authorization: `Bearer ${alice}` })
  t.teardown(() => user.close())
  await user.waitMessages(0)
  await waitFor(() => user.text().includes('id: '), 5000, 'user stream ready')

  const res = await api(gw, 'POST', '/predictions', alice, { version: 'v1', input: { prompt: 'a cat' } })
  t.equal(res.status, 201)
  t.match(res.body, { id: /^[a-z0-9]+$/, status: 'starting', events_url: `/predictions/${res.body.id}/events` })
  const id = res.body.id as string

  const s = watch(t, gw, id)
  await s.waitClosed(15000)
  t.equal(s.status, 200)
  t.match(s.headers['content-type'], 'text/event-stream')
  const msgs = s.messages()
  t.equal(msgs[0].event, 'status', 'the latest state comes first')
  t.equal(msgs[0].id, undefined, 'the prelude carries no id')
  t.equal(msgs.at(-1)?.event, 'done', 'done is last')
  t.same(data(msgs.at(-1) as SseFrame), { id, status: 'succeeded' })
  t.equal(msgs.filter(m => m.event === 'done').length, 1, 'done once')
  const seen = statuses(s)
  neverRegresses(t, seen)
  const mid = seen.find(p => p.status === 'processing' && p.progress !== null)
  t.ok(mid, 'a processing update with progress')
  t.match(mid.progress, { total: 50 })
  t.ok(mid.progress.percentage > 0 && mid.progress.percentage < 1, `progress in (0, 1): ${mid.progress.percentage}`)
  const last = seen.at(-1)
  t.match(last, { id, status: 'succeeded', progress: { percentage: 1, current: 50, total: 50 }, output: [String], metrics: { predict_time: Number } })

  const got = await api(gw, 'GET', `/predictions/${id}`, alice)
  t.equal(got.status, 200)
  t.match(got.body, { id, status: 'succeeded', progress: { percentage: 1 }, output: [String], events_url: `/predictions/${id}/events` })

  await waitFor(() => user.messages().filter(m => m.event === 'prediction').length >= 3, 5000, 'owner channel updates')
  t.same(user.messages().filter(m => m.event === 'prediction').map(data), [
    { id, status: 'starting' }, { id, status: 'processing' }, { id, status: 'succeeded' }
  ], 'a short event per status change on user:<sub>')
  await waitFor(async () => (await gw.app.store.get(`prediction:${id}:poller`)) === null, 5000, 'the poller lock released')
  const gets = fake.counts.get
  t.ok(gets >= 5, `polled ${gets} times`)
  t.ok(await metric(gw, 'gateway_replicate_calls_total', { operation: 'create', outcome: 'ok' }) === 1)
  t.ok(await metric(gw, 'gateway_replicate_calls_total', { operation: 'get', outcome: 'ok' }) >= 5)
})

t.test('anyone but the owner gets 404 on every route, like an unknown id', async t => {
  const { fake, gw } = await setup(t, { fake: { advanceOnGet: false } })
  const id = await create(gw)
  const unknown = await api(gw, 'GET', '/predictions/doesnotexist0000', alice)
  t.same(unknown, { status: 404, body: { error: 'not_found', message: 'prediction not found' } })
  for (const [method, path] of [['GET', `/predictions/${id}`], ['POST', `/predictions/${id}/cancel`], ['GET', `/predictions/${id}/events`]]) {
    t.same(await api(gw, method, path, mallory), unknown, `${method} ${path}`)
  }
  const s = watch(t, gw, id, mallory)
  await s.waitHead()
  t.equal(s.status, 404, 'the SSE route too')
  t.equal((await api(gw, 'GET', `/predictions/${id}`)).status, 401, 'no token is 401')
  t.equal((await api(gw, 'GET', '/predictions/..%2Fetc', alice)).status, 404)
  t.equal(fake.counts.cancel, 0, 'nothing reached Replicate for them')
  t.equal(fake.predictions.get(id)?.status, 'starting')
})

t.test('validation 400 names the field; disallowed model 403; Replicate refusals mapped', async t => {
  const { fake, gw } = await setup(t, { env: { REPLICATE_MODELS: 'acme/ok,owner/pinned:abc123' } })
  const bad = async (body: unknown, field: RegExp): Promise<void> => {
    const res = await api(gw, 'POST', '/predictions', alice, body)
    t.equal(res.status, 400, JSON.stringify(body))
    t.match(res.body, { error: 'invalid_request', message: field })
  }
  await bad([], /JSON object/)
  await bad({ input: {} }, /"version", "model" or "deployment"/)
  await bad({ version: 'v', model: 'acme/ok', input: {} }, /"version", "model" or "deployment"/)
  await bad({ version: '', input: {} }, /"version"/)
  await bad({ model: 7, input: {} }, /"model"/)
  await bad({ model: 'acme/ok' }, /"input"/)
  await bad({ model: 'acme/ok', input: [] }, /"input"/)
  await bad({ model: 'acme/ok', input: {}, webhook_events: ['everything'] }, /"webhook_events"/)
  await bad({ model: 'acme/ok', input: {}, webhook_events_filter: [] }, /"webhook_events_filter"/)
  await bad({ model: 'acme/ok', input: {}, stream: 'yes' }, /"stream"/)
  const forbidden = await api(gw, 'POST', '/predictions', alice, { model: 'acme/other', input: {} })
  t.same(forbidden, { status: 403, body: { error: 'forbidden_model', message: 'model "acme/other" is not allowed on this gateway' } })
  t.equal((await api(gw, 'POST', '/predictions', alice, { version: 'owner/pinned:zzz', input: {} })).status, 403, 'another version of a pinned model')
  t.equal((await api(gw, 'POST', '/predictions', alice, { version: 'owner/pinned:abc123', input: {} })).status, 201, 'the pinned version')
  t.equal((await api(gw, 'POST', '/predictions', alice, { model: 'acme/ok', input: {} })).status, 201, 'an allowed model')
  t.equal(fake.counts.create, 2, 'only allowed requests reached Replicate')

  fake.fail({ route: 'create', status: 402, detail: 'You have insufficient credit' })
  t.same(await api(gw, 'POST', '/predictions', alice, { model: 'acme/ok', input: {} }),
    { status: 502, body: { error: 'replicate_payment_required', message: 'the Replicate account cannot pay for this prediction' } })
  fake.fail({ route: 'create', status: 422, detail: '- input.prompt: required' })
  t.same(await api(gw, 'POST', '/predictions', alice, { model: 'acme/ok', input: {} }),
    { status: 422, body: { error: 'replicate_invalid_input', message: 'Replicate rejected the request as invalid' } },
    'Replicate\'s own text stays out of the answer')
  t.equal(await metric(gw, 'gateway_replicate_calls_total', { operation: 'create', outcome: 'error' }), 2)

  const bare = await build(t, { BATCH_WINDOW_MS: '10' }, { replicate: FAST })
  const nc = await api(bare, 'POST', '/predictions', alice, { model: 'acme/ok', input: {} })
  t.equal(nc.status, 501)
  t.equal(nc.body.error, 'not_configured')
  t.equal((await api(bare, 'POST', '/webhooks/replicate', undefined, {})).body.error, 'not_configured')
})

t.test('webhooks: bad signature, stale timestamp, replayed id, missing headers are 401 and publish nothing', async t => {
  const { fake, gw } = await setup(t, { fake: { advanceOnGet: false } })
  const id = await create(gw)
  fake.advance(id)
  const snapshot = structuredClone(fake.predictions.get(id) as Prediction)
  const before = (await history(gw, id)).length
  t.equal(before, 1, 'the create published the first status')

  const other = 'whsec_' + Buffer.from('not the real key at all').toString('base64')
  t.same(await postWebhook(gw, snapshot, { secret: other }), { status: 401, body: { error: 'invalid_webhook', message: 'bad_signature' } })
  t.same(await postWebhook(gw, snapshot, { secret: fake.webhookSecret, timestamp: Math.floor(Date.now() / 1000) - 600 }),
    { status: 401, body: { error: 'invalid_webhook', message: 'stale' } })
  const noHeaders = await fetch(`${gw.url}/webhooks/replicate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(snapshot) })
  t.equal(noHeaders.status, 401)
  t.same(await noHeaders.json(), { error: 'invalid_webhook', message: 'missing_headers' })
  // The body is part of the signature: the same headers over other bytes fail.
  const tampered = await fetch(`${gw.url}/webhooks/replicate`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'webhook-id': 'msg_x', 'webhook-timestamp': String(Math.floor(Date.now() / 1000)), 'webhook-signature': signWebhook({ id: 'msg_x', timestamp: Math.floor(Date.now() / 1000), body: JSON.stringify(snapshot), secret: fake.webhookSecret }) },
    body: JSON.stringify({ ...snapshot, status: 'succeeded' })
  })
  t.equal(tampered.status, 401)
  t.equal((await history(gw, id)).length, before, 'nothing published')

  t.same(await postWebhook(gw, snapshot, { secret: fake.webhookSecret, id: 'msg_once' }), { status: 200, body: { ok: true } })
  t.equal((await history(gw, id)).length, before + 1, 'a valid one publishes')
  const redelivery = await postWebhook(gw, snapshot, { secret: fake.webhookSecret, id: 'msg_once' })
  t.same(redelivery, { status: 200, body: { ok: true } }, 'Replicate redelivering the same message is acknowledged...')
  t.equal((await history(gw, id)).length, before + 1, '...and not applied again')
  const replay = await postWebhook(gw, { ...snapshot, logs: `${snapshot.logs ?? ''}more\n` }, { secret: fake.webhookSecret, id: 'msg_once' })
  t.same(replay, { status: 401, body: { error: 'invalid_webhook', message: 'replayed' } }, 'other bytes under a used id are refused')
  t.equal((await history(gw, id)).length, before + 1, 'the replay published nothing')

  // Replicate's own deliveries, signed by the fake, to the gateway.
  const d = await fake.sendWebhook(id, { url: `${gw.url}/webhooks/replicate` })
  t.equal(d.responseStatus, 200, 'a genuine delivery of an unchanged state is accepted')
  for (const [outcome, n] of Object.entries({ bad_signature: 2, stale_timestamp: 1, missing_headers: 1, redelivered: 1, replayed: 1, ok: 1, duplicate: 1 })) {
    t.equal(await metric(gw, 'gateway_replicate_webhooks_total', { outcome }), n, `webhooks{outcome=${outcome}}`)
  }
})

t.test('duplicate and out-of-order webhooks never regress the state', async t => {
  // No background refresh on GET here: only the webhooks may move the record.
  const { fake, gw } = await setup(t, { fake: { advanceOnGet: false, plan: { steps: 3 } }, replicate: { staleMs: 60_000 } })
  const id = await create(gw)
  fake.finish(id)
  const h = fake.history(id) // starting, processing x3, succeeded
  t.same(h.map(p => p.status), ['starting', 'processing', 'processing', 'processing', 'succeeded'])
  const secret = fake.webhookSecret
  const send = async (p: Prediction): Promise<number> => (await postWebhook(gw, p, { secret })).status

  t.equal(await send(h[2]), 200)
  t.equal(await send(h[1]), 200, 'an older processing (shorter logs) is acknowledged...')
  t.match((await api(gw, 'GET', `/predictions/${id}`, alice)).body, { status: 'processing', logs: h[2].logs }, '...and ignored')
  t.equal(await send(h[4]), 200)
  t.equal(await send(h[3]), 200, 'processing after succeeded')
  t.equal(await send(h[0]), 200, 'starting after succeeded')
  t.equal(await send(h[4]), 200, 'the same final state again, under a new webhook id')
  const got = await api(gw, 'GET', `/predictions/${id}`, alice)
  t.match(got.body, { status: 'succeeded', output: h[4].output })

  const msgs = await history(gw, id)
  t.same(msgs.map(m => m.event === 'status' ? m.data.status : m.event), ['starting', 'processing', 'succeeded', 'done'],
    'published: each step forward once, then done once')
  t.equal(await metric(gw, 'gateway_replicate_webhooks_total', { outcome: 'ok' }), 2)
  t.equal(await metric(gw, 'gateway_replicate_webhooks_total', { outcome: 'stale' }), 3)
  t.equal(await metric(gw, 'gateway_replicate_webhooks_total', { outcome: 'duplicate' }), 1)

  // A joiner after the end gets the final state and done at once.
  const late = watch(t, gw, id)
  await late.waitClosed()
  t.same(late.messages().map(m => m.event), ['status', 'done'])
  t.match(data(late.messages()[0]), { status: 'succeeded', output: h[4].output })
})

t.test('a 429 storm respects Retry-After; watchers see upstream: "retrying"', async t => {
  const { fake, gw } = await setup(t, { fake: { plan: { steps: 2 } } })
  const id = await create(gw)
  fake.fail({ route: 'get', status: 429, retryAfter: '0.3', times: 3 })
  const s = watch(t, gw, id)
  await s.waitClosed(15000)
  const gets = fake.requests.filter(r => r.route === 'get')
  t.same(gets.slice(0, 4).map(r => r.status), [429, 429, 429, 200])
  for (let i = 1; i <= 3; i++) {
    const gap = gets[i].at - gets[i - 1].at
    t.ok(gap >= 280, `retry ${i} waited ${gap} ms after a Retry-After of 300 ms`)
  }
  const seen = statuses(s)
  const retrying = seen.filter(p => p.upstream === 'retrying')
  t.ok(retrying.length >= 1, `watchers were told (${retrying.length} notices)`)
  t.match(retrying[0], { id, status: 'starting', reason: 'rate_limited', retry_in_ms: 300 })
  const after = seen.slice(seen.indexOf(retrying.at(-1)) + 1)
  t.ok(after.length > 0 && after.every(p => p.upstream === undefined), 'plain updates once the upstream answers')
  t.equal(s.messages().at(-1)?.event, 'done')
  t.ok(await metric(gw, 'gateway_replicate_calls_total', { operation: 'get', outcome: 'retry' }) >= 3)

  // 5xx: exponential backoff, same notice.
  const id2 = await create(gw)
  fake.fail({ route: 'get', status: 503, times: 2 })
  const s2 = watch(t, gw, id2)
  await s2.waitClosed(15000)
  t.match(statuses(s2).find(p => p.upstream === 'retrying'), { reason: 'server_error' })
  t.equal(s2.messages().at(-1)?.event, 'done')
})

t.test('aborted ends the stream with done and stops polling', async t => {
  const { fake, gw } = await setup(t)
  fake.plan({ steps: 0, outcome: 'aborted' })
  const id = await create(gw)
  const s = watch(t, gw, id)
  await s.waitClosed()
  t.same(s.messages().map(m => m.event === 'status' ? data(m).status : m.event), ['starting', 'aborted', 'done'])
  await waitFor(async () => (await gw.app.store.get(`prediction:${id}:poller`)) === null, 5000, 'the lock released')
  const gets = fake.counts.get
  t.equal(gw.app.predictions.pollerCount, 0)
  // A fresh watcher of a finished prediction gets the end at once and costs Replicate nothing.
  const again = watch(t, gw, id)
  await again.waitClosed()
  t.same(again.messages().map(m => m.event), ['status', 'done'])
  t.equal(fake.counts.get, gets, 'no poll after the end')
})

t.test('cancel works: Replicate cancels, watchers get canceled then done', async t => {
  const { fake, gw } = await setup(t, { fake: { advanceOnGet: false } })
  const id = await create(gw)
  const s = watch(t, gw, id)
  await s.waitMessages(1)
  fake.advance(id)
  await waitFor(() => statuses(s).some(p => p.status === 'processing'), 5000, 'processing')
  const res = await api(gw, 'POST', `/predictions/${id}/cancel`, alice)
  t.equal(res.status, 200)
  t.match(res.body, { id, status: 'canceled' })
  t.equal(fake.counts.cancel, 1)
  t.equal(fake.predictions.get(id)?.status, 'canceled')
  await s.waitClosed()
  t.same(s.messages().slice(-2).map(m => m.event === 'status' ? data(m).status : m.event), ['canceled', 'done'])
  t.equal(await metric(gw, 'gateway_replicate_calls_total', { operation: 'cancel', outcome: 'ok' }), 1)
  const again = await api(gw, 'POST', `/predictions/${id}/cancel`, alice)
  t.match(again, { status: 200, body: { status: 'canceled' } }, 'cancelling twice is harmless')
})

t.test('a late joiner gets the latest state first, then live updates', async t => {
  const { fake, gw } = await setup(t, { fake: { advanceOnGet: false, plan: { steps: 4 } } })
  const id = await create(gw)
  const first = watch(t, gw, id)
  await first.waitMessages(1)
  fake.advance(id)
  fake.advance(id)
  await waitFor(() => statuses(first).some(p => p.progress?.current === 20), 5000, 'the second step')
  const latest = statuses(first).at(-1)

  const late = watch(t, gw, id)
  await late.waitMessages(1)
  const head = late.messages()[0]
  t.equal(head.event, 'status')
  t.same(data(head), latest, 'the first frame is the latest state')
  t.match(data(head), { status: 'processing', progress: { current: 20, total: 50 } })

  fake.finish(id)
  await Promise.all([first.waitClosed(), late.waitClosed()])
  for (const s of [first, late]) {
    t.same(s.messages().slice(-2).map(m => m.event === 'status' ? data(m).status : m.event), ['succeeded', 'done'])
  }
  neverRegresses(t, statuses(late))
})

t.test('a status webhook reaches watchers at once, poller or not', async t => {
  const { fake, gw } = await setup(t, { fake: { advanceOnGet: false }, env: { PUBLIC_URL: 'http://127.0.0.1:1' } })
  // The gateway's own address is known only now; the fake sends Replicate's webhooks there.
  gw.app.config.replicate.publicUrl = gw.url
  const id = await create(gw)
  t.equal(fake.predictions.get(id)?.webhook, `${gw.url}/webhooks/replicate`, 'created with a webhook to the gateway')
  const s = watch(t, gw, id)
  await s.waitMessages(1)
  fake.finish(id)
  await fake.idle()
  await s.waitClosed()
  t.ok(fake.webhooks.length >= 2 && fake.webhooks.every(w => w.responseStatus === 200), `${fake.webhooks.length} webhooks accepted`)
  t.same(s.messages().slice(-2).map(m => m.event === 'status' ? data(m).status : m.event), ['succeeded', 'done'])
  t.equal(s.messages().filter(m => m.event === 'done').length, 1)
})
