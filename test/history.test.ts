import t from 'tap'
import { build, publish, sign, uniquePrefix } from './helper'

const reader = sign({ sub: 'ann', channels: ['topic:*'] })

async function history (url: string, path: string, token: string | null = reader): Promise<{ status: number, body: any }> {
  const res = await fetch(`${url}${path}`, { headers: token === null ? {} : { authorization: `Bearer ${token}` } })
  return { status: res.status, body: await res.json() }
}

async function publishN (url: string, channel: string, from: number, to: number): Promise<string[]> {
  const ids: string[] = []
  for (let at = from; at < to; at += 50) {
    const batch = []
    for (let n = at; n < Math.min(to, at + 50); n++) batch.push({ channel, event: 'tick', data: { n } })
    const r = await publish(url, batch)
    if (r.status !== 202) throw new Error(`publish answered ${r.status}`)
    ids.push(...r.body.ids)
  }
  return ids
}

const CLUSTER = process.env.REDIS_CLUSTER_NODES
const kinds = CLUSTER !== undefined && CLUSTER !== '' ? ['redis', 'memory', 'cluster'] as const : ['redis', 'memory'] as const
for (const bus of kinds) {
  const env: Record<string, string> = bus === 'memory' ? { REDIS_URL: '' } : bus === 'cluster' ? { REDIS_URL: '', REDIS_CLUSTER_NODES: CLUSTER as string } : {}

  t.test(`${bus}: pages through a channel with no gap, published on one instance and read on another`, async t => {
    const prefix = uniquePrefix()
    const a = await build(t, { ...env, CHANNEL_PREFIX: prefix })
    // The memory bus is one process: both "instances" are the same one there.
    const b = bus === 'memory' ? a : await build(t, { ...env, CHANNEL_PREFIX: prefix })
    const ids = await publishN(a.url, 'topic:h', 0, 250)
    const got: Array<{ id: string, n: number }> = []
    let after: string | null = null
    let pages = 0
    for (;;) {
      const r = await history(b.url, `/channels/topic:h/history?limit=100${after === null ? '' : `&after=${after}`}`)
      t.equal(r.status, 200)
      pages++
      for (const m of r.body.messages) got.push({ id: m.id, n: m.data.n })
      t.equal(r.body.channel, 'topic:h')
      t.equal(r.body.head, ids[ids.length - 1], 'head is the newest id')
      t.notOk(r.body.reset)
      if (r.body.next === null) break
      t.equal(r.body.next, r.body.messages[r.body.messages.length - 1].id, 'next is the last id of the page')
      after = r.body.next
    }
    t.equal(pages, 3, '100 + 100 + 50')
    t.same(got.map(g => g.id), ids, 'every id once, oldest first')
    t.same(got.map(g => g.n), Array.from({ length: 250 }, (_, i) => i))
    const first = await history(b.url, '/channels/topic:h/history?limit=1')
    t.same(first.body.messages, [{ id: ids[0], event: 'tick', data: { n: 0 }, ts: first.body.messages[0].ts }], 'message fields')
    const none = await history(b.url, `/channels/topic:h/history?after=${ids[249]}`)
    t.same(none.body.messages, [], 'nothing after the head')
    t.equal(none.body.next, null)
    const empty = await history(b.url, '/channels/topic:never/history')
    t.same(empty.body, { channel: 'topic:never', messages: [], next: null, head: '0-0' }, 'a channel without history')
  })

  t.test(`${bus}: a trimmed history starts at the oldest retained message; a stale cursor says reset`, async t => {
    const gw = await build(t, { ...env, HISTORY_SIZE: '10' })
    const ids = await publishN(gw.url, 'topic:t', 0, 25)
    const r = await history(gw.url, '/channels/topic:t/history')
    t.equal(r.status, 200)
    t.same(r.body.messages.map((m: any) => m.data.n), [15, 16, 17, 18, 19, 20, 21, 22, 23, 24], 'the 10 retained, oldest first')
    t.notOk(r.body.reset, 'asking from the start is not a reset')
    const stale = await history(gw.url, `/channels/topic:t/history?after=${ids[2]}&limit=3`)
    t.equal(stale.body.reset, true, 'the cursor is older than the history')
    t.same(stale.body.messages.map((m: any) => m.data.n), [15, 16, 17], 'and the page starts at the oldest retained')
    t.equal(stale.body.next, ids[17])
  })
}

t.test('who may read which history, and bad parameters', async t => {
  const gw = await build(t)
  await publish(gw.url, [{ channel: 'user:ann', data: 'mine' }, { channel: 'team:1', data: 'theirs' }])
  t.equal((await history(gw.url, '/channels/user:ann/history')).status, 200, 'the own user channel')
  const other = await history(gw.url, '/channels/user:bob/history')
  t.equal(other.status, 403)
  t.same(other.body, { error: 'forbidden_channel', message: 'the token does not allow channel "user:bob"' })
  t.equal((await history(gw.url, '/channels/team:1/history')).status, 403, 'not in the channels claim')
  const pub = await history(gw.url, '/channels/team:1/history', sign({ sub: 'backend', role: 'publisher' }))
  t.equal(pub.status, 200, 'a publisher reads any channel')
  t.equal(pub.body.messages[0].data, 'theirs')
  t.equal((await history(gw.url, '/channels/topic:x/history', null)).status, 401, 'no token')

  const bad = async (path: string, error: string, message: RegExp): Promise<void> => {
    const r = await history(gw.url, path)
    t.equal(r.status, 400, path)
    t.equal(r.body.error, error, path)
    t.match(r.body.message, message, path)
  }
  await bad('/channels/topic:x/history?after=abc', 'invalid_request', /^after: must be a message id/)
  await bad('/channels/topic:x/history?after=1-2&after=3-4', 'invalid_request', /^after:/)
  await bad('/channels/topic:x/history?limit=0', 'invalid_request', /^limit: must be an integer from 1 to 1000/)
  await bad('/channels/topic:x/history?limit=1001', 'invalid_request', /^limit:/)
  await bad('/channels/topic:x/history?limit=1e3', 'invalid_request', /^limit:/)
  await bad('/channels/topic%20x/history', 'invalid_channel', /must not contain whitespace/)
  await bad(`/channels/topic:${'x'.repeat(300)}/history`, 'invalid_channel', /at most 200 characters/)
})
