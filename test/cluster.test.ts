import t, { type Test } from 'tap'
import net from 'node:net'
import { Redis } from 'ioredis'
import { ClusterBus } from '../src/bus/redis/cluster-bus'
import { ShardConn, type ShardEvents } from '../src/bus/redis/shard-conn'
import { slotOf } from '../src/bus/redis/slots'
import { KeyLayout } from '../src/bus/redis/codec'
import { CONTROL_CHANNEL } from '../src/revocation/revocations'
import { build, publish, publisherToken, RawStream, sign, waitFor, type Gateway } from './helper'

// ---------------------------------------------------------------------------------------------
// The shard connection's reply matching, against a scripted fake server: the races it exists
// for (a push arriving while an SSUBSCRIBE is in flight) cannot be timed on a real cluster.
// These need no cluster and always run.
// ---------------------------------------------------------------------------------------------

const bulk = (s: string): string => `$${Buffer.byteLength(s)}\r\n${s}\r\n`
const push = (...parts: Array<string | number>): string =>
  `*${parts.length}\r\n` + parts.map(p => typeof p === 'number' ? `:${p}\r\n` : bulk(p)).join('')

/** A server that hands each parsed command to `onCommand`, which writes whatever it likes. */
async function fakeServer (t: { teardown (fn: () => unknown): void }, onCommand: (args: string[], sock: net.Socket) => void): Promise<number> {
  const server = net.createServer(sock => {
    let buf = ''
    sock.on('data', chunk => {
      buf += chunk.toString('utf8')
      for (;;) {
        const m = /^\*(\d+)\r\n/.exec(buf)
        if (m === null) return
        let at = m[0].length
        const args: string[] = []
        for (let i = 0; i < Number(m[1]); i++) {
          const h = /^\$(\d+)\r\n/.exec(buf.slice(at))
          if (h === null) return
          const len = Number(h[1])
          if (buf.length < at + h[0].length + len + 2) return
          args.push(buf.slice(at + h[0].length, at + h[0].length + len))
          at += h[0].length + len + 2
        }
        buf = buf.slice(at)
        onCommand(args, sock)
      }
    })
    sock.on('error', () => {})
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise(resolve => server.close(resolve)))
  return (server.address() as net.AddressInfo).port
}

function recorder (): { events: string[], ev: ShardEvents } {
  const events: string[] = []
  return {
    events,
    ev: {
      message: (_c, ch, payload) => events.push(`message ${ch} ${payload}`),
      confirmed: (_c, ch) => events.push(`confirmed ${ch}`),
      lapsed: (_c, ch, reason) => events.push(`lapsed ${ch} ${reason}`),
      lost: () => events.push('lost')
    }
  }
}

t.test('shard connection: replies are matched by channel, pushes are told apart', async t => {
  t.test('a sunsubscribe pushed while an SSUBSCRIBE is in flight does not confirm it early', async t => {
    const port = await fakeServer(t, ([cmd, ch], sock) => {
      if (cmd === 'CLIENT') sock.write('+OK\r\n')
      else if (cmd === 'SSUBSCRIBE' && ch === 'b') sock.write(push('ssubscribe', 'b', 1))
      // The slot of b moves away just as a is being subscribed: the push comes first.
      else if (cmd === 'SSUBSCRIBE' && ch === 'a') sock.write(push('sunsubscribe', 'b', 0) + push('ssubscribe', 'a', 1))
    })
    const { events, ev } = recorder()
    const conn = new ShardConn('fake', '127.0.0.1', port, ev, 'test')
    t.teardown(() => conn.close())
    conn.add('b')
    await waitFor(() => events.includes('confirmed b'))
    conn.add('a')
    await waitFor(() => events.length >= 3)
    t.same(events, ['confirmed b', 'lapsed b sunsubscribe pushed by the server', 'confirmed a'],
      'b lapsed (the push), a confirmed by its own reply')
    t.same([...conn.want], ['a'], 'b is no longer held here')
  })

  t.test('subscribe, unsubscribe, subscribe in flight: only the last SSUBSCRIBE confirms', async t => {
    const replies: string[] = []
    const port = await fakeServer(t, ([cmd, ch], sock) => {
      if (cmd === 'CLIENT') sock.write('+OK\r\n')
      else replies.push(push(cmd.toLowerCase(), ch, cmd === 'SSUBSCRIBE' ? 1 : 0))
      if (replies.length === 3) sock.write(replies.join('')) // all three answers in one read
    })
    const { events, ev } = recorder()
    const conn = new ShardConn('fake', '127.0.0.1', port, ev, 'test')
    t.teardown(() => conn.close())
    await waitFor(() => conn.connected)
    conn.add('a')
    conn.remove('a')
    conn.add('a')
    await waitFor(() => events.length > 0)
    await new Promise(resolve => setImmediate(resolve))
    t.same(events, ['confirmed a'], 'one confirmation, by the reply to the latest SSUBSCRIBE')
  })

  t.test('MOVED for an SSUBSCRIBE lapses the channel; messages only for channels held', async t => {
    const port = await fakeServer(t, ([cmd, ch], sock) => {
      if (cmd === 'CLIENT') sock.write('+OK\r\n')
      else if (cmd === 'SSUBSCRIBE' && ch === 'gone') sock.write('-MOVED 866 127.0.0.1:7002\r\n')
      else if (cmd === 'SSUBSCRIBE') {
        // Byte by byte: replies and messages split anywhere still parse.
        const out = push('ssubscribe', ch, 1) + push('smessage', ch, '1-0 {"x":"é"}') + push('smessage', 'other', 'ignored')
        const bytes = Buffer.from(out)
        for (let i = 0; i < bytes.length; i++) sock.write(bytes.subarray(i, i + 1))
      }
    })
    const { events, ev } = recorder()
    const conn = new ShardConn('fake', '127.0.0.1', port, ev, 'test')
    t.teardown(() => conn.close())
    conn.add('gone')
    conn.add('kept')
    await waitFor(() => events.length >= 3)
    t.same(events, ['lapsed gone MOVED 866 127.0.0.1:7002', 'confirmed kept', 'message kept 1-0 {"x":"é"}'])
  })

  t.test('a closed connection is lost once', async t => {
    const port = await fakeServer(t, (_args, sock) => sock.destroy())
    const { events, ev } = recorder()
    const conn = new ShardConn('fake', '127.0.0.1', port, ev, 'test')
    conn.add('a')
    await waitFor(() => events.includes('lost'))
    conn.close()
    t.same(events, ['lost'])
    t.ok(conn.dead)
  })
})

// ---------------------------------------------------------------------------------------------
// Against a real cluster (CI starts one with .ci/redis-cluster.sh).
// ---------------------------------------------------------------------------------------------

const NODES = process.env.REDIS_CLUSTER_NODES === '' ? undefined : process.env.REDIS_CLUSTER_NODES

if (NODES === undefined) {
  t.comment('REDIS_CLUSTER_NODES is not set: skipping the Redis Cluster tests (bash .ci/redis-cluster.sh start)')
} else {
  clusterTests(NODES)
}

interface Node { id: string, host: string, port: number, key: string }
interface Master extends Node { ranges: Array<[number, number]>, replicas: Node[] }

function clusterTests (seeds: string): void {
  const env = { REDIS_URL: '', REDIS_CLUSTER_NODES: seeds }
  const [seedHost, seedPort] = seeds.split(',')[0].split(':')
  const admins = new Map<string, Redis>()
  t.teardown(() => { for (const r of admins.values()) r.disconnect() })
  const admin = (n: { host: string, port: number }): Redis => {
    const key = `${n.host}:${n.port}`
    let r = admins.get(key)
    if (r === undefined) {
      r = new Redis({ host: n.host, port: n.port, maxRetriesPerRequest: 1 })
      r.on('error', () => {})
      admins.set(key, r)
    }
    return r
  }
  const call = async (n: { host: string, port: number }, ...args: Array<string | number>): Promise<any> =>
    await admin(n).call(String(args[0]), ...args.slice(1))

  async function topology (via: { host: string, port: number } = { host: seedHost, port: Number(seedPort) }): Promise<Master[]> {
    const slots = await call(via, 'CLUSTER', 'SLOTS') as Array<[number, number, ...Array<[string, number, string]>]>
    const masters = new Map<string, Master>()
    for (const [start, end, m, ...replicas] of slots) {
      const [host, port, id] = m
      let master = masters.get(id)
      if (master === undefined) {
        master = { id, host, port, key: `${host}:${port}`, ranges: [], replicas: replicas.map(([h, p, i]) => ({ id: i, host: h, port: p, key: `${h}:${p}` })) }
        masters.set(id, master)
      }
      master.ranges.push([start, end])
    }
    return [...masters.values()].sort((x, y) => x.port - y.port)
  }
  const owns = (m: Master, slot: number): boolean => m.ranges.some(([s, e]) => slot >= s && slot <= e)
  const slotOfChannel = (name: string): number => slotOf(new KeyLayout('', true).pubsub(name))
  /** A channel name `<base><n>` whose slot the master owns. */
  const channelOn = (m: Master, base: string): string => {
    for (let i = 0; ; i++) if (owns(m, slotOfChannel(`${base}${i}`))) return `${base}${i}`
  }
  const role = async (n: Node): Promise<string> => String((await call(n, 'ROLE'))[0])
  const shardSubscribers = async (n: Node, prefix: string): Promise<number> =>
    String(await call(n, 'CLIENT', 'LIST')).split('\n').filter(l => l.includes(` name=sse-gateway:ssub:${prefix} `)).length
  const shardNumSub = async (n: Node, pubsub: string): Promise<number> =>
    Number((await call(n, 'PUBSUB', 'SHARDNUMSUB', pubsub))[1])

  /** Every node agrees on one owner per slot, cluster_state:ok, replicas in sync. */
  async function settled (): Promise<boolean> {
    const masters = await topology()
    const all: Node[] = masters.flatMap(m => [m, ...m.replicas])
    if (all.length < 6) return false
    const views: string[] = []
    for (const n of all) {
      const info = String(await call(n, 'CLUSTER', 'INFO'))
      if (!info.includes('cluster_state:ok')) return false
      views.push(JSON.stringify((await topology(n)).map(m => [m.id, m.ranges])))
      if ((await role(n)) === 'slave' && !String(await call(n, 'INFO', 'replication')).includes('master_link_status:up')) return false
    }
    return views.every(v => v === views[0])
  }

  /**
   * CLUSTER FAILOVER sent to a replica, retried: a manual failover times out (and is simply
   * dropped) when the master has not yet learnt that this node is its replica.
   */
  async function promote (replica: Node): Promise<void> {
    for (let attempt = 0; attempt < 5; attempt++) {
      await call(replica, 'CLUSTER', 'FAILOVER')
      const promoted = await waitFor(async () => await role(replica) === 'master', 8000).then(() => true, () => false)
      if (promoted) return
    }
    throw new Error(`${replica.key} was not promoted`)
  }

  async function migrateSlot (slot: number, from: Master, to: Master): Promise<void> {
    await call(to, 'CLUSTER', 'SETSLOT', slot, 'IMPORTING', from.id)
    await call(from, 'CLUSTER', 'SETSLOT', slot, 'MIGRATING', to.id)
    for (let i = 0; i < 1000; i++) {
      const keys = await call(from, 'CLUSTER', 'GETKEYSINSLOT', slot, 100) as string[]
      if (keys.length === 0) break
      await call(from, 'MIGRATE', to.host, to.port, '', 0, 5000, 'KEYS', ...keys)
    }
    await call(to, 'CLUSTER', 'SETSLOT', slot, 'NODE', to.id)
    await call(from, 'CLUSTER', 'SETSLOT', slot, 'NODE', to.id)
    for (const m of await topology()) {
      if (m.id !== from.id && m.id !== to.id) await call(m, 'CLUSTER', 'SETSLOT', slot, 'NODE', to.id).catch(() => {})
    }
  }

  /** Publishes numbered messages on channels, alternating gateways, until stopped. */
  class Feed {
    acked = new Map<string, number[]>()
    /** Answered with an error: maybe published, maybe not (never counted as lost). */
    unsure = new Set<number>()
    private n = 0
    private stopped = false
    private readonly done: Promise<void>

    constructor (private readonly gws: Gateway[], private readonly channels: string[], perRequest = 4) {
      for (const c of channels) this.acked.set(c, [])
      const token = publisherToken()
      this.done = (async () => {
        for (let round = 0; !this.stopped && this.n < 50000; round++) {
          const batch = Array.from({ length: perRequest }, (_, k) => ({ channel: channels[k % channels.length], n: this.n + k }))
          this.n += perRequest
          const r = await publish(gws[round % gws.length].url, batch.map(m => ({ channel: m.channel, event: 'seq', data: { c: m.channel, n: m.n } })), token)
            .catch(() => ({ status: 0, body: null }))
          if (r.status === 202) for (const m of batch) this.acked.get(m.channel)?.push(m.n)
          else if (r.status === 503 || r.status === 0) for (const m of batch) this.unsure.add(m.n)
          else throw new Error(`publish answered ${r.status}: ${JSON.stringify(r.body)}`)
        }
      })()
    }

    async stop (): Promise<void> {
      this.stopped = true
      await this.done
    }
  }

  /** What a raw SSE stream received, per channel, in arrival order. */
  const received = (s: RawStream): Map<string, number[]> => {
    const out = new Map<string, number[]>()
    for (const f of s.messages()) {
      const m = JSON.parse(f.data as string)
      let l = out.get(m.c)
      if (l === undefined) out.set(m.c, l = [])
      l.push(m.n)
    }
    return out
  }
  const total = (s: RawStream): number => s.messages().length

  /** Every acknowledged message arrived exactly once, in order, and nothing else did. */
  async function exactlyOnce (t: Test, s: RawStream, feed: Feed): Promise<void> {
    const want = [...feed.acked.values()].reduce((n, l) => n + l.length, 0)
    await waitFor(() => {
      const got = received(s)
      return [...feed.acked].every(([c, l]) => { const set = new Set(got.get(c)); return l.every(n => set.has(n)) })
    }, 30000, `all ${want} acknowledged messages`).catch(() => {})
    const got = received(s)
    for (const [c, acked] of feed.acked) {
      const list = got.get(c) ?? []
      const set = new Set(list)
      const ackedSet = new Set(acked)
      t.ok(acked.length > 100, `${c}: ${acked.length} messages acknowledged (${feed.unsure.size} unsure)`)
      t.same(acked.filter(n => !set.has(n)).slice(0, 20), [], `${c}: nothing lost`)
      t.ok(list.every((n, i) => i === 0 || n > list[i - 1]), `${c}: in order, no duplicate`)
      t.same(list.filter(n => !ackedSet.has(n) && !feed.unsure.has(n)), [], `${c}: nothing that was not published`)
    }
  }

  t.test('slots: slotOf agrees with CLUSTER KEYSLOT', async t => {
    const keys = ['', 'a', 'user:42', 'sse:{user:42}', 'sse:history:{user:42}', '{}', '{}x', 'x{}y', '{a}{b}', 'a{b', 'a}b{c}', 'é€😀', 'x'.repeat(300)]
    for (let i = 0; i < 200; i++) keys.push(`k${i}:${i * 7919}`)
    const theirs = await Promise.all(keys.map(k => call({ host: seedHost, port: Number(seedPort) }, 'CLUSTER', 'KEYSLOT', k)))
    t.same(keys.map(slotOf), theirs.map(Number))
  })

  t.test('one channel per shard, two gateways: cross-instance delivery, one shard connection per master, resume on the other instance', async t => {
    const a = await build(t, env)
    const b = await build(t, { ...env, CHANNEL_PREFIX: a.config.channelPrefix })
    const prefix = a.config.channelPrefix
    const masters = await topology()
    t.equal(masters.length, 3, 'three masters')
    // Two channels on each shard: still one connection per shard, not one per channel.
    const channels = masters.flatMap(m => [channelOn(m, 'shard:a'), channelOn(m, 'shard:b')]).sort()
    const token = sign({ sub: 'c', channels: ['shard:*'] })
    const path = '/events?' + channels.map(c => `channel=${encodeURIComponent(c)}`).join('&')
    const s = new RawStream(b.port, path, { authorization: `Bearer ${token}` })
    t.teardown(() => s.close())
    await waitFor(() => s.frames().some(f => f.id !== undefined))

    const bus = b.app.bus as ClusterBus
    t.equal(bus.kind, 'redis-cluster')
    t.same(bus.shardConnections().sort(), masters.map(m => m.key).sort(), 'one shard connection per master')
    for (const m of masters) {
      // Both gateways hold the control channel (revocations): one more connection on its master, from A.
      const control = owns(m, slotOfChannel(CONTROL_CHANNEL)) ? 1 : 0
      t.equal(await shardSubscribers(m, prefix), 1 + control, `${m.key}: one sharded subscriber of this deployment per gateway with channels there`)
      for (const c of channels.filter(c => owns(m, slotOfChannel(c)))) {
        t.equal(await shardNumSub(m, `${prefix}{${c}}`), 1, `${c}: SSUBSCRIBEd on the master that owns its slot`)
      }
    }

    // One request over every shard (one script per slot), then one per channel.
    const first = await publish(a.url, channels.map((c, i) => ({ channel: c, event: 'seq', data: { c, n: i } })))
    t.equal(first.status, 202)
    t.equal(first.body.ids.length, channels.length)
    for (const [i, c] of channels.entries()) await publish(a.url, { channel: c, event: 'seq', data: { c, n: 100 + i } })
    await s.waitMessages(channels.length * 2)
    t.same([...received(s)].sort(), channels.map((c, i) => [c, [i, 100 + i]]), 'published on A, delivered on B, per channel in order')

    // Cut off; what is published meanwhile is replayed by the other instance, exactly.
    const cursor = s.frames().filter(f => f.id !== undefined).pop()?.id as string
    s.close()
    for (let k = 0; k < 5; k++) await publish(b.url, channels.map((c, i) => ({ channel: c, event: 'seq', data: { c, n: 200 + k * 10 + i } })))
    const r = new RawStream(a.port, path, { authorization: `Bearer ${token}`, 'last-event-id': cursor })
    t.teardown(() => r.close())
    await r.waitMessages(channels.length * 5)
    await publish(b.url, { channel: channels[0], event: 'seq', data: { c: channels[0], n: 999 } })
    await r.waitMessages(channels.length * 5 + 1)
    t.same([...received(r)].sort(), channels.map((c, i) => [c, [0, 1, 2, 3, 4].map(k => 200 + k * 10 + i).concat(i === 0 ? [999] : [])]),
      'resumed on A: exactly what was missed, then live')
  })

  t.test('a shard subscriber connection killed mid-stream: resubscribed, gap refilled from history', async t => {
    const a = await build(t, env)
    const masters = await topology()
    const channels = [channelOn(masters[0], 'kill:'), channelOn(masters[1], 'kill:')]
    const s = new RawStream(a.port, '/events?' + channels.map(c => `channel=${c}`).join('&'), { authorization: `Bearer ${sign({ sub: 'k', channels: ['kill:*'] })}` })
    t.teardown(() => s.close())
    await waitFor(() => s.frames().some(f => f.id !== undefined))
    const feed = new Feed([a], channels)
    t.teardown(() => feed.stop())
    await waitFor(() => total(s) > 200, 20000, 'live traffic')
    const name = `name=sse-gateway:ssub:${a.config.channelPrefix} `
    const line = String(await call(masters[0], 'CLIENT', 'LIST')).split('\n').find(l => l.includes(name)) as string
    t.ok(line, 'found the shard connection')
    await call(masters[0], 'CLIENT', 'KILL', 'ID', /id=(\d+)/.exec(line)?.[1] as string)
    const reconnects = async (): Promise<number> => (await a.app.metrics.busReconnects.get()).values[0]?.value ?? 0
    await waitFor(async () => await reconnects() >= 1, 10000, 'resync')
    await waitFor(async () => await shardSubscribers(masters[0], a.config.channelPrefix) === 1, 10000, 'a new shard connection')
    const after = total(s)
    await waitFor(() => total(s) > after + 200, 20000, 'traffic after the resubscribe')
    await feed.stop()
    await exactlyOnce(t, s, feed)
  })

  t.test('a slot migrated mid-stream (MIGRATING/IMPORTING, MIGRATE, SETSLOT NODE), and back: nothing lost, nothing duplicated', async t => {
    await waitFor(settled, 30000, 'a settled cluster')
    const a = await build(t, env)
    const b = await build(t, { ...env, CHANNEL_PREFIX: a.config.channelPrefix })
    const prefix = a.config.channelPrefix
    const [src, dst] = await topology()
    const moving = channelOn(src, 'mig:')
    const staying = channelOn(src, 'stay:') // same shard, another slot: must not notice
    const slot = slotOfChannel(moving)
    t.not(slotOfChannel(staying), slot)
    t.teardown(async () => {
      // Leave the cluster as found, even when an assertion failed halfway.
      const owner = (await topology()).find(m => owns(m, slot))
      if (owner !== undefined && owner.id !== src.id) await migrateSlot(slot, owner, src)
    })
    const s = new RawStream(a.port, `/events?channel=${moving}&channel=${staying}`, { authorization: `Bearer ${sign({ sub: 'm', channels: ['mig:*', 'stay:*'] })}` })
    t.teardown(() => s.close())
    await waitFor(() => s.frames().some(f => f.id !== undefined))
    const feed = new Feed([a, b], [moving, staying])
    t.teardown(() => feed.stop())
    await waitFor(() => total(s) > 200, 20000, 'live traffic')

    await migrateSlot(slot, src, dst)
    await waitFor(async () => await shardNumSub(dst, `${prefix}{${moving}}`) === 1, 15000, 'the subscription to follow the slot')
    let mark = total(s)
    await waitFor(() => total(s) > mark + 200, 20000, 'traffic after the migration')

    await migrateSlot(slot, dst, src)
    await waitFor(async () => await shardNumSub(src, `${prefix}{${moving}}`) === 1, 15000, 'the subscription to follow it back')
    mark = total(s)
    await waitFor(() => total(s) > mark + 200, 20000, 'traffic after migrating back')
    await feed.stop()
    await exactlyOnce(t, s, feed)
    t.same(a.app.bus.isReady(), true)
  })

  t.test('a master failed over to its replica (CLUSTER FAILOVER) mid-stream, then back: nothing lost', async t => {
    await waitFor(settled, 30000, 'a settled cluster')
    const a = await build(t, env)
    const b = await build(t, { ...env, CHANNEL_PREFIX: a.config.channelPrefix })
    const prefix = a.config.channelPrefix
    const master = (await topology())[2]
    const replica = master.replicas[0]
    t.ok(replica, 'the master has a replica')
    const channels = [channelOn(master, 'fo:'), channelOn(master, 'fo:x')]
    const failBack = async (): Promise<void> => {
      if (await role(master) === 'master') return
      await waitFor(settled, 30000, 'the replica in sync before failing back')
      await promote(master)
      await waitFor(settled, 30000, 'a settled cluster after failing back')
    }
    t.teardown(failBack)
    const s = new RawStream(a.port, '/events?' + channels.map(c => `channel=${c}`).join('&'), { authorization: `Bearer ${sign({ sub: 'f', channels: ['fo:*'] })}` })
    t.teardown(() => s.close())
    await waitFor(() => s.frames().some(f => f.id !== undefined))
    const feed = new Feed([a, b], channels)
    t.teardown(() => feed.stop())
    await waitFor(() => total(s) > 200, 20000, 'live traffic')

    await promote(replica)
    await waitFor(async () => await shardNumSub(replica, `${prefix}{${channels[0]}}`) === 1, 20000, 'the subscription on the new master')
    let mark = total(s)
    await waitFor(() => total(s) > mark + 200, 20000, 'traffic after the failover')

    await failBack()
    await waitFor(async () => await shardNumSub(master, `${prefix}{${channels[0]}}`) === 1, 20000, 'the subscription back on the old master')
    mark = total(s)
    await waitFor(() => total(s) > mark + 200, 20000, 'traffic after failing back')
    await feed.stop()
    await exactlyOnce(t, s, feed)
  })
}
