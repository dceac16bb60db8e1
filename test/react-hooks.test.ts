import t, { type Test } from 'tap'
import { execFileSync } from 'node:child_process'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import type * as ReactTypes from 'react'
import type * as RtlTypes from '@testing-library/react'
import type * as HooksTypes from '../client/react'
import type { GatewayEvent } from '../client/index'
import { startFakeReplicate, type FakeReplicate, type Plan } from '../dev/fake-replicate'
import { build, publish, sign, waitFor, type Gateway } from './helper'

// A DOM before react-dom loads (it looks for one when it is first required), so React, the
// testing library and the hooks are required below, not imported.
/* eslint-disable @typescript-eslint/no-require-imports */
// jsdom ships no types (and @types/jsdom is not installed): the little used here, typed by hand.
const { JSDOM } = require('jsdom') as { JSDOM: new (html: string, o: { url: string }) => { window: Window } }
const dom = new JSDOM('<!doctype html><html><body></body></html>', { url: 'http://localhost/' })
const g = globalThis as Record<string, unknown>
for (const name of ['window', 'document', 'navigator', 'Node', 'Element', 'HTMLElement', 'Text', 'DocumentFragment', 'getComputedStyle']) {
  if (g[name] === undefined) g[name] = (dom.window as unknown as Record<string, unknown>)[name]
}
const React = require('react') as typeof ReactTypes
const { render } = require('@testing-library/react') as typeof RtlTypes
const { useEventStream, usePrediction } = require('../client/react') as typeof HooksTypes
/* eslint-enable @typescript-eslint/no-require-imports */
const h = React.createElement

// Every fetch the hooks make, so a test can count the streams that were opened.
const realFetch = globalThis.fetch
const fetches: string[] = []
let pending = 0 // requests not answered yet (a stream counts as answered once it is open)
globalThis.fetch = (input: RequestInfo | URL, init?: RequestInit) => {
  fetches.push(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url)
  pending++
  const answered = realFetch(input, init)
  answered.then(() => { pending-- }, () => { pending-- })
  return answered
}
t.teardown(() => { globalThis.fetch = realFetch })
const streamsOpened = (prefix: string): number => fetches.filter((u) => u.startsWith(prefix)).length

const reader = sign({ sub: 'alice', channels: ['topic:*'] })

/** A loopback SSE server whose every answer the test writes itself. */
async function sseServer (t: Test): Promise<{ url: string, requests: Array<{ req: IncomingMessage, res: ServerResponse }> }> {
  const requests: Array<{ req: IncomingMessage, res: ServerResponse }> = []
  const server = createServer((req, res) => { requests.push({ req, res }) })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/events`, requests }
}

function openSse (res: ServerResponse): void {
  res.writeHead(200, { 'content-type': 'text/event-stream' })
  res.write(': hello\n\n')
}

function last<T> (list: T[]): T {
  return list[list.length - 1]
}

t.test('useEventStream: idle, connecting, open, retrying, open, closed with the error', async (t) => {
  const srv = await sseServer(t)
  const seen: HooksTypes.EventStreamState[] = []
  function Probe ({ enabled }: { enabled: boolean }) {
    const s = useEventStream({ url: srv.url, token: 'tok', enabled, retryDelay: () => 10 })
    const snap = { status: s.status, lastEvent: s.lastEvent, error: s.error }
    if (seen.length === 0 || last(seen).status !== snap.status || last(seen).error !== snap.error) seen.push(snap)
    return h('p', null, s.status)
  }
  const view = render(h(Probe, { enabled: false }))
  t.equal(last(seen).status, 'idle')
  t.equal(srv.requests.length, 0, 'nothing opened while disabled')

  view.rerender(h(Probe, { enabled: true }))
  await waitFor(() => srv.requests.length === 1, 5000, 'the first request')
  t.equal(last(seen).status, 'connecting')
  t.equal(srv.requests[0].req.headers.authorization, 'Bearer tok')
  openSse(srv.requests[0].res)
  await waitFor(() => last(seen).status === 'open', 5000, 'open')

  srv.requests[0].res.end() // the server ends the stream: the client retries
  await waitFor(() => last(seen).status === 'retrying', 5000, 'retrying')
  t.equal(last(seen).error?.code, 'stream_ended', 'the retry says why')
  await waitFor(() => srv.requests.length === 2, 5000, 'the retry')
  openSse(srv.requests[1].res)
  await waitFor(() => last(seen).status === 'open', 5000, 'open again')
  t.equal(last(seen).error, null, 'the error is cleared when the stream is back')

  srv.requests[1].res.end()
  await waitFor(() => srv.requests.length === 3, 5000, 'another retry')
  srv.requests[2].res.writeHead(401, { 'content-type': 'application/json' })
  srv.requests[2].res.end(JSON.stringify({ error: 'unauthorized', message: 'token expired' }))
  await waitFor(() => last(seen).status === 'closed', 5000, 'closed')
  t.same(seen.map((s) => s.status), ['idle', 'connecting', 'open', 'retrying', 'open', 'retrying', 'closed'])
  t.equal(last(seen).error?.code, 'unauthorized')
  t.equal(last(seen).error?.status, 401)
  t.match(view.container.textContent, 'closed')
  view.unmount()
})

t.test('useEventStream against the gateway: events arrive, unmount closes the stream', async (t) => {
  const gw = await build(t, { BATCH_WINDOW_MS: '0' })
  const events: GatewayEvent[] = []
  function Feed () {
    const { status, lastEvent, error } = useEventStream<{ n: number }>({
      url: `${gw.url}/events`, token: reader, channels: ['topic:feed'], onEvent: (e) => events.push(e)
    })
    return h('p', null, `${status} ${lastEvent === null ? '-' : String(lastEvent.data.n)} ${error === null ? '' : error.code}`)
  }
  const view = render(h(Feed))
  await waitFor(() => view.container.textContent === 'open - ', 5000, 'open')
  await waitFor(() => gw.app.hub.connections.size === 1, 5000, 'the gateway holds the stream')
  for (let n = 1; n <= 3; n++) t.equal((await publish(gw.url, { channel: 'topic:feed', event: 'note', data: { n } })).status, 202)
  await waitFor(() => view.container.textContent === 'open 3 ', 5000, 'the last event')
  t.same(events.map((e) => [e.type, e.data]), [['note', { n: 1 }], ['note', { n: 2 }], ['note', { n: 3 }]], 'onEvent saw every event')
  view.unmount()
  await waitFor(() => gw.app.hub.connections.size === 0, 5000, 'the stream to close after unmount')
  t.pass('closed')
})

t.test('StrictMode opens exactly one stream', async (t) => {
  const gw = await build(t, { BATCH_WINDOW_MS: '0' })
  const before = streamsOpened(`${gw.url}/events`)
  let effects = 0
  function Feed () {
    React.useEffect(() => { effects++ }, [])
    const { status, lastEvent } = useEventStream({ url: `${gw.url}/events`, token: reader, channels: ['topic:strict'] })
    return h('p', null, `${status} ${lastEvent === null ? '-' : JSON.stringify(lastEvent.data)}`)
  }
  const view = render(h(React.StrictMode, null, h(Feed)))
  await waitFor(() => view.container.textContent === 'open -', 5000, 'open')
  t.equal(effects, 2, 'StrictMode did mount, unmount and mount again')
  await publish(gw.url, { channel: 'topic:strict', data: { hello: 1 } })
  await waitFor(() => view.container.textContent === 'open {"hello":1}', 5000, 'the event')
  t.equal(streamsOpened(`${gw.url}/events`) - before, 1, 'one request')
  t.equal(gw.app.hub.connections.size, 1, 'one stream at the gateway')
  view.unmount()
  await waitFor(() => gw.app.hub.connections.size === 0, 5000, 'closed after unmount')
})

t.test('components asking for the same stream share one connection', async (t) => {
  const gw = await build(t, { BATCH_WINDOW_MS: '0' })
  const before = streamsOpened(`${gw.url}/events`)
  function Feed ({ name, channels }: { name: string, channels: string[] }) {
    const { status, lastEvent } = useEventStream({ url: `${gw.url}/events`, token: reader, channels })
    return h('p', { 'data-name': name }, `${name}:${status}:${lastEvent === null ? '-' : String(lastEvent.data)}`)
  }
  const both = (a: boolean) => h('div', null,
    a ? h(Feed, { name: 'a', channels: ['topic:x', 'topic:y'] }) : null,
    h(Feed, { name: 'b', channels: ['topic:y', 'topic:x'] }))
  const view = render(both(true))
  await waitFor(() => view.container.textContent === 'a:open:-b:open:-', 5000, 'both open')
  await publish(gw.url, { channel: 'topic:x', data: 'one' })
  await waitFor(() => view.container.textContent === 'a:open:oneb:open:one', 5000, 'both see the event')
  t.equal(streamsOpened(`${gw.url}/events`) - before, 1, 'one request for both')
  t.equal(gw.app.hub.connections.size, 1, 'one stream at the gateway')

  view.rerender(both(false)) // one of them unmounts: the other keeps the stream
  await publish(gw.url, { channel: 'topic:y', data: 'two' })
  await waitFor(() => view.container.textContent === 'b:open:two', 5000, 'the other still receives')
  t.equal(gw.app.hub.connections.size, 1, 'still one stream')
  t.equal(streamsOpened(`${gw.url}/events`) - before, 1, 'and no new request')

  view.unmount() // the last one leaves: closed
  await waitFor(() => gw.app.hub.connections.size === 0, 5000, 'closed after the last unmount')
  t.pass('closed')
})

t.test('a component re-renders only when what it reads changes', async (t) => {
  const gw = await build(t, { BATCH_WINDOW_MS: '0' })
  const renders = { status: 0, event: 0 }
  let shown = ''
  function StatusBadge () {
    renders.status++
    const { status } = useEventStream({ url: `${gw.url}/events`, token: reader, channels: ['topic:r'] })
    return h('b', null, status)
  }
  function LastEvent () {
    renders.event++
    const { lastEvent } = useEventStream<number>({ url: `${gw.url}/events`, token: reader, channels: ['topic:r'] })
    shown = lastEvent === null ? '-' : String(lastEvent.data)
    return h('i', null, shown)
  }
  const view = render(h('div', null, h(StatusBadge), h(LastEvent)))
  await waitFor(() => view.container.querySelector('b')?.textContent === 'open', 5000, 'open')
  await waitFor(() => gw.app.hub.connections.size === 1, 5000, 'attached')
  const badgeRenders = renders.status
  for (let n = 1; n <= 5; n++) {
    await publish(gw.url, { channel: 'topic:r', data: n })
    await waitFor(() => shown === String(n), 5000, `event ${n}`)
  }
  t.equal(renders.status, badgeRenders, 'the status badge did not re-render for events')
  t.ok(renders.event >= 5, `the event reader re-rendered for them (${renders.event})`)
  view.unmount()
  await waitFor(() => gw.app.hub.connections.size === 0, 5000, 'closed')
})

t.test('a malformed frame is reported in error and the stream carries on', async (t) => {
  const srv = await sseServer(t)
  const events: GatewayEvent[] = []
  let state: HooksTypes.EventStreamState = { status: 'idle', lastEvent: null, error: null }
  function Probe () {
    const s = useEventStream({ url: srv.url, token: 'tok', onEvent: (e) => events.push(e) })
    state = { status: s.status, lastEvent: s.lastEvent, error: s.error }
    return null
  }
  const view = render(h(Probe))
  await waitFor(() => srv.requests.length === 1, 5000, 'the request')
  const res = srv.requests[0].res
  openSse(res)
  res.write('id: 1\ndata: {"n":1}\n\n')
  await waitFor(() => state.lastEvent?.id === '1', 5000, 'the first event')
  res.write('id: 2\nevent: note\ndata: {"n":2,\n\n')
  await waitFor(() => state.error !== null, 5000, 'the error')
  t.equal(state.error?.code, 'malformed_json')
  t.equal(state.error?.raw, '{"n":2,')
  t.equal(state.status, 'open', 'still open')
  t.same(state.lastEvent?.data, { n: 1 }, 'lastEvent keeps the last good event')
  res.write('id: 3\ndata: {"n":3}\n\n')
  await waitFor(() => state.lastEvent?.id === '3', 5000, 'the next event on the same stream')
  t.same(state.lastEvent?.data, { n: 3 })
  t.equal(state.status, 'open')
  t.equal(srv.requests.length, 1, 'no reconnect')
  t.same(events.map((e) => [e.id, e.error?.code ?? 'ok']), [['1', 'ok'], ['2', 'malformed_json'], ['3', 'ok']], 'onEvent saw all three')
  view.unmount()
  await waitFor(() => srv.requests[0].res.destroyed || srv.requests[0].req.destroyed, 5000, 'the request to be aborted')
})

t.test('getToken is called again before reconnecting after auth-expired', async (t) => {
  const gw = await build(t, { BATCH_WINDOW_MS: '0' })
  const issued: string[] = []
  const getToken = async (): Promise<string> => {
    const token = sign({ sub: 'alice', channels: ['topic:*'], n: issued.length }, { ttlS: issued.length === 0 ? 2 : 3600 })
    issued.push(token)
    return token
  }
  let state: HooksTypes.EventStreamState<unknown> = { status: 'idle', lastEvent: null, error: null }
  const statuses: string[] = []
  function Probe () {
    const s = useEventStream({ url: `${gw.url}/events`, getToken, channels: ['topic:auth'] })
    state = { status: s.status, lastEvent: s.lastEvent, error: s.error }
    if (statuses[statuses.length - 1] !== s.status) statuses.push(s.status)
    return null
  }
  const view = render(h(Probe))
  await waitFor(() => state.status === 'open' && gw.app.hub.connections.size === 1, 5000, 'open')
  t.equal(issued.length, 1)
  await waitFor(() => issued.length === 2, 10000, 'a second token after the first expired')
  await waitFor(() => state.status === 'open' && gw.app.hub.connections.size === 1, 5000, 'open again')
  await publish(gw.url, { channel: 'topic:auth', data: 'after' })
  await waitFor(() => state.lastEvent?.data === 'after', 5000, 'an event on the new stream')
  t.equal(state.status, 'open')
  t.notOk(statuses.includes('closed'), `never closed: ${statuses.join(' → ')}`)
  view.unmount()
  await waitFor(() => gw.app.hub.connections.size === 0, 5000, 'closed')
})

// --- usePrediction, against the gateway's prediction routes and the fake Replicate ----------

async function predictionGateway (t: Test, env: Record<string, string> = {}): Promise<{ gw: Gateway, fake: FakeReplicate }> {
  const fake = await startFakeReplicate()
  // Teardowns run last-in first-out: the gateway (and its pollers) stops before the fake it polls.
  t.teardown(() => fake.close())
  const gw = await build(t, {
    REPLICATE_API_TOKEN: fake.token,
    REPLICATE_BASE_URL: fake.url,
    BATCH_WINDOW_MS: '0',
    ...env
  }, { replicate: { pollIntervalMs: 30, lockTtlMs: 600, retryBaseDelayMs: 20, streamGraceMs: 1000 } })
  // A test ends only when every request the hooks made has been answered (a cancel sent on its
  // own by start(), say), so the gateway never closes under a request still in flight.
  t.teardown(() => waitFor(() => pending === 0, 10000, 'the hooks\' requests to be answered'))
  return { gw, fake }
}

type Result = HooksTypes.UsePredictionResult

function predictionProbe (options: HooksTypes.UsePredictionOptions) {
  const probe: { api: Result | null, statuses: string[], seen: Array<Omit<Result, 'start' | 'cancel' | 'reset'>> } = { api: null, statuses: [], seen: [] }
  function Probe () {
    const p = usePrediction(options)
    probe.api = p
    const { start: _s, cancel: _c, reset: _r, ...state } = p
    probe.seen.push(state)
    if (probe.statuses[probe.statuses.length - 1] !== p.status) probe.statuses.push(p.status)
    return h('p', null, p.status)
  }
  const now = () => last(probe.seen)
  return { probe, Probe, now }
}

t.test('usePrediction: start, progress, output, succeeded', async (t) => {
  const { gw, fake } = await predictionGateway(t)
  fake.plan({ steps: 4, tokens: ['a', 'b', 'c', 'd'] })
  const { probe, Probe, now } = predictionProbe({ baseUrl: gw.url, token: sign({ sub: 'alice' }), model: 'owner/painter' })
  const view = render(h(Probe))
  t.equal(now().status, 'idle')
  const id = await probe.api!.start({ prompt: 'a lighthouse' })
  t.type(id, 'string')
  await waitFor(() => now().prediction?.done === true, 10000, 'succeeded and done')
  t.equal(now().status, 'succeeded')
  t.equal(now().id, id)
  t.equal(now().error, null)
  t.equal(now().progress?.percentage, 1, 'progress reached 100%')
  t.same(now().output, ['a', 'b', 'c', 'd'])
  t.match(now().logs, /100%/)
  t.equal(now().prediction?.done, true)
  t.same(probe.statuses, ['idle', 'starting', 'processing', 'succeeded'])
  const percentages = probe.seen.map((s) => s.progress?.percentage).filter((p): p is number => p !== undefined)
  t.ok(percentages.some((p) => p > 0 && p < 1), `progress moved through the middle: ${percentages.join(', ')}`)
  await waitFor(() => gw.app.hub.connections.size === 0, 5000, 'the watch stream ended')
  view.unmount()
})

async function failedWith (t: Test, plan: Plan, code: string, message: RegExp): Promise<void> {
  const { gw, fake } = await predictionGateway(t)
  fake.plan(plan)
  const { probe, Probe, now } = predictionProbe({ baseUrl: gw.url, token: sign({ sub: 'alice' }), model: 'owner/painter' })
  const view = render(h(Probe))
  await probe.api!.start({ prompt: 'x' })
  await waitFor(() => now().status === 'failed', 10000, 'failed')
  t.equal(now().error?.code, code)
  t.match(now().error?.message, message)
  t.equal(now().prediction?.status, plan.outcome, 'the raw status is kept in prediction')
  view.unmount()
}

t.test('usePrediction: a failed prediction surfaces as error', async (t) => {
  await failedWith(t, { steps: 1, outcome: 'failed', error: 'CUDA out of memory' }, 'prediction_failed', /CUDA out of memory/)
})

t.test('usePrediction: aborted is reported as failed', async (t) => {
  await failedWith(t, { steps: 1, outcome: 'aborted' }, 'aborted', /aborted/)
})

t.test('usePrediction: a refused prediction sets error and never throws', async (t) => {
  const { gw } = await predictionGateway(t, { REPLICATE_MODELS: 'owner/painter' })
  const errors: unknown[] = []
  const onError = (e: unknown): void => { errors.push(e) }
  process.on('unhandledRejection', onError)
  t.teardown(() => { process.off('unhandledRejection', onError) })
  const { probe, Probe, now } = predictionProbe({ baseUrl: gw.url, token: sign({ sub: 'alice' }), model: 'evil/model' })
  const view = render(h(Probe))
  t.equal(await probe.api!.start({ prompt: 'x' }), null, 'start resolves with null')
  await waitFor(() => now().status === 'failed', 5000, 'failed')
  t.equal(now().error?.code, 'forbidden_model')
  t.equal(now().error?.status, 403)
  t.equal(now().id, null)

  // No token at all: refused by the gateway, same path.
  const anon = predictionProbe({ baseUrl: gw.url, model: 'owner/painter' })
  const view2 = render(h(anon.Probe))
  t.equal(await anon.probe.api!.start({ prompt: 'x' }), null)
  await waitFor(() => anon.now().status === 'failed', 5000, 'failed')
  t.equal(anon.now().error?.status, 401)
  t.same(errors, [], 'nothing unhandled')
  view.unmount()
  view2.unmount()
})

t.test('usePrediction: cancel', async (t) => {
  const { gw, fake } = await predictionGateway(t)
  fake.plan({ steps: 100000 })
  const { probe, Probe, now } = predictionProbe({ baseUrl: gw.url, token: sign({ sub: 'alice' }), model: 'owner/painter' })
  const view = render(h(Probe))
  const id = await probe.api!.start({ prompt: 'x' }) as string
  await waitFor(() => now().status === 'processing', 10000, 'processing')
  await probe.api!.cancel()
  await waitFor(() => now().status === 'canceled', 10000, 'canceled')
  t.equal(fake.predictions.get(id)?.status, 'canceled', 'canceled at Replicate')
  t.equal(now().error, null)
  await waitFor(() => gw.app.hub.connections.size === 0, 5000, 'the watch ended')
  view.unmount()
})

t.test('usePrediction: cancel while the prediction is still being created', async (t) => {
  const { gw, fake } = await predictionGateway(t)
  fake.plan({ steps: 100000 })
  const { probe, Probe, now } = predictionProbe({ baseUrl: gw.url, token: sign({ sub: 'alice' }), model: 'owner/painter' })
  const view = render(h(Probe))
  const started = probe.api!.start({ prompt: 'x' })
  await waitFor(() => now().status === 'starting', 5000, 'starting')
  await probe.api!.cancel() // no id yet
  const id = await started as string
  await waitFor(() => now().status === 'canceled', 10000, 'canceled')
  t.equal(fake.predictions.get(id)?.status, 'canceled')
  view.unmount()
})

t.test('usePrediction: unmount stops watching and does not cancel', async (t) => {
  const { gw, fake } = await predictionGateway(t)
  fake.plan({ steps: 100000 })
  const { probe, Probe, now } = predictionProbe({ baseUrl: gw.url, token: sign({ sub: 'alice' }), model: 'owner/painter' })
  const view = render(h(React.StrictMode, null, h(Probe)))
  const id = await probe.api!.start({ prompt: 'x' }) as string
  await waitFor(() => now().status === 'processing' && gw.app.hub.connections.size === 1, 10000, 'processing')
  const watchers = fetches.filter((u) => u.includes(`/predictions/${id}/events`)).length
  t.equal(watchers, 1, 'StrictMode: one watch')
  view.unmount()
  await waitFor(() => gw.app.hub.connections.size === 0, 5000, 'the watch closed')
  const step = fake.advance(id).status
  t.equal(step, 'processing', 'the prediction runs on')
  t.notOk(fake.requests.some((r) => r.route === 'cancel'), 'no cancel was sent')

  // cancelOnUnmount: asked, so it cancels.
  const other = predictionProbe({ baseUrl: gw.url, token: sign({ sub: 'alice' }), model: 'owner/painter', cancelOnUnmount: true })
  fake.plan({ steps: 100000 })
  const view2 = render(h(other.Probe))
  const id2 = await other.probe.api!.start({ prompt: 'y' }) as string
  await waitFor(() => other.now().status === 'processing', 10000, 'processing')
  view2.unmount()
  await waitFor(() => fake.predictions.get(id2)?.status === 'canceled', 10000, 'canceled on unmount')
  t.equal(fake.predictions.get(id)?.status, 'processing', 'the first one still runs')
})

t.test('the build: sse-gateway/react is its own entry, React and the core stay external', async (t) => {
  const outdir = t.testdir()
  execFileSync(process.execPath, [join(__dirname, '../scripts/build-client.mjs'), '--outdir', outdir], { stdio: 'inherit' })
  const cjs = readFileSync(join(outdir, 'react.js'), 'utf8')
  const esm = readFileSync(join(outdir, 'react.mjs'), 'utf8')
  t.match(cjs, /require\("react"\)/)
  t.match(cjs, /require\("\.\/index\.js"\)/)
  t.match(esm, /from "react"/)
  t.match(esm, /from "\.\/index\.mjs"/)
  for (const src of [cjs, esm]) t.notMatch(src, /class SseParser|class DirectConnection/, 'the core is not bundled twice')
  for (const f of ['index.js', 'index.mjs', 'browser.mjs']) t.notMatch(readFileSync(join(outdir, f), 'utf8'), /["']react["']/, `${f} does not import react`)
  t.match(readFileSync(join(outdir, 'react.d.ts'), 'utf8'), /from '\.\/react\/index'/)
  t.match(readFileSync(join(outdir, 'react/event-stream.d.ts'), 'utf8'), /export declare function useEventStream/)
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const built = require(join(outdir, 'react.js')) as typeof HooksTypes
  t.type(built.useEventStream, 'function')
  t.type(built.usePrediction, 'function')
  const core = await import(pathToFileURL(join(outdir, 'react.mjs')).href) as typeof HooksTypes
  t.type(core.usePrediction, 'function')
})
