import t from 'tap'
import { compareIds, type Bus, type BusMessage } from '../src/bus/bus'
import { MemoryBus } from '../src/bus/memory-bus'
import { RedisBus } from '../src/bus/redis/redis-bus'
import { ClusterBus } from '../src/bus/redis/cluster-bus'
import { storeBeside } from '../src/app'
import { Refused } from '../src/outcome'
import { REDIS_URL, testConfig, uniquePrefix, waitFor } from './helper'

const REDIS_CLUSTER_NODES = process.env.REDIS_CLUSTER_NODES === '' ? undefined : process.env.REDIS_CLUSTER_NODES

// One contract, every implementation: the same suite runs against each bus.
const implementations: Record<string, (size: number) => Promise<Bus>> = {
  memory: async (size) => new MemoryBus({ historySize: size, historyTtlS: 60 }),
  redis: async (size) => {
    const bus = new RedisBus({ url: REDIS_URL, prefix: uniquePrefix(), historySize: size, historyTtlS: 60 })
    await bus.connect()
    return bus
  }
}
// CI sets REDIS_CLUSTER_NODES (a local cluster from .ci/redis-cluster.sh); without it the
// cluster is simply not in the list.
if (REDIS_CLUSTER_NODES !== undefined) {
  implementations['redis-cluster'] = async (size) => {
    const nodes = testConfig({ REDIS_URL: '', REDIS_CLUSTER_NODES: REDIS_CLUSTER_NODES as string }).redisClusterNodes ?? []
    const bus = new ClusterBus({ nodes, prefix: uniquePrefix(), historySize: size, historyTtlS: 60 })
    await bus.connect()
    return bus
  }
}

const msg = (channel: string, data: unknown, key?: string) => ({ channel, event: 'm', data, key, ts: Date.now() })

for (const [name, make] of Object.entries(implementations)) {
  t.test(`${name} bus`, async t => {
    t.test('publish assigns increasing ids; subscribers get messages in order, once', async t => {
      const bus = await make(100)
      t.teardown(() => bus.close())
      const got: BusMessage[] = []
      const l = { onMessage: (m: BusMessage) => got.push(m) }
      await bus.subscribe('a', l)
      await bus.subscribe('a', l)
      const ids = await bus.publish([msg('a', 1), msg('b', 'x'), msg('a', 2), msg('a', { n: 3 })])
      t.equal(ids.length, 4)
      t.ok(compareIds(ids[0], ids[2]) < 0 && compareIds(ids[2], ids[3]) < 0, 'ids increase per channel')
      await waitFor(() => got.length >= 3)
      t.same(got.map(m => m.data), [1, 2, { n: 3 }])
      t.same(got.map(m => m.id), [ids[0], ids[2], ids[3]])
      t.equal(bus.position('a'), ids[3])
      t.equal(bus.subscriptionCount(), 1)
      bus.unsubscribe('a', l)
      t.equal(bus.subscriptionCount(), 0, 'one listener, one subscription, released once')
    })

    t.test('1,500 channels subscribed in one turn all go live at their own heads', async t => {
      const bus = await make(100)
      t.teardown(() => bus.close())
      const names = Array.from({ length: 1500 }, (_, i) => `many:${i}`)
      const ids = await bus.publish(names.filter((_, i) => i % 500 === 7).map(ch => msg(ch, 'before')))
      const l = { onMessage: () => {} }
      await Promise.all(names.map(ch => bus.subscribe(ch, l)))
      t.same(names.filter((_, i) => i % 500 === 7).map(ch => bus.position(ch)), ids, 'a channel with history starts at its head')
      t.ok(names.filter((_, i) => i % 500 !== 7).every(ch => bus.position(ch) === '0-0'), 'the others at 0-0')
      t.equal(bus.subscriptionCount(), 1500)
      for (const ch of names) bus.unsubscribe(ch, l)
    })

    t.test('a call holding a message that could not be delivered is refused whole, naming it; nothing is published', async t => {
      const bus = await make(100)
      t.teardown(() => bus.close())
      const got: BusMessage[] = []
      await bus.subscribe('lim', { onMessage: m => got.push(m) })
      let deep: unknown = 1
      for (let i = 0; i < 65; i++) deep = [deep]
      const bad: Array<[unknown, RegExp]> = [
        [deep, /messages\[1\]\.data: nests deeper than 64 levels/],
        ['\n'.repeat(40000), /messages\[1\]\.data: frames to 280016 bytes, above MAX_FRAME_BYTES \(262144\)/],
        [10n, /messages\[1\]\.data: is not a JSON value/]
      ]
      for (const [data, why] of bad) {
        const err = await bus.publish([msg('lim', 'ok'), msg('lim', data), msg('other', 'ok')]).catch((e: unknown) => e)
        t.ok(err instanceof Refused, 'a Refused rejection')
        t.match((err as Refused).message, why)
        t.equal((err as Refused).problem.code, data === bad[1][0] ? 'message_too_large' : 'invalid_message')
      }
      t.match(await bus.publish([{ ...msg('lim', 1), event: 'a\nb' }]).catch((e: Refused) => e.message), /messages\[0\]\.event/)
      const [marker] = await bus.publish([msg('lim', 'marker')])
      await waitFor(() => got.length >= 1)
      t.same(got.map(m => m.data), ['marker'], 'only the marker went out live')
      t.same((await bus.read('lim', '0-0')).messages.map(m => m.id), [marker], 'and only the marker is in history')
    })

    t.test('one publish over many channels: ids in input order, each channel gets its own, in order', async t => {
      const bus = await make(100)
      t.teardown(() => bus.close())
      // 24 channels land on every shard of a cluster (and on many slots of each).
      const channels = Array.from({ length: 24 }, (_, i) => `multi:${i}`)
      const got = new Map<string, BusMessage[]>(channels.map(c => [c, []]))
      for (const c of channels) await bus.subscribe(c, { onMessage: m => got.get(c)?.push(m) })
      const batch = Array.from({ length: 96 }, (_, n) => msg(channels[n % 24], n))
      const ids = await bus.publish(batch)
      t.equal(ids.length, 96)
      await waitFor(() => [...got.values()].every(l => l.length === 4))
      const per = (c: number): number[] => [c, c + 24, c + 48, c + 72]
      t.same(channels.map(c => got.get(c)?.map(m => m.data)), channels.map((_, i) => per(i)), 'each channel: its messages, in order')
      t.same(channels.map(c => got.get(c)?.map(m => m.id)), channels.map((_, i) => per(i).map(n => ids[n])), 'with the ids publish returned, in input order')
      const history = await Promise.all(channels.map(c => bus.read(c, '0-0')))
      t.same(history.map(h => h.messages.map(m => m.data)), channels.map((_, i) => per(i)), 'history holds the same')
    })

    t.test('read returns what followed a cursor, and reset for a trimmed one', async t => {
      const bus = await make(5)
      t.teardown(() => bus.close())
      const first = await bus.read('h', '0-0')
      t.same(first, { messages: [], head: '0-0', reset: false }, 'an empty channel')
      const ids: string[] = []
      for (let i = 0; i < 4; i++) ids.push(...await bus.publish([msg('h', i)]))
      const r = await bus.read('h', ids[1])
      t.same(r.messages.map(m => m.data), [2, 3])
      t.equal(r.head, ids[3])
      t.notOk(r.reset)
      for (let i = 4; i < 10; i++) ids.push(...await bus.publish([msg('h', i)]))
      t.ok((await bus.read('h', ids[1])).reset, 'cursor before the retained history')
      t.ok((await bus.read('h', '0-0')).reset, 'cursor at the start of a trimmed channel')
      const kept = await bus.read('h', ids[5])
      t.same(kept.messages.map(m => m.data), [6, 7, 8, 9], 'a cursor inside the history replays exactly')
      t.ok((await bus.read('h', '99999999999999-0')).reset, 'a cursor from another history')
      t.ok((await bus.read('never', ids[0])).reset, 'a cursor for a channel with no history left')
    })

    t.test('a listener that joins late sees only newer messages', async t => {
      const bus = await make(100)
      t.teardown(() => bus.close())
      await bus.publish([msg('late', 'old')])
      const got: unknown[] = []
      await bus.subscribe('late', { onMessage: m => got.push(m.data) })
      await bus.publish([msg('late', 'new')])
      await waitFor(() => got.length === 1)
      t.same(got, ['new'])
    })

    t.test('head: the newest id without reading messages, the same on every bus', async t => {
      const bus = await make(2)
      t.teardown(() => bus.close())
      t.equal(await bus.head('h'), '0-0', 'a channel with no history')
      const ids = await bus.publish([msg('h', 1), msg('h', 2), msg('h', 3), msg('other', 4)])
      t.equal(await bus.head('h'), ids[2], 'the newest, also past the history cap')
      t.equal(await bus.head('other'), ids[3])
      const r = await bus.read('h', ids[1])
      t.same(r.messages.map(m => m.id), [ids[2]])
      t.equal(r.head, ids[2])
      t.same(await bus.read('never', '0-0'), { messages: [], head: '0-0', reset: false }, 'no history reads empty from 0-0, not reset')
    })

    t.test('store: set nx, get, take once, refresh and release only by the holder', async t => {
      const bus = await make(10)
      t.teardown(() => bus.close())
      const s = storeBeside(bus)
      t.ok(await s.set('k', 'v1', 10000, true))
      t.notOk(await s.set('k', 'v2', 10000, true), 'nx refuses an existing key')
      t.equal(await s.get('k'), 'v1')
      t.notOk(await s.refresh('k', 'other', 10000))
      t.ok(await s.refresh('k', 'v1', 10000))
      t.notOk(await s.release('k', 'other'))
      t.ok(await s.release('k', 'v1'))
      t.equal(await s.get('k'), null)
      await s.set('once', 'x', 10000)
      t.equal(await s.take('once'), 'x')
      t.equal(await s.take('once'), null, 'taken once only')
      await s.set('short', 'x', 30)
      await waitFor(async () => (await s.get('short')) === null, 2000, 'ttl expiry')
      await s.set('d', 'x', 10000)
      await s.del('d')
      t.equal(await s.get('d'), null)
    })
  })
}

t.test('compareIds orders Redis stream ids numerically', async t => {
  t.ok(compareIds('9-0', '10-0') < 0)
  t.ok(compareIds('10-2', '10-10') < 0)
  t.ok(compareIds('1700000000000-5', '1700000000000-5') === 0)
  t.ok(compareIds('1700000000001-0', '1700000000000-99') > 0)
})
