import t, { type Test } from 'tap'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { appendLogs, cancelPrediction, createPrediction, GatewayClientError, watchPrediction, type PredictionUpdate } from '../client/index'

// The prediction routes of the wire contract, served from a loopback server.

interface Seen { method: string, path: string, headers: IncomingMessage['headers'], body: string }

async function gateway (t: Test, stream: (res: ServerResponse, req: IncomingMessage) => void) {
  const requests: Seen[] = []
  const open = new Set<ServerResponse>()
  const server = createServer((req, res) => {
    let body = ''
    req.on('data', (c: Buffer) => { body += c.toString() })
    req.on('end', () => {
      const path = new URL(req.url ?? '/', 'http://x').pathname
      requests.push({ method: req.method ?? '', path, headers: req.headers, body })
      const send = (status: number, value: unknown): void => {
        res.writeHead(status, { 'content-type': 'application/json' })
        res.end(JSON.stringify(value))
      }
      if (req.method === 'POST' && path === '/gw/predictions') {
        const b = JSON.parse(body) as { model?: string }
        if (b.model === 'evil/model') send(403, { error: 'forbidden_model', message: 'model "evil/model" is not allowed on this gateway' })
        else send(201, { id: 'p1', status: 'starting', events_url: '/gw/predictions/p1/events' })
      } else if (req.method === 'POST' && path === '/gw/predictions/p1/cancel') {
        send(200, { id: 'p1', status: 'canceled' })
      } else if (req.method === 'GET' && path === '/gw/predictions/p1/events') {
        res.writeHead(200, { 'content-type': 'text/event-stream' })
        res.write('retry: 10\n: hi\n\n')
        open.add(res)
        res.on('close', () => open.delete(res))
        stream(res, req)
      } else {
        send(404, { error: 'not_found', message: 'prediction not found' })
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
  return { base: `http://127.0.0.1:${(server.address() as AddressInfo).port}/gw`, requests, open }
}

const status = (id: number, data: unknown): string => `id: ${id}\nevent: status\ndata: ${JSON.stringify(data)}\n\n`

function fullRun (res: ServerResponse): void {
  res.write(status(1, { status: 'starting' }))
  res.write(status(2, { status: 'processing', progress: { percentage: 0.5, current: 5, total: 10 }, logs: '50%|█████     | 5/10' }))
  res.write('id: 3\nevent: output\ndata: "Hello"\n\n')
  res.write('id: 4\nevent: output\ndata: " world"\n\n')
  res.write(status(5, { status: 'processing', progress: { percentage: 1, current: 10, total: 10 } }))
  res.write(status(6, { status: 'succeeded', output: ['Hello world'], metrics: { predict_time: 1.2 } }))
  res.write('id: 7\nevent: done\ndata: {}\n\n')
}

t.test('createPrediction, then iterate status, progress and output until done', async (t) => {
  const gw = await gateway(t, fullRun)
  const created = await createPrediction({ model: 'owner/name', input: { prompt: 'hi' } }, { baseUrl: gw.base, token: 'tok' })
  t.same(created, { id: 'p1', status: 'starting', events_url: '/gw/predictions/p1/events' })
  t.equal(gw.requests[0].headers.authorization, 'Bearer tok')
  t.same(JSON.parse(gw.requests[0].body), { model: 'owner/name', input: { prompt: 'hi' } })

  const watch = watchPrediction(created.id, { baseUrl: gw.base, url: created.events_url, token: 'tok' })
  const updates: PredictionUpdate[] = []
  for await (const u of watch) updates.push(u)
  t.same(updates.map((u) => u.type), ['status', 'status', 'output', 'output', 'status', 'status', 'done'])
  t.same(updates.map((u) => u.state.status), ['starting', 'processing', 'processing', 'processing', 'processing', 'succeeded', 'succeeded'])
  t.same(updates.map((u) => u.state.progress?.percentage), [undefined, 0.5, 0.5, 0.5, 1, 1, 1], 'progress is kept until replaced')
  t.same(updates[3].state.streamed, ['Hello', ' world'])
  const final = await watch.finished
  t.same(final, {
    id: 'p1',
    status: 'succeeded',
    progress: { percentage: 1, current: 10, total: 10 },
    logs: '50%|█████     | 5/10',
    logsOffset: 0,
    output: ['Hello world'],
    metrics: { predict_time: 1.2 },
    streamed: ['Hello', ' world'],
    streamedLogs: [],
    done: true
  })
  t.not(updates[0].state, updates[1].state, 'each update has its own state object')
  t.equal(watch.connection.status, 'closed', 'the stream closes after done')
  await t.resolveMatch(watch.next(), { done: true }, 'the iterator stays finished')
  t.equal(gw.requests[1].headers.authorization, 'Bearer tok')
})

t.test('onUpdate callbacks, baseUrl only, and a malformed frame skipped', async (t) => {
  const gw = await gateway(t, (res) => {
    res.write('id: 1\nevent: status\ndata: {"status": "proc\n\n')
    fullRun(res)
  })
  const seen: string[] = []
  const errors: string[] = []
  const watch = watchPrediction('p1', { baseUrl: gw.base, onUpdate: (u) => seen.push(u.type), onError: (e) => errors.push(e.code) })
  const final = await watch.finished
  t.equal(final.status, 'succeeded')
  t.equal(seen.length, 7)
  t.same(errors, ['malformed_json'])
  t.equal(gw.requests[0].path, '/gw/predictions/p1/events')
})

t.test('a prediction that is not yours: the iterator throws not_found', async (t) => {
  const gw = await gateway(t, fullRun)
  const watch = watchPrediction('someone-elses', { baseUrl: gw.base })
  await t.rejects(async () => { for await (const _u of watch) { /* nothing arrives */ } }, { code: 'not_found', status: 404 })
  await t.rejects(watch.finished, GatewayClientError)
  t.equal(gw.requests.length, 1, 'a 404 is not retried')
})

t.test('breaking out of the loop stops watching without cancelling', async (t) => {
  const gw = await gateway(t, (res) => res.write(status(1, { status: 'processing' })))
  const watch = watchPrediction('p1', { baseUrl: gw.base })
  for await (const u of watch) {
    t.equal(u.state.status, 'processing')
    break
  }
  t.equal(watch.connection.status, 'closed')
  await t.rejects(watch.finished, { code: 'closed' })
  t.notOk(gw.requests.some((r) => r.path.endsWith('/cancel')))
})

t.test('an abort signal closes the watch', async (t) => {
  const gw = await gateway(t, (res) => res.write(status(1, { status: 'processing' })))
  const ac = new AbortController()
  const watch = watchPrediction('p1', { baseUrl: gw.base, signal: ac.signal, onUpdate: () => ac.abort() })
  const updates: PredictionUpdate[] = []
  for await (const u of watch) updates.push(u)
  t.equal(updates.length, 1, 'updates queued before the abort are still delivered')
  t.equal(watch.connection.status, 'closed')
})

t.test('the stream resumes after a drop with the last cursor', async (t) => {
  let n = 0
  const gw = await gateway(t, (res, req) => {
    if (++n === 1) {
      res.write(status(1, { status: 'processing', progress: { percentage: 0.3, current: 3, total: 10 } }), () => res.destroy())
    } else {
      t.equal(req.headers['last-event-id'], '1')
      fullRun(res)
    }
  })
  const watch = watchPrediction('p1', { baseUrl: gw.base, retryDelay: () => 5 })
  const final = await watch.finished
  t.equal(final.status, 'succeeded')
  t.equal(n, 2)
})

t.test('createPrediction and cancelPrediction errors carry the gateway code', async (t) => {
  const gw = await gateway(t, fullRun)
  await t.rejects(createPrediction({ model: 'evil/model', input: {} }, { baseUrl: gw.base, getToken: async () => 'tok' }), { code: 'forbidden_model', status: 403 })
  t.same(await cancelPrediction('p1', { baseUrl: gw.base, token: 'tok' }), { id: 'p1', status: 'canceled' })
  await t.rejects(cancelPrediction('nope', { baseUrl: gw.base }), { code: 'not_found' })
  await t.rejects(createPrediction({ input: {} }, { baseUrl: 'http://127.0.0.1:1' }), { code: 'network' })
})

t.test('lean frames: logs put together from offsets, streamed logs, stream errors, outputs by reference', async (t) => {
  const gw = await gateway(t, (res) => {
    res.write(status(1, { status: 'processing', logs: 'ne 2\n', logs_offset: 6 })) // a joiner: only the end
    res.write(status(2, { status: 'processing', logs: 'line 3\n', logs_offset: 11 }))
    res.write('id: 3\nevent: logs\ndata: "line 4"\n\n')
    res.write(status(4, { status: 'processing', upstream: 'retrying', reason: 'rate_limited', retry_in_ms: 2000, retry_at: '2030-01-01T00:00:02.000Z' }))
    res.write(status(5, { status: 'processing', logs: 'line 3\nline 4\n', logs_offset: 11 })) // overlaps: replaces from 11
    res.write('id: 6\nevent: stream-error\ndata: {"detail":"boom"}\n\n')
    res.write(status(7, { status: 'failed', output: ['/gw/predictions/p1/output/0'], output_refs: [0] }))
    res.write('id: 8\nevent: done\ndata: {}\n\n')
  })
  const types: string[] = []
  let retrying: unknown
  const w = watchPrediction('p1', { baseUrl: gw.base, token: 'tok', onUpdate: (u) => { types.push(u.type); if (u.state.upstream !== undefined) retrying = u.state.upstream } })
  const end = await w.finished
  t.same(types, ['status', 'status', 'logs', 'status', 'status', 'stream-error', 'status', 'done'])
  t.equal(end.logs, 'line 3\nline 4\n'.replace(/^/, 'ne 2\n'), 'the end of the logs, then each appended piece once')
  t.equal(end.logsOffset, 6)
  t.same(end.streamedLogs, ['line 4'])
  t.same(end.streamError, { detail: 'boom' })
  t.same(end.outputRefs, [0])
  t.same(retrying, { reason: 'rate_limited', retry_in_ms: 2000, retry_at: '2030-01-01T00:00:02.000Z' }, 'the next try, while Replicate fails')
  t.equal(end.upstream, undefined, 'cleared by the next plain update')
})

t.test('appendLogs: in order, overlapping, older, and past a gap', async (t) => {
  t.same(appendLogs({}, 'abc', 0), { logs: 'abc', logsOffset: 0 })
  t.same(appendLogs({ logs: 'abc', logsOffset: 0 }, 'def', 3), { logs: 'abcdef', logsOffset: 0 })
  t.same(appendLogs({ logs: 'abcdef', logsOffset: 0 }, 'dXYZ', 3), { logs: 'abcdXYZ', logsOffset: 0 }, 'a redraw from its offset')
  t.same(appendLogs({ logs: 'abcdef', logsOffset: 0 }, 'b', 1), { logs: 'abcdef', logsOffset: 0 }, 'an older piece changes nothing')
  t.same(appendLogs({ logs: 'abc', logsOffset: 0 }, 'xyz', 10), { logs: 'xyz', logsOffset: 10 }, 'past a gap: starts over there')
})
