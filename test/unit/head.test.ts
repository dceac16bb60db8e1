import t from 'tap'
import { MAX_HEAD_BYTES, parseHead } from '../../src/http1/head'

const req = (s: string): Buffer => Buffer.from(s, 'latin1')

t.test('a plain stream GET parses: the target, lower-cased names, trimmed values', async t => {
  const h = parseHead(req('GET /events?channel=a&lastEventId=x HTTP/1.1\r\nHost: gw\r\nAuthorization:  Bearer abc \t\r\nLast-Event-ID: h:1-0\r\n\r\n'), '/events')
  t.same(h, { url: '/events?channel=a&lastEventId=x', headers: { host: 'gw', authorization: 'Bearer abc', 'last-event-id': 'h:1-0' } })
  t.same(parseHead(req('GET /events HTTP/1.1\r\n\r\n'), '/events'), { url: '/events', headers: {} }, 'no headers at all')
  t.same(parseHead(req('GET /events HTTP/1.1\r\nX-Empty:\r\n\r\n'), '/events')?.headers, { 'x-empty': '' })
  t.same(parseHead(req('GET /events HTTP/1.1\r\nX: caf\xe9\r\n\r\n'), '/events')?.headers, { x: 'caf\xe9' }, 'latin1 bytes in a value, as node reads them')
})

t.test('anything else is node:http\'s (null)', async t => {
  const cases: Record<string, string> = {
    'another path': 'GET /eventsx HTTP/1.1\r\n\r\n',
    'a path below it': 'GET /events/x HTTP/1.1\r\n\r\n',
    'another route': 'GET /healthz HTTP/1.1\r\n\r\n',
    'another method': 'POST /events HTTP/1.1\r\n\r\n',
    HEAD: 'HEAD /events HTTP/1.1\r\n\r\n',
    'HTTP/1.0': 'GET /events HTTP/1.0\r\n\r\n',
    'absolute form': 'GET http://gw/events HTTP/1.1\r\n\r\n',
    'a space in the target': 'GET /events?a=b c HTTP/1.1\r\n\r\n',
    'a raw non-ASCII byte in the target': 'GET /events?a=\xe9 HTTP/1.1\r\n\r\n',
    'an incomplete head (two reads)': 'GET /events HTTP/1.1\r\nHost: gw\r\n',
    'a pipelined request after it': 'GET /events HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n',
    'a body': 'GET /events HTTP/1.1\r\nContent-Length: 2\r\n\r\nab',
    'content-length even when 0': 'GET /events HTTP/1.1\r\nContent-Length: 0\r\n\r\n',
    'transfer-encoding': 'GET /events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n',
    'an upgrade': 'GET /events HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n',
    'h2c upgrade settings': 'GET /events HTTP/1.1\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n',
    expect: 'GET /events HTTP/1.1\r\nExpect: 100-continue\r\n\r\n',
    'a header twice': 'GET /events HTTP/1.1\r\nAuthorization: Bearer a\r\nauthorization: Bearer b\r\n\r\n',
    'an obs-fold continuation': 'GET /events HTTP/1.1\r\nX: a\r\n  b\r\n\r\n',
    'a line without a colon': 'GET /events HTTP/1.1\r\nnonsense\r\n\r\n',
    'an empty name': 'GET /events HTTP/1.1\r\n: v\r\n\r\n',
    'a space before the colon': 'GET /events HTTP/1.1\r\nHost : gw\r\n\r\n',
    'a bad name character': 'GET /events HTTP/1.1\r\nX(y): v\r\n\r\n',
    'a control character in a value': 'GET /events HTTP/1.1\r\nX: a\x01b\r\n\r\n',
    'a bare LF inside a value': 'GET /events HTTP/1.1\r\nX: a\nb\r\n\r\n'
  }
  for (const [what, raw] of Object.entries(cases)) t.equal(parseHead(req(raw), '/events'), null, what)
  const many = 'GET /events HTTP/1.1\r\n' + Array.from({ length: 101 }, (_, i) => `x-${i}: v`).join('\r\n') + '\r\n\r\n'
  t.equal(parseHead(req(many), '/events'), null, 'more than 100 headers')
  const hundred = 'GET /events HTTP/1.1\r\n' + Array.from({ length: 100 }, (_, i) => `x-${i}: v`).join('\r\n') + '\r\n\r\n'
  t.equal(Object.keys(parseHead(req(hundred), '/events')?.headers ?? {}).length, 100, '100 headers are fine')
  const big = `GET /events HTTP/1.1\r\nx: ${'a'.repeat(MAX_HEAD_BYTES)}\r\n\r\n`
  t.equal(parseHead(req(big), '/events'), null, 'a head over node\'s header size limit is node\'s to refuse')
})
