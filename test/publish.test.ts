import t from 'tap'
import { Redis } from 'ioredis'
import { build, publish, RawStream, sign, waitFor } from './helper'
import { createPublisher } from '../src/publisher'

t.test('publish API: shapes, ids, and bad input that changes nothing', async t => {
  const gw = await build(t, { MAX_BODY_BYTES: '4096' })
  const redis = new Redis(gw.config.redisUrl as string)
  t.teardown(() => redis.quit())
  const historyLength = async (channel: string) => await redis.xlen(`${gw.config.channelPrefix}history:${channel}`)

  const one = await publish(gw.url, { channel: 'topic:a', event: 'e', data: { x: 1 } })
  t.equal(one.status, 202)
  t.match(one.body.ids[0], /^\d+-\d+$/)
  const fan = await publish(gw.url, { channels: ['topic:a', 'topic:b'], event: 'e', data: 'both' })
  t.equal(fan.body.ids.length, 2, 'one event to many channels')
  t.equal(await historyLength('topic:a'), 2)

  const bad: Array<[string, unknown, number, string, RegExp]> = [
    ['malformed JSON', '{"channel": ', 400, 'invalid_json', /JSON/i],
    ['missing channel', { data: 1 }, 400, 'invalid_message', /body\.channel: is required/],
    ['wrong-typed channel', { channel: 5, data: 1 }, 400, 'invalid_channel', /body\.channel: must be a string/],
    ['bad channel name', { channel: 'a b', data: 1 }, 400, 'invalid_channel', /body\.channel/],
    ['wildcard channel', { channel: 'topic:*', data: 1 }, 400, 'invalid_channel', /body\.channel/],
    ['missing data', { channel: 'topic:z' }, 400, 'invalid_message', /body\.data: is required/],
    ['bad event name', { channel: 'topic:z', event: 'a\nb', data: 1 }, 400, 'invalid_message', /body\.event/],
    ['reserved event', { channel: 'topic:z', event: 'reset', data: 1 }, 400, 'invalid_message', /reserved/],
    ['unknown field', { channel: 'topic:z', dta: 1, data: 1 }, 400, 'invalid_message', /body\.dta: unknown field/],
    ['bad key', { channel: 'topic:z', data: 1, key: 7 }, 400, 'invalid_message', /body\.key/],
    ['empty array', [], 400, 'invalid_message', /empty/],
    ['one bad item in a batch', [{ channel: 'topic:z', data: 1 }, { channel: 'topic:z' }], 400, 'invalid_message', /body\[1\]\.data/],
    ['channels and channel', { channel: 'topic:z', channels: ['topic:y'], data: 1 }, 400, 'invalid_message', /either/],
    ['oversized body', { channel: 'topic:z', data: 'x'.repeat(5000) }, 413, 'payload_too_large', /.+/]
  ]
  for (const [what, body, status, code, message] of bad) {
    const r = await publish(gw.url, body)
    t.equal(r.status, status, `${what}: ${status}`)
    t.equal(r.body.error, code, `${what}: ${code}`)
    t.match(r.body.message, message, `${what}: message names the problem`)
  }
  t.equal(await historyLength('topic:z'), 0, 'nothing of a rejected request was published')
  t.equal(await historyLength('topic:y'), 0)

  const noRole = await publish(gw.url, { channel: 'topic:z', data: 1 }, sign({ sub: 'user' }))
  t.equal(noRole.status, 403)
  t.equal(noRole.body.error, 'forbidden')
  const noToken = await fetch(`${gw.url}/publish`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
  t.equal(noToken.status, 401)
  const text = await fetch(`${gw.url}/publish`, { method: 'POST', headers: { authorization: `Bearer ${sign({ sub: 'b', role: 'publisher' })}`, 'content-type': 'application/xml' }, body: '<a/>' })
  t.equal(text.status, 415)
  t.equal(await historyLength('topic:z'), 0)
  const health = await fetch(`${gw.url}/healthz`)
  t.equal(health.status, 200, 'the process is still alive')
})

t.test('the publisher helper publishes with history, exactly like the route', async t => {
  const gw = await build(t)
  const pub = createPublisher({ redis: gw.config.redisUrl as string, prefix: gw.config.channelPrefix })
  t.teardown(() => pub.close())
  const s = new RawStream(gw.port, '/events', { authorization: `Bearer ${sign({ sub: 'author' })}` })
  t.teardown(() => s.close())
  await waitFor(() => s.frames().some(f => f.id !== undefined))
  const ids = await pub.publish({ channel: 'user:author', event: 'comment', data: { post: 7 } })
  t.equal(ids.length, 1)
  const [m] = await s.waitMessages(1)
  t.equal(m.event, 'comment')
  t.ok(m.id?.endsWith(ids[0]))
  await t.rejects(pub.publish({ channel: 'bad name', data: 1 }), /body\.channel/)
})
