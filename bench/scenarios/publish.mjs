// publish: autocannon posts to /publish (one message per request, then 100) to random users
// while N per-user streams receive them.

import { Setup, finish } from '../lib/setup.mjs'
import { ranges } from '../lib/clients.mjs'
import { padding } from '../lib/publisher.mjs'
import { measure } from '../lib/measure.mjs'
import { nowMs } from '../lib/hist.mjs'
import { round } from '../lib/report.mjs'
import { result } from '../lib/results.mjs'

export async function publish (o) {
  const { default: autocannon } = await import('autocannon')
  const total = o.connections
  const setup = new Setup(o, { instances: o.instances ?? 1, redis: o.redis || (o.instances ?? 1) > 1, batchMs: o.batchMs, total, channel: null, label: 'publish' })
  await setup.start()
  const out = []
  try {
    const connect = await setup.open()
    const token = setup.publisherToken()
    const pad = padding(o.payload)
    const C = o.publishers
    for (const perRequest of [1, 100]) {
      const seqs = new Uint32Array(total)
      const parts = ranges(total, setup.clients.length)
      let assigned = 0
      let accepted = 0
      // A user's channel is in at most one request in flight at a time (autocannon keeps a
      // context from a request's setup to its response), so the per-channel order at the
      // gateway is the send order and out-of-order counts mean what they say.
      const inFlight = new Set()
      const pick = (mine) => {
        for (let tries = 0; tries < 50; tries++) {
          const u = Math.floor(Math.random() * total)
          if (!inFlight.has(u) || mine.has(u)) return u
        }
        return mine.size > 0 ? mine.values().next().value : -1
      }
      let ac = null
      const m = await measure(setup, {
        load: async () => {
          const t0 = nowMs()
          ac = await autocannon({
            url: `${setup.publishUrl}/publish`,
            connections: C,
            pipelining: 1,
            duration: o.duration,
            headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
            requests: [{
              method: 'POST',
              path: '/publish',
              setupRequest: (req, context) => {
                const t = nowMs()
                const batch = []
                const mine = new Set()
                for (let j = 0; j < perRequest; j++) {
                  const u = pick(mine)
                  if (u < 0) break
                  mine.add(u)
                  inFlight.add(u)
                  batch.push({ channel: setup.user(u), event: 'tick', data: { s: ++seqs[u], t: round(t, 3), p: pad }, ts: t })
                }
                if (batch.length === 0) batch.push({ channel: 'topic:nobody', event: 'tick', data: { s: 0, t: round(t, 3), p: pad }, ts: t })
                assigned += mine.size === 0 ? 0 : batch.length
                context.users = mine
                context.n = mine.size === 0 ? 0 : batch.length
                return { ...req, body: JSON.stringify(batch.length === 1 ? batch[0] : batch) }
              },
              onResponse: (status, _body, context) => {
                if (status === 202) accepted += context.n
                for (const u of context.users ?? []) inFlight.delete(u)
              }
            }]
          })
          return { sent: accepted, elapsedMs: nowMs() - t0, firstAt: t0 }
        },
        expectedTotal: () => accepted,
        expectedFor: (k) => Array.from(seqs.subarray(parts[k][0], parts[k][1]))
      })
      // Messages whose request was built but never answered 202 cannot be delivered.
      const unaccepted = assigned - accepted
      m.delivery.lostRaw = m.delivery.lost
      m.delivery.lost = Math.max(0, m.delivery.lost - unaccepted)
      out.push(result(o, setup, {
        scenario: perRequest === 1 ? 'publish' : `publish-x${perRequest}`,
        connect,
        publish: {
          tool: 'autocannon',
          connections: C,
          messagesPerRequest: perRequest,
          durationS: o.duration,
          requestsPerSecond: round(ac.requests.average, 0),
          messagesPerSecond: round(ac.requests.average * perRequest, 0),
          requests: ac.requests.total,
          latencyMs: { p50: ac.latency.p50, p90: ac.latency.p90, p99: ac.latency.p99, max: ac.latency.max, mean: ac.latency.average },
          non2xx: ac.non2xx,
          errors: ac.errors,
          timeouts: ac.timeouts,
          assigned,
          accepted,
          unaccepted
        },
        delivery: m.delivery,
        gateways: m.gateways,
        machineLoad: m.machineLoad
      }))
    }
    return out
  } finally {
    await finish(setup)
  }
}
