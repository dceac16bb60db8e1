import t from 'tap'
import { SseParser, type SseMessage } from '../client/parser'

interface Result { messages: SseMessage[], retries: number[], comments: string[], ids: string[] }

function run (chunks: Array<string | Uint8Array>, opts: { lastEventId?: string, end?: boolean } = {}): Result {
  const r: Result = { messages: [], retries: [], comments: [], ids: [] }
  const p = new SseParser({
    onMessage: (m) => r.messages.push(m),
    onRetry: (ms) => r.retries.push(ms),
    onComment: (c) => r.comments.push(c),
    onLastEventId: (id) => r.ids.push(id)
  }, { lastEventId: opts.lastEventId })
  for (const c of chunks) p.feed(c)
  if (opts.end === true) p.end()
  return r
}

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s)
const eachByte = (s: string): Uint8Array[] => Array.from(bytes(s), (b) => Uint8Array.of(b))
const eachChar = (s: string): string[] => s.split('')
const datas = (r: Result): string[] => r.messages.map((m) => m.data)

t.test('LF, CRLF, CR and mixed line endings', async (t) => {
  for (const [name, text] of [
    ['LF', 'data: a\n\ndata: b\n\n'],
    ['CRLF', 'data: a\r\n\r\ndata: b\r\n\r\n'],
    ['CR', 'data: a\r\rdata: b\r\r'],
    ['mixed', 'data: a\r\n\rdata: b\n\r\n']
  ]) {
    t.same(datas(run([text])), ['a', 'b'], `${name} in one chunk`)
    t.same(datas(run(eachChar(text))), ['a', 'b'], `${name} one char at a time`)
  }
})

t.test('a CR ending a chunk and the LF starting the next are one line break', async (t) => {
  // Were the LF a line of its own, "a" would be dispatched alone before "b" arrives.
  t.same(datas(run(['data: a\r', '\ndata: b\r', '\n\r', '\n'])), ['a\nb'])
  // A CR at the end of a chunk followed by a non-LF is a complete line break.
  t.same(datas(run(['data: a\r', 'data: b\r', '\r'])), ['a\nb'])
  t.same(datas(run(['data: a\r', '\r'])), ['a'])
})

t.test('a leading BOM is ignored, once', async (t) => {
  t.same(datas(run([bytes('\uFEFFdata: x\n\n')])), ['x'], 'BOM bytes')
  t.same(datas(run([Uint8Array.of(0xef), Uint8Array.of(0xbb, 0xbf), bytes('data: x\n\n')])), ['x'], 'BOM split across chunks')
  t.same(datas(run(['\uFEFFdata: x\n\n'])), ['x'], 'BOM in text input')
  // A second BOM makes the field name "\uFEFFdata", an unknown field.
  t.same(datas(run([bytes('\uFEFF\uFEFFdata: x\n\n')])), [])
  t.same(datas(run(['data: a\n\n', '\uFEFFdata: b\n\n'])), ['a'], 'only at the start of the stream')
})

t.test('data lines join with LF; one leading space is stripped', async (t) => {
  t.same(datas(run(['data: YHOO\ndata: +2\ndata: 10\n\n'])), ['YHOO\n+2\n10'], 'spec example')
  t.same(datas(run(['data:test\n\ndata: test\n\n'])), ['test', 'test'], 'space is optional')
  t.same(datas(run(['data:  two spaces\n\n'])), [' two spaces'], 'only one space is stripped')
  t.same(datas(run(['data\n\ndata\ndata\n\ndata:'])), ['', '\n'], 'spec example: empty data lines; the unterminated last one is dropped')
  t.same(datas(run(['data: a:b:c\n\n'])), ['a:b:c'], 'only the first colon splits')
  t.same(datas(run(['data: {"a":1}\ndata: [2]\n\n'])), ['{"a":1}\n[2]'])
})

t.test('event type, defaulting to message and reset after each dispatch', async (t) => {
  const r = run(['event: status\ndata: 1\n\ndata: 2\n\nevent\ndata: 3\n\n'])
  t.same(r.messages.map((m) => m.type), ['status', 'message', 'message'])
  const r2 = run(['event: lonely\n\ndata: x\n\n'])
  t.same(r2.messages.map((m) => [m.type, m.data]), [['message', 'x']], 'an event type without data dispatches nothing and does not leak')
})

t.test('id: persists, NUL is ignored, id-only frames move the cursor without dispatching', async (t) => {
  const r = run(['id: 1\ndata: a\n\ndata: b\n\nid: 2\n\nid: bad\0id\ndata: c\n\nid\ndata: d\n\n'])
  t.same(r.messages.map((m) => [m.data, m.lastEventId]), [['a', '1'], ['b', '1'], ['c', '2'], ['d', '']])
  t.same(r.ids, ['1', '2', ''], 'cursor changes, including the id-only frame and the empty id')
  const seeded = run(['data: x\n\n'], { lastEventId: 'resume-7' })
  t.equal(seeded.messages[0].lastEventId, 'resume-7', 'a seeded id carries over')
  t.same(seeded.ids, [], 'seeding is not a change')
  const late = run(['data: x\nid: 9\n\n'])
  t.equal(late.messages[0].lastEventId, '9', 'an id after the data lines still belongs to the frame')
})

t.test('retry: only ASCII digits', async (t) => {
  const r = run(['retry: 1500\n\nretry: 1a\nretry: -5\nretry:\nretry: 1.5\nretry:200\n\n'])
  t.same(r.retries, [1500, 200])
  t.same(r.messages, [], 'retry frames dispatch nothing')
})

t.test('comments and unknown fields', async (t) => {
  const r = run([': hello\n:\n:no space\ndata: x\nfoo: bar\n: mid\n\n'])
  t.same(r.comments, ['hello', '', 'no space', 'mid'])
  t.same(datas(r), ['x'])
  t.same(run([':\n\n: heartbeat\n\n']).messages, [], 'heartbeats dispatch nothing')
})

t.test('partial chunks: every split point gives the same result', async (t) => {
  const text = 'retry: 3000\n: hi\r\nid: 1\r\nevent: status\r\ndata: {"status":\r\ndata: "processing"}\r\n\r\nid: 2\rdata: two\r\rdata: three\n\n'
  const whole = run([text])
  t.equal(whole.messages.length, 3)
  for (let i = 1; i < text.length; i++) {
    const split = run([text.slice(0, i), text.slice(i)])
    t.same(split, whole, `split at ${i}`)
  }
  t.same(run(eachChar(text)), whole, 'one character at a time')
  t.same(run(eachByte(text)), whole, 'one byte at a time')
})

t.test('UTF-8 characters split across chunks are reassembled', async (t) => {
  const text = 'data: é€😀 ✓\n\n'
  t.same(datas(run(eachByte(text))), ['é€😀 ✓'])
  const b = bytes(text)
  for (let i = 1; i < b.length; i++) {
    t.same(datas(run([b.subarray(0, i), b.subarray(i)])), ['é€😀 ✓'], `split at byte ${i}`)
  }
})

t.test('invalid UTF-8 becomes U+FFFD rather than an exception', async (t) => {
  t.same(datas(run([Uint8Array.of(0x64, 0x61, 0x74, 0x61, 0x3a, 0xff, 0x0a, 0x0a)])), ['\uFFFD'])
})

t.test('end(): an unterminated event is discarded; the parser restarts keeping the cursor', async (t) => {
  const r: SseMessage[] = []
  const p = new SseParser({ onMessage: (m) => r.push(m) })
  p.feed('id: 5\ndata: done\n\nid: 6\ndata: half')
  p.end()
  t.same(r.map((m) => m.data), ['done'])
  t.equal(p.lastEventId, '5', 'the id of the discarded frame is not taken')
  p.feed(bytes('\uFEFFdata: next\n\n'))
  t.same(r.map((m) => [m.data, m.lastEventId]), [['done', '5'], ['next', '5']], 'a new stream may start with a BOM again')
  const q = new SseParser({ onMessage: (m) => r.push(m) })
  q.feed('data: a\r')
  q.end()
  q.feed('\ndata: b\n\n')
  t.equal(r.at(-1)?.data, 'b', 'a pending CR does not swallow the next stream\'s first character')
})

t.test('a long line arriving in many chunks', async (t) => {
  const big = 'x'.repeat(200_000)
  const chunks = ['data: ']
  for (let i = 0; i < big.length; i += 1000) chunks.push(big.slice(i, i + 1000))
  chunks.push('\n\n')
  const started = Date.now()
  t.same(datas(run(chunks)), [big])
  t.ok(Date.now() - started < 2000, 'linear, not quadratic, in the number of chunks')
})
