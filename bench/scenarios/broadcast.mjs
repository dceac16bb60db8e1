// broadcast: N streams on one channel, `--rate` messages/s published to it.

import { Setup, finish } from '../lib/setup.mjs'
import { PublisherPool, schedule, padding } from '../lib/publisher.mjs'
import { measure } from '../lib/measure.mjs'
import { round } from '../lib/report.mjs'
import { result } from '../lib/results.mjs'

export async function broadcast (o, { label = 'broadcast', instances = 1, redis = false, perInstance = false } = {}) {
  const total = perInstance ? o.connections * instances : o.connections
  const rate = o.rate ?? 10
  const setup = new Setup(o, { instances, redis, batchMs: o.batchMs, total, channel: 'topic:bench', label })
  await setup.start()
  try {
    const connect = await setup.open()
    // One channel: one publisher connection keeps its order.
    const publisher = new PublisherPool({ urls: [setup.publishUrl], token: setup.publisherToken(), server: setup.server })
    const pad = padding(o.payload)
    const m = await measure(setup, {
      load: async () => {
        const r = await schedule({ publisher, rate, durationS: o.duration, make: (k, t) => ({ channel: 'topic:bench', event: 'tick', data: { s: k + 1, t: round(t, 3), p: pad }, ts: t }) })
        await publisher.drain()
        return r
      },
      expectedTotal: (r) => r.sent * connect.opened,
      expectedFor: (_k, r) => r.sent
    })
    publisher.close()
    return result(o, setup, {
      scenario: label,
      rate,
      connect,
      publish: { sent: m.loadResult.sent, ...publisher.stats() },
      delivery: { expectedPerSecond: rate * connect.opened, ...m.delivery },
      perf: m.perf,
      gateways: m.gateways,
      machineLoad: m.machineLoad
    })
  } finally {
    await finish(setup)
  }
}
