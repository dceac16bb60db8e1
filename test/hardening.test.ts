// Issue 13: each attack that got through, as a test that failed before the fix. Real gateways
// (processes where an exit is the failure), real Redis, raw sockets.
import t from 'tap'
import { spawn } from 'node:child_process'
import { Redis } from 'ioredis'
import { build, freePort, publish, RawStream, REDIS_URL, SECRET, sign, uniquePrefix, waitFor } from './helper'
import { createPublisher } from '../src/publisher'
import { PUBLISH_LUA } from '../src/bus/redis/scripts'

const reader = (channels: string[] = ['topic:*']): Record<string, string> => ({ authorization: `Bearer ${sign({ sub: 'reader', channels })}` })

function nested (depth: number): unknown {
  const root: unknown[] = []
  let at = root
  for (let i = 1; i < depth; i++) {
    const next: unknown[] = []
    at.push(next)
    at = next
  }
  return root
}

/** Publishes straight into Redis with the gateway's own script, around every check: an older publisher, a raw XADD. */
async function injectRaw (redis: Redis, prefix: string, channel: string, envelopeJson: string): Promise<string> {
  const [id] = await redis.eval(PUBLISH_LUA, 1, `${prefix}history:${channel}`, '1000', '86400', `${prefix}${channel}`, envelopeJson) as string[]
  return id
}

async function metric (url: string, re: RegExp): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text()
  return Number(re.exec(text)?.[1] ?? 0)
}
const UNDELIVERABLE = /^gateway_delivery_messages_dropped_total\{reason="undeliverable"\} (\S+)$/m

async function live (s: RawStream): Promise<string> {
  await waitFor(() => s.frames().some(f => f.id !== undefined), 10000, 'stream live')
  return s.frames().find(f => f.id !== undefined)?.id as string
}

/** A gateway process: a crash is an exit, which the test sees. */
async function gatewayProcess (t: { teardown: (fn: () => void) => void }, env: Record<string, string>): Promise<{ url: string, port: number, exited: () => boolean }> {
  const port = await freePort()
  const child = spawn(process.execPath, ['dist/main.js'], {
    env: { PATH: process.env.PATH, PORT: String(port), HOST: '127.0.0.1', JWT_SECRET: SECRET, REDIS_URL, LOG_LEVEL: 'error', ...env },
    stdio: ['ignore', 'ignore', 'inherit']
  })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  const url = `http://127.0.0.1:${port}`
  await waitFor(async () => (await fetch(`${url}/readyz`).catch(() => null))?.status === 200, 20000, 'process ready')
  return { url, port, exited: () => child.exitCode !== null || child.signalCode !== null }
}

t.test('1. deeply nested data: refused by the publisher helper; one that arrives anyway is dropped by both instances, which stay up', async t => {
  const prefix = uniquePrefix()
  const gws = [await gatewayProcess(t, { CHANNEL_PREFIX: prefix }), await gatewayProcess(t, { CHANNEL_PREFIX: prefix })]
  const streams = gws.map(g => new RawStream(g.port, '/events?channel=topic:deep', reader()))
  t.teardown(() => { for (const s of streams) s.close() })
  const cursors = await Promise.all(streams.map(live))
  const redis = new Redis(REDIS_URL)
  t.teardown(() => redis.quit())
  const pub = createPublisher({ redis: REDIS_URL, prefix })
  t.teardown(() => pub.close())

  await t.rejects(pub.publish({ channel: 'topic:deep', data: nested(4140) }), /body\.data: nests deeper than 64 levels/, 'the helper names the field')
  t.equal(await redis.xlen(`${prefix}history:topic:deep`), 0, 'nothing published')

  // Deeper than any stack can stringify; JSON.parse (iterative in V8) still reads it.
  const depth = 100000
  await injectRaw(redis, prefix, 'topic:deep', `{"channel":"topic:deep","event":"message","data":${'['.repeat(depth)}${']'.repeat(depth)},"ts":1}`)
  const [after] = await pub.publish({ channel: 'topic:deep', event: 'after', data: { ok: true } })
  for (const [i, s] of streams.entries()) {
    const got = await s.waitMessages(1)
    t.same(got.map(m => [m.event, m.data]), [['after', '{"ok":true}']], `instance ${i}: the next message arrives, the nested one was stepped over`)
    t.ok(got[0].id?.split(':')[1].split(',').includes(after), 'its cursor holds the published id')
    t.notOk(s.ended(), `instance ${i}: the stream is still open`)
  }
  for (const [i, g] of gws.entries()) {
    t.notOk(g.exited(), `instance ${i} is alive`)
    t.equal((await fetch(`${g.url}/healthz`)).status, 200)
    t.equal(await metric(g.url, UNDELIVERABLE), 1, `instance ${i} counted it as undeliverable`)
  }

  // A resume across it on either instance steps over it too.
  for (const [i, g] of gws.entries()) {
    const again = new RawStream(g.port, '/events?channel=topic:deep', { ...reader(), 'last-event-id': cursors[i] })
    t.teardown(() => again.close())
    const got = await again.waitMessages(1)
    t.same(got.map(m => m.event), ['after'], `instance ${i}: the replay skips the nested message and is not cut`)
    t.notOk(again.ended())
    t.equal(await metric(g.url, UNDELIVERABLE), 2)
  }
})

for (const bus of ['memory', 'redis'] as const) {
  t.test(`2. deeply nested data in POST /publish on the ${bus} bus: 400 naming it, nothing published, nothing cut`, async t => {
    const gw = await build(t, bus === 'memory' ? { REDIS_URL: '' } : {})
    const s = new RawStream(gw.port, '/events?channel=topic:n', reader())
    t.teardown(() => s.close())
    const cursor = await live(s)
    for (const depth of [65, 10000]) {
      // Written by hand: the test's own JSON.stringify would overflow on it.
      const deep = `${'['.repeat(depth)}${']'.repeat(depth)}`
      const r = await publish(gw.url, `[{"channel":"topic:n","event":"before","data":1},{"channel":"topic:n","data":${deep}},{"channel":"topic:n","event":"after","data":2}]`)
      t.equal(r.status, 400, `depth ${depth}: 400`)
      t.equal(r.body.error, 'invalid_message')
      t.match(r.body.message, /^body\[1\]\.data: nests deeper than 64 levels/)
    }
    t.equal((await publish(gw.url, { channel: 'topic:n', data: nested(64) })).status, 202, '64 levels are fine')
    await publish(gw.url, { channel: 'topic:n', event: 'marker', data: 'm' })
    const got = await s.waitMessages(2)
    t.same(got.map(m => m.event), [undefined, 'marker'], 'only the accepted messages went out')
    const resumed = new RawStream(gw.port, '/events?channel=topic:n', { ...reader(), 'last-event-id': cursor })
    t.teardown(() => resumed.close())
    t.same((await resumed.waitMessages(2)).map(m => m.event), [undefined, 'marker'], 'history holds exactly what went out live')
    await t.rejects(gw.app.bus.publish([{ channel: 'topic:n', event: 'message', data: nested(65), ts: Date.now() }]), /messages\[0\]\.data: nests deeper/, 'the bus itself refuses it')
  })
}

t.test('3. a message whose frame is too large: 413 naming it; one that arrives anyway is dropped, readers are not cut', async t => {
  const gw = await build(t)
  const redis = new Redis(REDIS_URL)
  t.teardown(() => redis.quit())
  const s = new RawStream(gw.port, '/events?channel=topic:big', reader())
  t.teardown(() => s.close())
  const cursor = await live(s)
  // 800 KB of body, framed as ~2.8 MB: each \n becomes "\ndata: ".
  const lines = '\n'.repeat(400000)
  const r = await publish(gw.url, { channel: 'topic:big', data: lines })
  t.equal(r.status, 413)
  t.equal(r.body.error, 'message_too_large')
  t.match(r.body.message, /^body\.data: frames to 2800007 bytes, above MAX_FRAME_BYTES \(262144\)/)
  t.equal(await redis.xlen(`${gw.config.channelPrefix}history:topic:big`), 0, 'nothing published')

  await injectRaw(redis, gw.config.channelPrefix, 'topic:big', JSON.stringify({ channel: 'topic:big', event: 'message', data: lines, ts: Date.now() }))
  await publish(gw.url, { channel: 'topic:big', event: 'marker', data: 'm' })
  t.same((await s.waitMessages(1)).map(m => m.event), ['marker'])
  t.notOk(s.ended(), 'the reader was not cut as a slow consumer')
  const resumed = new RawStream(gw.port, '/events?channel=topic:big', { ...reader(), 'last-event-id': cursor })
  t.teardown(() => resumed.close())
  t.same((await resumed.waitMessages(1)).map(m => m.event), ['marker'], 'a resume steps over it')
  t.notOk(resumed.ended())
  t.equal((await gw.app.metrics.dropped.get()).values.find(v => v.labels.reason === 'undeliverable')?.value, 2)
  t.equal((await gw.app.metrics.connectionsClosed.get()).values.find(v => v.labels.reason === 'slow_consumer')?.value ?? 0, 0)
})

t.test('3. a burst bigger than the budget does not cut a client that reads at full speed; nor does a large replay', async t => {
  const gw = await build(t, { MAX_BUFFERED_BYTES: '1048576', MAX_FRAME_BYTES: '700000', MAX_BODY_BYTES: '4194304', BATCH_WINDOW_MS: '100' })
  const s = new RawStream(gw.port, '/events?channel=topic:burst', reader())
  t.teardown(() => s.close())
  const cursor = await live(s)
  const big = 'y'.repeat(600 * 1024)
  // Two in one request land in one batch window: 1.2 MB unsent by the gateway, none of it refused by the socket.
  for (let round = 0; round < 3; round++) {
    t.equal((await publish(gw.url, [{ channel: 'topic:burst', data: big }, { channel: 'topic:burst', data: big }])).status, 202)
  }
  const got = await s.waitMessages(6, 20000)
  t.ok(got.every(m => m.data === big), 'every message arrived whole')
  t.notOk(s.ended(), 'not cut')
  const resumed = new RawStream(gw.port, '/events?channel=topic:burst', { ...reader(), 'last-event-id': cursor })
  t.teardown(() => resumed.close())
  t.equal((await resumed.waitMessages(6, 20000)).length, 6, 'a 3.6 MB replay arrives within a 1 MB budget')
  t.notOk(resumed.ended())
  t.equal((await gw.app.metrics.connectionsClosed.get()).values.find(v => v.labels.reason === 'slow_consumer')?.value ?? 0, 0)
})
