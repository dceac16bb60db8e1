import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { connect, type AddressInfo } from 'node:net'
import { buildApp } from '../src/app'
import { ZERO_ID, type Envelope } from '../src/bus/bus'
import { MemoryBus } from '../src/bus/memory-bus'
import { build, freePort, publish, publisherToken, RawStream, REDIS_URL, SECRET, sign, testConfig, uniquePrefix, waitFor } from './helper'

t.test('/metrics after real traffic: every metric present and moved, no unbounded label', async t => {
  const gw = await build(t, { MAX_CONNECTIONS_PER_USER: '1' })
  const s = new RawStream(gw.port, '/events', { authorization: `Bearer ${sign({ sub: 'm' })}` })
  t.teardown(() => s.close())
  await waitFor(() => s.frames().some(f => f.id !== undefined))
  const refused = await fetch(`${gw.url}/events`, { headers: { authorization: `Bearer ${sign({ sub: 'm' })}` } })
  t.equal(refused.status, 429)
  await publish(gw.url, Array.from({ length: 10 }, (_, i) => ({ channel: 'user:m', data: i, key: i < 5 ? 'k' : undefined })))
  await s.waitMessages(6)
  const res = await fetch(`${gw.url}/metrics`)
  t.equal(res.status, 200)
  t.match(res.headers.get('content-type'), /text\/plain/)
  const text = await res.text()
  const value = (re: RegExp): number => Number(re.exec(text)?.[1] ?? NaN)
  t.equal(value(/^gateway_connections_active (\S+)$/m), 1)
  t.equal(value(/^gateway_connections_opened_total (\S+)$/m), 1)
  t.equal(value(/^gateway_connections_rejected_total\{reason="too_many_connections"\} (\S+)$/m), 1)
  t.equal(value(/^gateway_bus_messages_published_total\{source="http"\} (\S+)$/m), 10)
  t.equal(value(/^gateway_delivery_messages_delivered_total (\S+)$/m), 6)
  t.equal(value(/^gateway_delivery_messages_dropped_total\{reason="conflated"\} (\S+)$/m), 4)
  t.ok(value(/^gateway_delivery_socket_writes_total (\S+)$/m) >= 1)
  t.equal(value(/^gateway_delivery_batch_messages_count (\S+)$/m), value(/^gateway_delivery_socket_writes_total (\S+)$/m))
  t.equal(value(/^gateway_delivery_latency_seconds_count (\S+)$/m), 6)
  t.equal(value(/^gateway_bus_subscriptions (\S+)$/m), 2, "the stream's channel and the control channel")
  t.equal(value(/^gateway_bus_up (\S+)$/m), 1)
  t.match(text, /^gateway_bus_reconnects_total 0$/m)
  t.match(text, /^process_cpu_seconds_total /m, 'default process metrics')
  t.notMatch(text, /user:m|"m"/, 'no user or channel in any label')
  for (const line of text.split('\n').filter(l => l.startsWith('gateway_'))) {
    const labels = /\{(.*)\}/.exec(line)?.[1]
    if (labels === undefined) continue
    for (const pair of labels.split(',')) t.match(pair, /^(reason|source|operation|outcome|le)="[a-z_0-9.+Inf]+"$/, `bounded label: ${pair}`)
  }
})

t.test('/healthz and /readyz', async t => {
  const gw = await build(t)
  t.equal((await fetch(`${gw.url}/healthz`)).status, 200)
  const ready = await fetch(`${gw.url}/readyz`)
  t.equal(ready.status, 200)
  t.same(await ready.json(), { status: 'ready', bus: 'up', draining: false })
  void gw.app.hub.drain(0)
  const draining = await fetch(`${gw.url}/readyz`)
  t.equal(draining.status, 503)
  t.equal((await draining.json()).draining, true)
  const refused = await fetch(`${gw.url}/events`, { headers: { authorization: `Bearer ${sign({ sub: 'd' })}` } })
  t.equal(refused.status, 503, 'new streams are refused while draining')
  t.equal((await refused.json()).error, 'draining')
})

async function startProcess (t: { teardown: (fn: () => void) => void }, env: Record<string, string>): Promise<{ child: ChildProcess, port: number, exited: Promise<{ code: number | null, at: number }> }> {
  const port = await freePort()
  const child = spawn(process.execPath, ['dist/main.js'], {
    env: { PATH: process.env.PATH, PORT: String(port), HOST: '127.0.0.1', JWT_SECRET: SECRET, REDIS_URL, CHANNEL_PREFIX: uniquePrefix(), LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'ignore', 'inherit']
  })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  const exited = new Promise<{ code: number | null, at: number }>(resolve => child.on('exit', code => resolve({ code, at: Date.now() })))
  await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => null))?.status === 200, 20000, 'process ready')
  return { child, port, exited }
}

t.test('SIGTERM with 1,000 open streams: retry hints, spread closes, exit 0 in time', async t => {
  const DRAIN = 2000
  const { child, port, exited } = await startProcess(t, { SHUTDOWN_DRAIN_MS: String(DRAIN), MAX_CONNECTIONS_PER_USER: '2000' })
  const token = sign({ sub: 'many' })
  const streams = Array.from({ length: 1000 }, () => new RawStream(port, '/events', { authorization: `Bearer ${token}` }))
  t.teardown(() => { for (const s of streams) s.close() })
  await waitFor(() => streams.every(s => s.text().includes('id: ')), 30000, '1,000 streams open')
  const sent = Date.now()
  child.kill('SIGTERM')
  await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => null))?.status !== 200, 5000, 'readiness off')
  const { code, at } = await exited
  t.equal(code, 0, 'exit code 0')
  const took = at - sent
  t.ok(took < DRAIN + 5000, `exited ${took} ms after SIGTERM (drain ${DRAIN} ms)`)
  await waitFor(() => streams.every(s => s.ended()), 10000, 'every stream ended')
  const hints = streams.map(s => s.frames().filter(f => f.retry !== undefined).pop()?.retry ?? -1)
  t.ok(hints.every(r => r >= 1500 && r <= 4500), 'each stream got a jittered retry: hint')
  t.ok(new Set(hints).size > 10, 'the hints differ (jitter)')
})

t.test('a second signal exits at once, in the middle of a long drain', async t => {
  // 1,000 streams over a 60 s drain take ~10 s to close (one per 10 ms tick): long enough that
  // exiting "at once" is told apart from a drain that ran to its end (which exits 0).
  const { child, port, exited } = await startProcess(t, { SHUTDOWN_DRAIN_MS: '60000', MAX_CONNECTIONS_PER_USER: '2000' })
  const token = sign({ sub: 'two' })
  const streams = Array.from({ length: 1000 }, () => new RawStream(port, '/events', { authorization: `Bearer ${token}` }))
  t.teardown(() => { for (const s of streams) s.close() })
  await waitFor(() => streams.every(s => s.text().includes('id: ')), 30000, '1,000 streams open')
  child.kill('SIGTERM')
  await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => null))?.status !== 200, 5000, 'draining')
  const second = Date.now()
  child.kill('SIGTERM')
  const { code, at } = await exited
  t.equal(code, 1, 'the second signal\'s exit (a finished drain exits 0)')
  t.ok(at - second < 3000, `exited ${at - second} ms after the second signal`)
  await waitFor(() => streams.every(s => s.ended()), 10000, 'every stream ended')
  // The first frame is `retry: 3000`; a drained stream got a second retry hint before its end.
  const drained = streams.filter(s => s.frames().filter(f => f.retry !== undefined).length > 1).length
  t.ok(drained < 500, `${drained} of 1,000 streams were drained before the exit: the drain was cut short`)
})

t.test('close() while requests are in flight: each is answered, with connection: close, and applied once', async t => {
  // The bus holds publishes until the close has begun, as a slow Redis would.
  let reached!: () => void
  const inPublish = new Promise<void>(resolve => { reached = resolve })
  let release!: () => void
  const held = new Promise<void>(resolve => { release = resolve })
  class HeldBus extends MemoryBus {
    override async publish (messages: Envelope[]): Promise<string[]> {
      reached()
      await held
      return await super.publish(messages)
    }
  }
  const bus = new HeldBus({ historySize: 100, historyTtlS: 60 })
  const app = await buildApp({ config: testConfig({ REDIS_URL: '' }), logger: false, bus })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as AddressInfo).port
  t.teardown(() => app.close())

  // A publish whose body is still on its way when the close begins (100 Continue: its head was read).
  const body = JSON.stringify({ channel: 'user:inflight', event: 'seq', data: 'uploading' })
  const uploading = connect(port, '127.0.0.1')
  let answer = ''
  uploading.setEncoding('latin1').on('data', (s: string) => { answer += s })
  const uploadClosed = new Promise<void>(resolve => uploading.on('close', () => resolve()))
  uploading.write(`POST /publish HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${publisherToken()}\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nexpect: 100-continue\r\n\r\n${body.slice(0, 10)}`)
  await waitFor(() => answer.includes('100 Continue'), 5000, '100 Continue')
  // And one the bus has taken.
  const taken = publish(`http://127.0.0.1:${port}`, { channel: 'user:inflight', event: 'seq', data: 'taken' })
  await inPublish

  const closed = app.close()
  await waitFor(() => !app.server.listening, 5000, 'the server to stop listening')
  uploading.write(body.slice(10))
  release()
  const res = await taken
  t.equal(res.status, 202, 'the publish the bus had taken was answered, not cut')
  t.equal(res.body.ids?.length, 1, 'with its id')
  await uploadClosed
  const head = answer.slice(answer.indexOf('\r\n\r\n') + 4)
  t.match(head, /^HTTP\/1\.1 202 /, 'the publish still uploading was answered too')
  t.match(head, /\r\nconnection: close\r\n/i, 'with connection: close, and its socket closed after it')
  await closed
  const history = await bus.read('user:inflight', ZERO_ID)
  t.same(history.messages.map(m => m.data).sort(), ['taken', 'uploading'], 'each applied once')
})
