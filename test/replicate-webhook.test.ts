import t from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { validateWebhook } from 'replicate'
import { signWebhook, verifyWebhook } from '../src/replicate/webhook'
import { startFakeReplicate } from '../dev/fake-replicate'

const secret = 'whsec_' + Buffer.from('a test key of 24 bytes!!').toString('base64')
const body = JSON.stringify({ id: 'abc', status: 'succeeded' })
const nowMs = 1_700_000_000_000
const timestamp = String(nowMs / 1000)
const id = 'msg_1'
const signature = signWebhook({ id, timestamp, body, secret })

t.test('a good signature verifies, and the official client agrees with it', async t => {
  t.same(verifyWebhook({ id, timestamp, signature, body, secret, nowMs }), { ok: true })
  t.same(verifyWebhook({ id, timestamp, signature, body: Buffer.from(body), secret, nowMs }), { ok: true })
  t.equal(await validateWebhook({ id, timestamp, signature, body, secret }), true)
})

t.test('any one of several space-separated signatures may match', async t => {
  const other = signWebhook({ id, timestamp, body, secret: 'whsec_' + Buffer.from('another key').toString('base64') })
  t.same(verifyWebhook({ id, timestamp, signature: `${other} v2,xyz ${signature}`, body, secret, nowMs }), { ok: true })
  t.same(verifyWebhook({ id, timestamp, signature: `${other} v1,`, body, secret, nowMs }), { ok: false, reason: 'bad_signature' })
})

t.test('bad signatures are rejected', async t => {
  const bad = { ok: false, reason: 'bad_signature' }
  t.same(verifyWebhook({ id, timestamp, signature, body: body + ' ', secret, nowMs }), bad, 'body changed')
  t.same(verifyWebhook({ id: 'msg_2', timestamp, signature, body, secret, nowMs }), bad, 'id changed')
  t.same(verifyWebhook({ id, timestamp: String(Number(timestamp) + 1), signature, body, secret, nowMs }), bad, 'timestamp changed')
  t.same(verifyWebhook({ id, timestamp, signature: signature.replace('v1,', 'v1,AA'), body, secret, nowMs }), bad, 'wrong length')
  t.same(verifyWebhook({ id, timestamp, signature: 'garbage', body, secret, nowMs }), bad, 'no version')
  t.same(verifyWebhook({ id, timestamp, signature: signature.replace('v1,', 'v2,'), body, secret, nowMs }), bad, 'unknown version')
  t.throws(() => verifyWebhook({ id, timestamp, signature, body, secret: '', nowMs }), TypeError)
})

t.test('timestamps more than 5 minutes off either way are stale', async t => {
  const at = (offsetS: number): unknown => {
    const ts = String(nowMs / 1000 + offsetS)
    return verifyWebhook({ id, timestamp: ts, signature: signWebhook({ id, timestamp: ts, body, secret }), body, secret, nowMs })
  }
  t.same(at(-300), { ok: true }, 'exactly 5 minutes old is still fine')
  t.same(at(300), { ok: true })
  t.same(at(-301), { ok: false, reason: 'stale' })
  t.same(at(301), { ok: false, reason: 'stale' }, 'from the future')
  t.same(at(-3600), { ok: false, reason: 'stale' })
  t.same(verifyWebhook({ id, timestamp: String(nowMs / 1000 - 10), signature: signWebhook({ id, timestamp: nowMs / 1000 - 10, body, secret }), body, secret, nowMs, toleranceS: 5 }),
    { ok: false, reason: 'stale' }, 'tolerance is configurable')
})

t.test('missing headers and malformed timestamps', async t => {
  t.same(verifyWebhook({ id: undefined, timestamp, signature, body, secret, nowMs }), { ok: false, reason: 'missing_headers' })
  t.same(verifyWebhook({ id, timestamp: '', signature, body, secret, nowMs }), { ok: false, reason: 'missing_headers' })
  t.same(verifyWebhook({ id, timestamp, signature: null, body, secret, nowMs }), { ok: false, reason: 'missing_headers' })
  t.same(verifyWebhook({ id, timestamp: '17e8', signature, body, secret, nowMs }), { ok: false, reason: 'bad_timestamp' })
  t.same(verifyWebhook({ id, timestamp: '-5', signature, body, secret, nowMs }), { ok: false, reason: 'bad_timestamp' })
})

t.test('the fake signs the webhooks it sends over HTTP, in order, filtered', async t => {
  const received: Array<{ headers: http.IncomingHttpHeaders, body: string }> = []
  const receiver = http.createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', c => chunks.push(c))
    req.on('end', () => { received.push({ headers: req.headers, body: Buffer.concat(chunks).toString() }); res.end() })
  })
  await new Promise<void>(resolve => receiver.listen(0, '127.0.0.1', resolve))
  const hook = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`
  const fake = await startFakeReplicate({ advanceOnGet: false, webhookThrottleMs: 0 })
  t.teardown(async () => { await fake.close(); receiver.close() })

  const post = (data: unknown): Promise<Response> => fetch(`${fake.url}/predictions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${fake.token}`, 'content-type': 'application/json' },
    body: JSON.stringify(data)
  })
  const all = await (await post({ version: 'v1', input: {}, webhook: hook, webhook_events_filter: ['start', 'output', 'logs', 'completed'] })).json() as any
  const done = await (await post({ version: 'v1', input: {}, webhook: hook, webhook_events_filter: ['completed'] })).json() as any
  fake.finish(all.id)
  fake.finish(done.id)
  await fake.idle()

  t.same(received.map(r => JSON.parse(r.body)).filter(p => p.id === all.id).map(p => p.status), ['starting', 'processing', 'processing', 'processing', 'succeeded'])
  t.same(fake.webhooks.filter(w => w.predictionId === all.id).map(w => w.event), ['start', 'logs', 'logs', 'logs', 'completed'])
  t.same(fake.webhooks.filter(w => w.predictionId === done.id).map(w => w.event), ['completed'], 'filter honoured')
  for (const r of received) {
    const verdict = verifyWebhook({
      id: r.headers['webhook-id'] as string,
      timestamp: r.headers['webhook-timestamp'] as string,
      signature: r.headers['webhook-signature'] as string,
      body: r.body,
      secret: fake.webhookSecret
    })
    t.same(verdict, { ok: true })
  }

  // What a gateway's replay and stale-timestamp tests need: the same id again, an old stamp.
  const first = fake.webhooks[0]
  const replay = await fake.sendWebhook(all.id, { webhookId: first.webhookId, snapshot: fake.history(all.id)[0] })
  t.equal(replay.webhookId, first.webhookId)
  t.equal(JSON.parse(replay.body).status, 'starting', 'an old state, as an out-of-order delivery')
  const stale = await fake.sendWebhook(all.id, { timestamp: Math.floor(Date.now() / 1000) - 600 })
  t.same(verifyWebhook({ id: stale.webhookId, timestamp: String(stale.timestamp), signature: stale.signature, body: stale.body, secret: fake.webhookSecret }),
    { ok: false, reason: 'stale' })
  const forged = await fake.sendWebhook(all.id, { secret: 'whsec_' + Buffer.from('wrong').toString('base64') })
  t.same(verifyWebhook({ id: forged.webhookId, timestamp: String(forged.timestamp), signature: forged.signature, body: forged.body, secret: fake.webhookSecret }),
    { ok: false, reason: 'bad_signature' })
  t.equal(received.length, 5 + 1 + 3)
})

t.test('the fake: Replicate\'s default filter (output and completed) and its throttle of output and logs', async t => {
  const got: string[] = []
  const receiver = http.createServer((req, res) => { req.resume(); req.on('end', () => { got.push(String(req.headers['webhook-id'])); res.end() }) })
  await new Promise<void>(resolve => receiver.listen(0, '127.0.0.1', resolve))
  const hook = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`
  const fake = await startFakeReplicate({ advanceOnGet: false, plan: { steps: 5, tokens: ['a', 'b', 'c', 'd', 'e'] } })
  t.teardown(async () => { await fake.close(); receiver.close() })
  const post = async (data: unknown): Promise<any> => await (await fetch(`${fake.url}/predictions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${fake.token}`, 'content-type': 'application/json' },
    body: JSON.stringify(data)
  })).json()
  const dflt = await post({ version: 'v1', input: {}, webhook: hook })
  t.same(dflt.webhook_events_filter, ['output', 'completed'], 'no filter given: Replicate\'s default')
  t.ok(dflt.urls.stream, 'a streaming model has a stream URL without stream: true')
  const every = await post({ version: 'v1', input: {}, webhook: hook, webhook_events_filter: ['start', 'output', 'logs', 'completed'] })
  // Five steps within one throttle window: the first output/logs webhook goes, the rest wait.
  for (let i = 0; i < 5; i++) { fake.advance(dflt.id); fake.advance(every.id) }
  await fake.idle()
  t.same(fake.webhooks.filter(w => w.predictionId === dflt.id).map(w => w.event), ['output'], 'throttled: one output webhook in the window')
  t.same(fake.webhooks.filter(w => w.predictionId === every.id).map(w => w.event), ['start', 'output'])
  fake.finish(dflt.id)
  fake.finish(every.id)
  await fake.idle()
  t.same(fake.webhooks.filter(w => w.predictionId === dflt.id).map(w => w.event), ['output', 'completed'], 'completed is never throttled')
  t.same(fake.webhooks.filter(w => w.predictionId === every.id).map(w => w.event), ['start', 'output', 'completed'])
})
