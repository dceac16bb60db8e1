import t, { type Test } from 'tap'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { EventSource } from 'eventsource'
import { connect, type ConnectionStatus, type ConnectOptions, type GatewayEvent, type StatusInfo } from '../client/index'
import { waitFor } from './wait'

// EventSource mode against a loopback server that implements tickets the way the gateway does:
// POST /tickets with the Bearer token, single use, then GET /events?ticket=&lastEventId=.

interface Seen { method: string, url: URL, headers: IncomingMessage['headers'] }

async function gateway (t: Test, opts: { ticketStatus?: number, onStream?: (res: ServerResponse, n: number) => void } = {}) {
  const requests: Seen[] = []
  const events: Array<{ id: string, event?: string, data: string }> = []
  const streams = new Set<ServerResponse>()
  const issued = new Set<string>()
  let streamCount = 0
  let ticketCount = 0
  const frame = (e: { id: string, event?: string, data: string }): string =>
    `id: ${e.id}\n${e.event !== undefined ? `event: ${e.event}\n` : ''}data: ${e.data}\n\n`
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x')
    requests.push({ method: req.method ?? '', url, headers: req.headers })
    if (req.method === 'POST' && url.pathname === '/tickets') {
      if (opts.ticketStatus !== undefined || !/^Bearer tok/.test(req.headers.authorization ?? '')) {
        res.writeHead(opts.ticketStatus ?? 401, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ error: 'unauthorized', message: 'bad token' }))
        return
      }
      const ticket = `t-${++ticketCount}`
      issued.add(ticket)
      res.writeHead(201, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ ticket, expires_in: 30 }))
      return
    }
    const ticket = url.searchParams.get('ticket')
    const access = url.searchParams.get('access_token')
    if (!(ticket !== null && issued.delete(ticket)) && access?.startsWith('tok') !== true) {
      res.writeHead(401, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ error: 'unauthorized', message: 'ticket redeemed or missing' }))
      return
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.write('retry: 10\n: hi\n\n')
    const last = url.searchParams.get('lastEventId')
    const from = last !== null ? events.findIndex((e) => e.id === last) + 1 : 0
    for (const e of events.slice(from)) res.write(frame(e))
    streams.add(res)
    res.on('close', () => streams.delete(res))
    opts.onStream?.(res, ++streamCount)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/events`,
    requests,
    streams,
    streamRequests: () => requests.filter((r) => r.url.pathname === '/events'),
    publish (data: unknown, event?: string) {
      const e = { id: `c:${events.length + 1}`, event, data: JSON.stringify(data) }
      events.push(e)
      for (const s of streams) s.write(frame(e))
    },
    drop () { for (const s of streams) s.destroy() }
  }
}

function record (t: Test, options: Omit<ConnectOptions, 'onEvent'>) {
  const events: GatewayEvent[] = []
  const statuses: Array<{ status: ConnectionStatus, info: StatusInfo }> = []
  const conn = connect({
    mode: 'eventsource',
    EventSource,
    retryDelay: () => 5,
    ...options,
    onEvent: (e) => events.push(e),
    onStatus: (status, info) => statuses.push({ status, info })
  })
  t.teardown(() => conn.close())
  return { conn, events, statuses, names: () => statuses.map((s) => s.status) }
}

t.test('ticket auth, named events, and resume through ?lastEventId= with a fresh ticket', async (t) => {
  const gw = await gateway(t)
  const c = record(t, { url: gw.url, token: 'tok-1', channels: ['topic:a'], events: ['x'], eventTypes: ['y'] })
  await waitFor(() => c.conn.status === 'open', 10_000, 'open')
  gw.publish({ i: 1 }, 'x')
  gw.publish({ i: 2 }, 'y')
  gw.publish({ i: 3 })
  await waitFor(() => c.events.length === 3, 10_000, '3 events')
  gw.drop()
  gw.publish({ i: 4 }, 'x')
  await waitFor(() => c.events.length === 4, 10_000, '4 events')
  gw.publish({ i: 5 })
  await waitFor(() => c.events.length === 5, 10_000, '5 events')
  t.same(c.events.map((e) => [e.type, e.data]), [['x', { i: 1 }], ['y', { i: 2 }], ['message', { i: 3 }], ['x', { i: 4 }], ['message', { i: 5 }]])
  const streams = gw.streamRequests()
  t.equal(streams.length, 2)
  t.same(streams.map((r) => r.url.searchParams.get('ticket')), ['t-1', 't-2'], 'a new single-use ticket per connection')
  t.same(streams.map((r) => r.url.searchParams.get('lastEventId')), [null, 'c:3'])
  t.same(streams[0].url.searchParams.getAll('channel'), ['topic:a'])
  t.notOk(streams.some((r) => r.url.search.includes('tok-1')), 'the token itself never goes into the URL')
  t.equal(gw.requests.find((r) => r.method === 'POST')?.headers.authorization, 'Bearer tok-1')
  t.equal(c.conn.lastEventId, 'c:5')
  c.conn.close()
  t.same(c.names(), ['connecting', 'open', 'retrying', 'open', 'closed'])
})

t.test('access_token in the query when asked for', async (t) => {
  const gw = await gateway(t)
  const c = record(t, { url: gw.url, token: 'tok-q', eventSourceAuth: 'query' })
  await waitFor(() => c.conn.status === 'open', 10_000, 'open')
  t.equal(gw.streamRequests()[0].url.searchParams.get('access_token'), 'tok-q')
  t.equal(gw.requests.filter((r) => r.method === 'POST').length, 0)
})

t.test('a refused ticket is final', async (t) => {
  const gw = await gateway(t, { ticketStatus: 401 })
  const c = record(t, { url: gw.url, token: 'tok' })
  await waitFor(() => c.conn.status === 'closed', 10_000, 'closed')
  t.equal(c.statuses.at(-1)?.info.reason, 'unauthorized')
  t.equal(gw.streamRequests().length, 0)
})

t.test('auth-expired gets a new token, a new ticket and resumes', async (t) => {
  let n = 0
  const gw = await gateway(t, {
    onStream: (res, count) => {
      if (count === 1) {
        res.write('id: c:0\ndata: "before"\n\n')
        res.end('event: auth-expired\ndata: {}\n\n')
      }
    }
  })
  const c = record(t, { url: gw.url, getToken: () => `tok-${++n}` })
  await waitFor(() => gw.streamRequests().length === 2 && c.conn.status === 'open', 10_000, 'second open')
  t.equal(n, 2)
  t.same(gw.requests.filter((r) => r.method === 'POST').map((r) => r.headers.authorization), ['Bearer tok-1', 'Bearer tok-2'])
  t.equal(gw.streamRequests()[1].url.searchParams.get('lastEventId'), 'c:0')
  t.same(c.events.map((e) => e.type), ['message', 'auth-expired'])
})
