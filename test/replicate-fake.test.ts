import t from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { startFakeReplicate } from '../dev/fake-replicate'
import { waitFor } from './wait'

const call = (url: string, token: string, init: { method?: string, body?: unknown } = {}): Promise<Response> => fetch(url, {
  method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
  headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
  body: init.body === undefined ? undefined : typeof init.body === 'string' ? init.body : JSON.stringify(init.body)
})

t.test('errors are problem+json, unknown routes 404, bad bodies 400/422', async t => {
  const fake = await startFakeReplicate({ models: ['acme/ok'] })
  t.teardown(() => fake.close())
  const check = async (res: Response, status: number, detail: RegExp): Promise<void> => {
    t.equal(res.status, status)
    t.match(res.headers.get('content-type'), 'application/problem+json')
    t.match(await res.json(), { status, title: String, detail })
  }
  await check(await call(`${fake.url}/predictions`, 'nope', { body: { version: 'v', input: {} } }), 401, /authentication token/)
  await check(await call(`${fake.url}/nothing`, fake.token), 404, /could not be found/)
  await check(await call(`${fake.url}/predictions`, fake.token, { body: '{nope' }), 400, /not valid JSON/)
  await check(await call(`${fake.url}/predictions`, fake.token, { body: { input: {} } }), 422, /version/)
  await check(await call(`${fake.url}/predictions`, fake.token, { body: { version: 'v', input: {}, webhook: 'ftp://x' } }), 422, /webhook/)
  await check(await call(`${fake.url}/predictions`, fake.token, { body: { version: 'v', input: {}, webhook_events_filter: ['everything'] } }), 422, /filter/)
  await check(await call(`${fake.url}/models/acme/other/predictions`, fake.token, { body: { input: {} } }), 404, /could not be found/)
  t.equal((await call(`${fake.url}/models/acme/ok/predictions`, fake.token, { body: { input: {} } })).status, 201)
  t.same(fake.counts, { create: 7, get: 0, cancel: 0, list: 0, stream: 0, other: 1 })
})

t.test('faults: 429 with Retry-After and retry_after, then normal service', async t => {
  const fake = await startFakeReplicate()
  t.teardown(() => fake.close())
  fake.fail({ status: 429, retryAfter: 4, retryAfterBody: 4, times: 2 })
  for (let i = 0; i < 2; i++) {
    const res = await call(`${fake.url}/predictions`, fake.token, { body: { version: 'v', input: {} } })
    t.equal(res.status, 429)
    t.equal(res.headers.get('retry-after'), '4')
    t.match(await res.json(), { status: 429, retry_after: 4, title: 'Request was throttled' })
  }
  t.equal((await call(`${fake.url}/predictions`, fake.token, { body: { version: 'v', input: {} } })).status, 201)
  t.same(fake.requests.map(r => r.status), [429, 429, 201])
})

t.test('plans: aborted from starting, failed with an error, queued in order', async t => {
  const fake = await startFakeReplicate()
  t.teardown(() => fake.close())
  fake.plan({ steps: 0, outcome: 'aborted' })
  fake.plan({ steps: 1, outcome: 'failed', error: 'out of memory' })
  const create = async (): Promise<any> => (await call(`${fake.url}/predictions`, fake.token, { body: { version: 'v', input: {} } })).json()
  const aborted = await create()
  const failed = await create()
  const normal = await create()
  const statuses = async (id: string): Promise<string[]> => {
    const seen: string[] = []
    for (;;) {
      const p = await (await call(`${fake.url}/predictions/${id}`, fake.token)).json() as any
      seen.push(p.status)
      if (['succeeded', 'failed', 'canceled', 'aborted'].includes(p.status)) return seen
    }
  }
  t.same(await statuses(aborted.id), ['aborted'])
  t.same(await statuses(failed.id), ['processing', 'failed'])
  t.equal(fake.predictions.get(failed.id)?.error, 'out of memory')
  t.same(await statuses(normal.id), ['processing', 'processing', 'processing', 'succeeded'])
  t.same(fake.history(normal.id).map(p => p.status), ['starting', 'processing', 'processing', 'processing', 'succeeded'])
})

t.test('stepMs: a timer moves predictions without any request', async t => {
  const fake = await startFakeReplicate({ stepMs: 5 })
  t.teardown(() => fake.close())
  const p = await (await call(`${fake.url}/predictions`, fake.token, { body: { version: 'v', input: {} } })).json() as any
  await waitFor(() => fake.predictions.get(p.id)?.status === 'succeeded', 10_000, 'the timer to finish the prediction')
  t.equal(fake.predictions.get(p.id)?.status, 'succeeded')
  const again = await (await call(`${fake.url}/predictions/${p.id}`, fake.token)).json() as any
  t.equal(again.status, 'succeeded', 'GET does not advance in timer mode')
})

t.test('the CLI prints its URL and serves', async t => {
  const child = spawn(process.execPath, [...process.execArgv, 'dev/fake-replicate-cli.ts', '--port', '0', '--token', 'cli-token'],
    { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { child.kill('SIGTERM') })
  let out = ''
  child.stdout.setEncoding('utf8')
  while (!/http:\/\/127\.0\.0\.1:\d+\/v1/.test(out)) {
    const [chunk] = await once(child.stdout, 'data')
    out += chunk
  }
  const url = /(http:\/\/127\.0\.0\.1:\d+\/v1)/.exec(out)![1]
  const res = await call(`${url}/predictions`, 'cli-token', { body: { version: 'v', input: {} } })
  t.equal(res.status, 201)
  t.ok((await res.json() as any).urls.stream, 'the CLI plan streams')
  child.kill('SIGTERM')
  const [code] = await once(child, 'exit')
  t.equal(code, 0, 'exits cleanly on SIGTERM')
})
