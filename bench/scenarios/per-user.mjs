// per-user: N streams, each on its own user channel; `--rate` messages/s to random users.

import { Setup, finish } from '../lib/setup.mjs'
import { ranges } from '../lib/clients.mjs'
import { PublisherPool, schedule, padding } from '../lib/publisher.mjs'
import { measure } from '../lib/measure.mjs'
import { round } from '../lib/report.mjs'
import { result } from '../lib/results.mjs'

export async function perUser (o, { label = 'per-user', instances = 1, redis = false, perInstance = false } = {}) {
  const total = perInstance ? o.connections * instances : o.connections
  const rate = o.rate ?? total
  const setup = new Setup(o, { instances, redis, batchMs: o.batchMs, total, channel: null, label })
  await setup.start()
  try {
    const connect = await setup.open()
    // Users are sharded over publisher connections (user u → shard u % P; shard k → instance
    // k % K, as behind a load balancer): each channel keeps one path, so its order is kept.
    const shards = o.pubConnections ?? Math.max(2, setup.gws.length * 2)
    const publisher = new PublisherPool({ urls: setup.gws.map(g => g.url), token: setup.publisherToken(), shards, shardOf: (e) => e.u, server: setup.server })
    const pad = padding(o.payload)
    const seqs = new Uint32Array(total)
    const parts = ranges(total, setup.clients.length)
    const m = await measure(setup, {
      load: async () => {
        const r = await schedule({ publisher, rate, durationS: o.duration, make: userMessage(setup, seqs, total, pad) })
        await publisher.drain()
        return r
      },
      expectedTotal: (r) => r.sent,
      expectedFor: (k) => Array.from(seqs.subarray(parts[k][0], parts[k][1]))
    })
    publisher.close()
    return result(o, setup, {
      scenario: label,
      rate,
      connect,
      publish: { sent: m.loadResult.sent, ...publisher.stats() },
      delivery: { expectedPerSecond: rate, ...m.delivery },
      perf: m.perf,
      gateways: m.gateways,
      machineLoad: m.machineLoad
    })
  } finally {
    await finish(setup)
  }
}

/** A message to a random user u (of `total`), numbered per user in `seqs`; `u` is the shard key. */
export function userMessage (setup, seqs, total, pad) {
  return (_k, t) => {
    const u = Math.floor(Math.random() * total)
    const e = { channel: setup.user(u), event: 'tick', data: { s: ++seqs[u], t: round(t, 3), p: pad }, ts: t }
    Object.defineProperty(e, 'u', { value: u, enumerable: false }) // the shard key, not sent
    return e
  }
}
