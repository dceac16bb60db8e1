import t, { type Test } from 'tap'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { connect, type Connection, type ConnectionStatus, type GatewayEvent, type LockManagerLike, type StatusInfo } from '../client/index'
import { waitFor } from './wait'

// Tabs are simulated in one process: Node's BroadcastChannel delivers between instances of the
// same name, and a small in-memory Web Locks queue stands in for navigator.locks (Node 20 has none).

class FakeLocks implements LockManagerLike {
  private readonly queues = new Map<string, Array<() => void>>()
  private readonly held = new Set<string>()

  request (name: string, options: { signal?: AbortSignal }, callback: (lock: unknown) => Promise<unknown>): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const signal = options.signal
      if (signal?.aborted === true) { reject(new DOMException('aborted', 'AbortError')); return }
      const grant = (): void => {
        signal?.removeEventListener('abort', onAbort)
        this.held.add(name)
        Promise.resolve().then(() => callback({ name })).then(resolve, reject).finally(() => {
          this.held.delete(name)
          this.pump(name)
        })
      }
      const onAbort = (): void => {
        const q = this.queues.get(name) ?? []
        const i = q.indexOf(grant)
        if (i >= 0) { q.splice(i, 1); reject(new DOMException('aborted', 'AbortError')) }
      }
      signal?.addEventListener('abort', onAbort)
      const q = this.queues.get(name) ?? []
      q.push(grant)
      this.queues.set(name, q)
      this.pump(name)
    })
  }

  private pump (name: string): void {
    if (this.held.has(name)) return
    this.queues.get(name)?.shift()?.()
  }
}

async function feedServer (t: Test, refuse = false) {
  const events: Array<{ id: string, data: string }> = []
  const streams = new Set<ServerResponse>()
  const requests: IncomingMessage[] = []
  const server = createServer((req, res) => {
    requests.push(req)
    if (refuse) {
      res.writeHead(401, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ error: 'unauthorized', message: 'expired token' }))
      return
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.write('retry: 10\n: hi\n\n')
    const last = req.headers['last-event-id']
    const from = typeof last === 'string' ? events.findIndex((e) => e.id === last) + 1 : 0
    for (const e of events.slice(from)) res.write(`id: ${e.id}\ndata: ${e.data}\n\n`)
    streams.add(res)
    res.on('close', () => streams.delete(res))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/events`,
    streams,
    requests,
    publish (i: number) {
      const e = { id: `c:${events.length + 1}`, data: JSON.stringify({ i }) }
      events.push(e)
      for (const s of streams) s.write(`id: ${e.id}\ndata: ${e.data}\n\n`)
    }
  }
}

interface Tab { conn: Connection, events: GatewayEvent[], statuses: Array<{ status: ConnectionStatus, info: StatusInfo }>, got: () => number[] }

function tab (t: Test, url: string, locks: LockManagerLike): Tab {
  const events: GatewayEvent[] = []
  const statuses: Tab['statuses'] = []
  const conn = connect({
    url,
    token: 'tok',
    channels: ['topic:feed'],
    shareAcrossTabs: true,
    locks,
    retryDelay: () => 5,
    onEvent: (e) => events.push(e),
    onStatus: (status, info) => statuses.push({ status, info })
  })
  t.teardown(() => conn.close())
  return { conn, events, statuses, got: () => events.map((e) => (e.data as { i: number }).i) }
}

t.test('three tabs share one stream; a follower takes over when the leader closes, losing nothing', async (t) => {
  const srv = await feedServer(t)
  const locks = new FakeLocks()
  const tabs = [tab(t, srv.url, locks), tab(t, srv.url, locks), tab(t, srv.url, locks)]
  await waitFor(() => tabs.every((x) => x.conn.status === 'open'), 10_000, 'all tabs open')
  t.equal(srv.requests.length, 1, 'one request for three tabs')
  t.equal(srv.streams.size, 1)
  t.same(tabs.map((x) => x.conn.role), ['leader', 'follower', 'follower'])

  for (let i = 1; i <= 3; i++) srv.publish(i)
  await waitFor(() => tabs.every((x) => x.events.length === 3), 10_000, '3 events in every tab')
  t.same(tabs.map((x) => x.got()), [[1, 2, 3], [1, 2, 3], [1, 2, 3]])
  t.same(tabs.map((x) => x.conn.lastEventId), ['c:3', 'c:3', 'c:3'], 'followers track the cursor')

  const [a, b, c] = tabs
  a.conn.close()
  // Published while no tab holds the stream.
  srv.publish(4)
  await waitFor(() => srv.requests.length === 2 && b.conn.status === 'open' && c.conn.status === 'open', 10_000, 'takeover')
  t.equal(srv.requests[1].headers['last-event-id'], 'c:3', 'the new leader resumes from the cursor it heard')
  t.equal(b.conn.role, 'leader')
  t.equal(c.conn.role, 'follower')
  srv.publish(5)
  await waitFor(() => b.events.length === 5 && c.events.length === 5, 10_000, '5 events in the remaining tabs')
  t.same(b.got(), [1, 2, 3, 4, 5], 'no loss, no duplicate in the new leader')
  t.same(c.got(), [1, 2, 3, 4, 5], 'no loss, no duplicate in the follower')
  t.same(a.got(), [1, 2, 3])
  await waitFor(() => srv.streams.size === 1, 10_000, 'old stream closed')

  t.same(c.statuses.map((s) => s.status), ['connecting', 'open', 'retrying', 'open'], 'the follower sees the hand-over as a reconnect')
  t.same(b.statuses.map((s) => s.status), ['connecting', 'open', 'retrying', 'open'])

  c.conn.close()
  srv.publish(6)
  await waitFor(() => b.events.length === 6, 10_000, 'leader keeps going after a follower leaves')
  t.equal(srv.requests.length, 2)
})

t.test('a late tab learns the current status and cursor from the leader', async (t) => {
  const srv = await feedServer(t)
  const locks = new FakeLocks()
  const a = tab(t, srv.url, locks)
  await waitFor(() => a.conn.status === 'open', 10_000, 'open')
  srv.publish(1)
  await waitFor(() => a.events.length === 1, 10_000, 'event')
  const late = tab(t, srv.url, locks)
  await waitFor(() => late.conn.status === 'open', 10_000, 'late tab open')
  t.equal(late.conn.lastEventId, 'c:1')
  t.equal(srv.requests.length, 1)
})

t.test('a fatal close in the leader closes every tab, none retries', async (t) => {
  const srv = await feedServer(t, true)
  const locks = new FakeLocks()
  const tabs = [tab(t, srv.url, locks), tab(t, srv.url, locks)]
  await waitFor(() => tabs.every((x) => x.conn.status === 'closed'), 10_000, 'all closed')
  t.same(tabs.map((x) => x.conn.statusInfo.reason), ['unauthorized', 'unauthorized'])
  t.same(tabs.map((x) => x.conn.statusInfo.error?.code), ['unauthorized', 'unauthorized'])
  // The closed broadcast races the lock hand-over, so the other tab may try once, never more.
  t.ok(srv.requests.length <= 2, `${srv.requests.length} requests for 2 tabs`)
})

t.test('without Web Locks, shareAcrossTabs falls back to a stream per caller', async (t) => {
  const srv = await feedServer(t)
  const conn = connect({ url: srv.url, shareAcrossTabs: true, onEvent: () => {} })
  t.teardown(() => conn.close())
  t.equal(conn.role, 'direct')
  await waitFor(() => conn.status === 'open', 10_000, 'open')
})
