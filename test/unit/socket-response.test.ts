import t from 'tap'
import net from 'node:net'
import { SocketResponse } from '../../src/http1/socket-response'
import { waitFor } from '../wait'

/** A SocketResponse on one end of a loopback connection, and what the other end reads. */
async function pair (t: { teardown (fn: () => unknown): void }): Promise<{ res: SocketResponse, server: net.Socket, read: () => string, closed: () => boolean }> {
  let accepted: net.Socket | null = null
  const srv = net.createServer(s => { accepted = s })
  await new Promise<void>(resolve => srv.listen(0, '127.0.0.1', resolve))
  const client = net.connect((srv.address() as net.AddressInfo).port, '127.0.0.1')
  let raw = ''
  let closed = false
  client.on('data', d => { raw += d.toString('latin1') })
  client.on('close', () => { closed = true })
  client.on('error', () => {})
  await waitFor(() => accepted !== null, 5000, 'accept')
  t.teardown(() => { client.destroy(); srv.close() })
  const server = accepted as unknown as net.Socket
  return { res: new SocketResponse(server), server, read: () => raw, closed: () => closed }
}

t.test('the head leaves with the first write, then chunks, then the last chunk', async t => {
  const { res, read, closed } = await pair(t)
  res.writeHead(200, { 'content-type': 'text/event-stream', vary: ['a', 'b'], skipped: undefined, n: 3 })
  t.ok(res.headersSent)
  t.notOk(res.chunkedEncoding, 'not yet: the head is still pending')
  t.equal(read(), '')
  res.write('')
  await waitFor(() => read().endsWith('\r\n\r\n'), 5000, 'the head alone')
  t.ok(res.write(''), 'an empty write is no chunk (it would end the body)')
  res.write('héllo')
  t.ok(res.chunkedEncoding)
  res.write('x')
  res.end('bye')
  t.ok(res.writableEnded)
  t.notOk(res.write('late'), 'a write after the end is refused')
  res.end('again')
  await waitFor(closed, 5000, 'the socket to close')
  t.equal(read(), 'HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nvary: a, b\r\nn: 3\r\ntransfer-encoding: chunked\r\n\r\n6\r\nh\xc3\xa9llo\r\n1\r\nx\r\n3\r\nbye\r\n0\r\n\r\n')
})

t.test('ended before any write: a whole response with a length; without a head, an empty 200', async t => {
  const a = await pair(t)
  a.res.writeHead(799, { 'content-type': 'application/json' }).end('{}')
  await waitFor(a.closed, 5000, 'close')
  t.equal(a.read(), 'HTTP/1.1 799 \r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}')
  const b = await pair(t)
  b.res.end()
  await waitFor(b.closed, 5000, 'close')
  t.equal(b.read(), 'HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n')
  const c = await pair(t)
  c.res.writeHead(200, {})
  c.res.write('a')
  c.res.end('')
  await waitFor(c.closed, 5000, 'close')
  t.match(c.read(), /1\r\na\r\n0\r\n\r\n$/, 'an empty last chunk is not written as a chunk')
})

t.test('events and state come from the socket; ending a destroyed socket writes nothing', async t => {
  const { res, server } = await pair(t)
  let closes = 0
  const onClose = (): void => { closes++ }
  res.on('close', onClose)
  res.off('close', onClose)
  res.on('close', () => { closes += 10 })
  t.equal(res.writableLength, server.writableLength)
  res.destroy()
  t.ok(server.destroyed)
  res.end('x')
  t.ok(res.writableEnded)
  await waitFor(() => closes > 0, 5000, 'close')
  t.equal(closes, 10, 'the removed listener did not run')
})
