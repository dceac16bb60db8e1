import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { Redis } from 'ioredis'
import { build, freePort, RawStream, sign, waitFor } from './helper'

// A Redis of this file's own: it is killed and stopped here, which no other test file may feel.
async function startRedis (port: number): Promise<ChildProcess> {
  const child = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
  const probe = new Redis(port, '127.0.0.1', { lazyConnect: true, retryStrategy: () => 50, maxRetriesPerRequest: null })
  probe.on('error', () => {})
  await probe.connect().catch(() => {})
  await probe.ping()
  probe.disconnect()
  return child
}

t.test('a stream that arrives while the bus reconnects waits for it; a longer outage is a prompt 503', async t => {
  const port = await freePort()
  let redis = await startRedis(port)
  t.teardown(() => { redis.kill('SIGKILL') })
  const gw = await build(t, { REDIS_URL: `redis://127.0.0.1:${port}` })
  const admin = new Redis(port, '127.0.0.1')
  admin.on('error', () => {}) // it sees the shutdown it asks for
  t.teardown(() => admin.disconnect())
  const token = sign({ sub: 'w' })
  const open = (): RawStream => {
    const s = new RawStream(gw.port, '/events', { authorization: `Bearer ${token}` })
    t.teardown(() => s.close())
    return s
  }

  const first = open()
  await waitFor(() => first.text().includes('id: '), 10000, 'first stream open')

  // The subscriber connection is cut; the gateway reconnects on its own within ~100 ms.
  await admin.client('KILL', 'TYPE', 'pubsub')
  await waitFor(() => !gw.app.bus.isReady(), 5000, 'the gateway to notice the lost subscriber')
  const during = open()
  await waitFor(() => during.text().includes('id: ') || (during.status !== 0 && during.status !== 200), 10000, 'stream during reconnect')
  t.equal(during.status, 200, `opened, not bounced: ${during.describe()}`)

  // Redis gone for longer than the wait: a 503 with Retry-After after about a second, not a hang.
  await admin.shutdown('NOSAVE').catch(() => {})
  await waitFor(() => !gw.app.bus.isReady(), 5000, 'the gateway to notice Redis is gone')
  const t0 = Date.now()
  const down = open()
  await waitFor(() => down.status !== 0, 10000, 'an answer during the outage')
  const waited = Date.now() - t0
  t.equal(down.status, 503, down.describe())
  t.equal(down.headers['retry-after'], '2')
  await waitFor(() => down.text().includes('bus_unavailable'), 5000, 'the error body')
  t.ok(waited >= 900, `waited for the bus before answering (${waited} ms)`)
  t.ok(waited < 8000, `answered promptly (${waited} ms)`)

  // Redis back: new streams open again.
  redis = await startRedis(port)
  await waitFor(() => gw.app.bus.isReady(), 15000, 'bus back')
  const after = open()
  await waitFor(() => after.text().includes('id: '), 10000, 'stream after recovery')
  t.equal(after.status, 200)
})
