// Property-based: arbitrary publish bodies, channel names, event names, Last-Event-ID values and
// token claims against real gateways (Redis and memory bus) over real sockets. For any input the
// answer is a documented status, never a 5xx, the process stays up, and every accepted message
// reaches a subscriber with the data that was published (README, "What arrives").
// Each property stops at its time limit (fast-check interruptAfterTimeLimit), so the file stays
// well under a minute on a busy machine; FUZZ_SEED=<n> replays a reported failure.
import t from 'tap'
import { createHmac } from 'node:crypto'
import fc from 'fast-check'
import { build, RawStream, SECRET, sign, waitFor, publisherToken, type Gateway } from './helper'
import { channelSetHash } from '../src/delivery/cursor'

const seed = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) : undefined
/** fc.assert with a time limit, reporting how many runs it got through. */
async function prove<Ts extends [unknown, ...unknown[]]> (t: { comment: (...a: any[]) => unknown }, prop: fc.IAsyncProperty<Ts>, ms: number, numRuns: number): Promise<void> {
  const out = await fc.check(prop, { numRuns, interruptAfterTimeLimit: ms, ...(seed !== undefined ? { seed } : {}) })
  if (out.failed) throw new Error(fc.defaultReportMessage(out))
  t.comment(`${out.numRuns} runs${out.interrupted ? ` (stopped at ${ms} ms)` : ''}, seed ${out.seed}`)
}

const MAIN = 'fz:main'
const SUB = 'fuzz'
const CHANNELS = [MAIN, `user:${SUB}`].sort()
const HASH = channelSetHash(CHANNELS)

// Any UTF-16 unit (lone surrogates included), with the characters framing cares about weighted up.
const unit = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 0xffff }).map(c => String.fromCharCode(c)) },
  { weight: 2, arbitrary: fc.constantFrom('\n', '\r', '\r\n', '\u0000', '\ud800', '\udfff', '😀', '\u2028', ' ', 'data: ', ':', '\u0085', '\u007f') },
  { weight: 4, arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 1 }) }
)
const text = (maxLength = 40): fc.Arbitrary<string> => fc.string({ unit, maxLength })

const channel = fc.oneof(
  { weight: 5, arbitrary: fc.constant(MAIN) },
  { weight: 2, arbitrary: text(24) },
  { weight: 2, arbitrary: text(24).map(s => `fz:${s}`) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 1 }) }
)
const eventName = fc.oneof(
  fc.constantFrom('message', 'status', 'a.b:c-d_e', 'reset', 'auth-expired', ''),
  text(70),
  fc.stringMatching(/^[A-Za-z0-9_.:-]{1,64}$/)
)
const nested = (depth: number): unknown => {
  let v: unknown = 'leaf'
  for (let i = 0; i < depth; i++) v = i % 2 === 0 ? [v] : { k: v }
  return v
}
const data = fc.oneof(
  { weight: 4, arbitrary: text(200) },
  { weight: 4, arbitrary: fc.jsonValue({ maxDepth: 4 }) },
  { weight: 2, arbitrary: fc.dictionary(text(8), fc.oneof(text(50), fc.double(), fc.boolean(), fc.constant(null)), { maxKeys: 5 }) },
  { weight: 1, arbitrary: fc.integer({ min: 60, max: 70 }).map(nested) },
  { weight: 1, arbitrary: fc.integer({ min: 70, max: 3000 }).map(nested) },
  // Small to send, large to frame: each line break costs a `data: ` prefix.
  { weight: 1, arbitrary: fc.integer({ min: 1000, max: 160_000 }).map(n => '\n'.repeat(n)) },
  { weight: 1, arbitrary: fc.integer({ min: 200_000, max: 300_000 }).map(n => '\n'.repeat(n % 7) + 'x'.repeat(n)) }
)
const envelope = fc.record({
  channel,
  channels: fc.array(channel, { maxLength: 3 }),
  event: eventName,
  data,
  key: fc.oneof(text(10), fc.integer()),
  id: fc.string(),
  ts: fc.oneof(fc.integer(), fc.double(), fc.string()),
  extra: fc.jsonValue({ maxDepth: 1 })
}, { requiredKeys: [] })
const body = fc.oneof(
  { weight: 6, arbitrary: envelope },
  { weight: 3, arbitrary: fc.array(envelope, { maxLength: 4 }) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) }
)

/** What a subscriber gets for a published `data`: in raw strings CR and CRLF are LF, lone surrogates U+FFFD. */
function arrives (value: unknown): string {
  const s = typeof value === 'string' ? value : JSON.stringify(value)
  return Buffer.from(s.replace(/\r\n|\r/g, '\n'), 'utf8').toString('utf8')
}

/** The messages a 202 published on MAIN, in order (an accepted body is well-formed). */
function onMain (b: unknown): Array<{ event: string, data: unknown, key?: unknown }> {
  const items = Array.isArray(b) ? b : [b]
  const out: Array<{ event: string, data: unknown, key?: unknown }> = []
  for (const it of items as Array<Record<string, any>>) {
    for (const c of (it.channels ?? [it.channel]) as unknown[]) if (c === MAIN) out.push({ event: it.event ?? 'message', data: it.data, key: it.key })
  }
  return out
}

function mainId (cursor: string | undefined): string | undefined {
  return cursor?.split(':')[1]?.split(',')[CHANNELS.indexOf(MAIN)]
}

async function healthy (t: { equal: (...args: any[]) => unknown }, gws: Gateway[]): Promise<void> {
  for (const gw of gws) t.equal((await fetch(`${gw.url}/healthz`)).status, 200, 'still serving')
}

t.test('fuzz', async t => {
  const redis = await build(t, { BATCH_WINDOW_MS: '5' })
  const memory = await build(t, { BATCH_WINDOW_MS: '5', REDIS_URL: '' })
  const gws = { redis, memory }
  const reader = sign({ sub: SUB, channels: ['fz:*'] })
  const subs = Object.fromEntries(Object.entries(gws).map(([k, gw]) => [k, new RawStream(gw.port, `/events?channel=${MAIN}`, { authorization: `Bearer ${reader}` })])) as Record<keyof typeof gws, RawStream>
  t.teardown(() => { for (const s of Object.values(subs)) s.close() })
  for (const s of Object.values(subs)) await waitFor(() => s.frames().some(f => f.id !== undefined), 10000, 'subscriber live')
  const token = publisherToken()

  t.test('publish bodies: 202, 400 or 413; what is accepted arrives as published', async t => {
    await prove(t, fc.asyncProperty(body, fc.constantFrom('redis', 'memory') as fc.Arbitrary<keyof typeof gws>, async (b, which) => {
      const gw = gws[which]
      const sub = subs[which]
      const seen = sub.messages().length
      const res = await fetch(`${gw.url}/publish`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(b) })
      const answer = await res.json()
      if (![202, 400, 413].includes(res.status)) throw new Error(`status ${res.status}: ${JSON.stringify(answer)}`)
      if (res.status !== 202) {
        if (typeof answer.error !== 'string' || typeof answer.message !== 'string') throw new Error(`no {error, message}: ${JSON.stringify(answer)}`)
        return
      }
      // Through JSON as the server saw it (-0 is 0, a lone surrogate survives as \\udXXX).
      const seenByServer = JSON.parse(JSON.stringify(b))
      const sent = onMain(seenByServer)
      if (sent.length === 0) return
      const mainIds = (answer.ids as string[]).filter((_, i) => flatChannels(seenByServer)[i] === MAIN)
      const last = mainIds[mainIds.length - 1]
      await waitFor(() => sub.messages().slice(seen).some(m => mainId(m.id) === last), 10000, `message ${last} on ${which}`)
      const got = sub.messages().slice(seen)
      const byId = new Map(mainIds.map((id, i) => [id, sent[i]]))
      for (const m of got) {
        const want = byId.get(mainId(m.id) as string)
        if (want === undefined) throw new Error(`unexpected frame ${m.id}`)
        if ((m.event ?? 'message') !== want.event) throw new Error(`event ${m.event} != ${want.event}`)
        if (m.data !== arrives(want.data)) throw new Error(`data differs: sent ${JSON.stringify(want.data)?.slice(0, 200)}, got ${JSON.stringify(m.data)?.slice(0, 200)}`)
      }
      // A message is only ever missing when a newer one with its key replaced it (conflation).
      const delivered = new Set(got.map(m => mainId(m.id)))
      mainIds.forEach((id, i) => {
        if (!delivered.has(id) && !sent.slice(i + 1).some(s => s.key !== undefined && s.key === sent[i].key)) throw new Error(`message ${id} never arrived`)
      })
    }), 12000, 300)
    await healthy(t, Object.values(gws))
    t.notOk(subs.redis.ended() || subs.memory.ended(), 'no subscriber was cut')
  })

  t.test('channel names and event filters on GET /events: 200, 400 or 403; a channel one can read, one can publish to', async t => {
    const any = sign({ sub: 'any', channels: ['*'] })
    await prove(t, fc.asyncProperty(text(30), fc.option(text(20)), async (ch, events) => {
      const q = `channel=${pct(ch)}${events !== null ? `&events=${pct(events)}` : ''}`
      const ctl = new AbortController()
      const res = await fetch(`${redis.url}/events?${q}`, { headers: { authorization: `Bearer ${any}` }, signal: ctl.signal })
      if (res.status !== 200) {
        if (![400, 403].includes(res.status)) throw new Error(`status ${res.status}`)
        await res.json()
        return
      }
      ctl.abort()
      // The name as the gateway decoded it from the URL (UTF-8: a lone surrogate is U+FFFD there).
      const named = Buffer.from(ch, 'utf8').toString('utf8')
      const p = await fetch(`${redis.url}/publish`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ channel: named, data: 1 }) })
      if (p.status !== 202) throw new Error(`channel ${JSON.stringify(ch)} streams but publishing to it answers ${p.status}`)
    }), 5000, 150)
    await healthy(t, [redis])
  })

  t.test('Last-Event-ID values: 200 (a stream with a cursor) or 400; never 5xx', async t => {
    const cursorish = fc.tuple(fc.oneof(fc.constant(HASH), text(8)), fc.array(fc.oneof(
      fc.tuple(fc.bigInt({ min: 0n, max: 10n ** 17n }), fc.bigInt({ min: 0n, max: 10n ** 17n })).map(([a, b]) => `${a}-${b}`),
      text(10)
    ), { maxLength: 3 })).map(([h, ids]) => `${h}:${ids.join(',')}`)
    // Header values as a raw socket can send them (CR and LF would end the header itself).
    const value = fc.oneof(cursorish, text(60)).map(v => v.replace(/[\r\n]/g, ''))
    await prove(t, fc.asyncProperty(value, fc.boolean(), fc.constantFrom('redis', 'memory') as fc.Arbitrary<keyof typeof gws>, async (v, inQuery, which) => {
      const gw = gws[which]
      const path = inQuery ? `/events?channel=${MAIN}&lastEventId=${pct(v)}` : `/events?channel=${MAIN}`
      const s = new RawStream(gw.port, path, { authorization: `Bearer ${reader}`, ...(inQuery ? {} : { 'last-event-id': v }) })
      try {
        await s.waitHead()
        if (s.status === 200) await waitFor(() => s.frames().some(f => f.id !== undefined), 10000, 'a cursor')
        else if (s.status !== 400) throw new Error(`status ${s.status} for ${JSON.stringify(v)}`)
      } finally {
        s.close()
      }
    }), 6000, 200)
    await healthy(t, Object.values(gws))
  })

  t.test('claims: any signed payload is 200/400/401/403 on a stream and 202/401/403 on publish; a sub that streams can be published to', async t => {
    const claim = fc.oneof(fc.jsonValue({ maxDepth: 2 }), text(20))
    const payload = fc.record({
      sub: fc.oneof(text(40), claim),
      channels: fc.oneof(fc.array(fc.oneof(text(12), fc.constant('*'), fc.constant('fz:*'))), claim),
      role: fc.oneof(fc.constant('publisher'), claim),
      exp: fc.oneof(fc.integer({ min: Math.floor(Date.now() / 1000) - 100, max: 2 ** 53 }), fc.double(), claim),
      nbf: fc.oneof(fc.integer(), claim),
      iss: claim,
      aud: claim
    }, { requiredKeys: [] })
    await prove(t, fc.asyncProperty(payload, async (p) => {
      const jwt = hs256(p)
      const ctl = new AbortController()
      const s = await fetch(`${redis.url}/events?channel=fz:c`, { headers: { authorization: `Bearer ${jwt}` }, signal: ctl.signal })
      if (![200, 400, 401, 403].includes(s.status)) throw new Error(`stream: ${s.status}`)
      if (s.status === 200) {
        ctl.abort()
        // One rule for user ids and channel names: the stream's private channel takes messages.
        const own = await fetch(`${redis.url}/publish`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ channel: `user:${(p as { sub: string }).sub}`, data: 1 }) })
        if (own.status !== 202) throw new Error(`sub ${JSON.stringify((p as { sub: unknown }).sub)} streams, but its channel answers ${own.status}`)
      } else {
        await s.json()
      }
      const r = await fetch(`${redis.url}/publish`, { method: 'POST', headers: { authorization: `Bearer ${jwt}`, 'content-type': 'application/json' }, body: '{"channel":"fz:c","data":1}' })
      if (![202, 401, 403].includes(r.status)) throw new Error(`publish: ${r.status} ${await r.text()}`)
    }), 5000, 200)
    await healthy(t, [redis])
  })
})

/** Percent-encodes every UTF-8 byte (a lone surrogate goes out as U+FFFD; encodeURIComponent would throw). */
function pct (s: string): string {
  let out = ''
  for (const b of Buffer.from(s, 'utf8')) out += `%${b.toString(16).padStart(2, '0')}`
  return out
}

function flatChannels (b: unknown): unknown[] {
  const items = Array.isArray(b) ? b : [b]
  return (items as Array<Record<string, any>>).flatMap(it => (it.channels ?? [it.channel]) as unknown[])
}

/** Signs any payload at all (a signing library would refuse some of them). */
function hs256 (payload: unknown): string {
  const enc = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url')
  const head = `${enc({ alg: 'HS256', typ: 'JWT' })}.${enc(payload)}`
  return `${head}.${createHmac('sha256', SECRET).update(head).digest('base64url')}`
}
