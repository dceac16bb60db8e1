// storm: N streams on instance A; A is killed with SIGKILL while a publisher keeps `--rate`
// messages/s (1,000) going to the streams' user channels through the other instance(s); every
// stream reconnects with its Last-Event-ID to B. Measures the time until all N are live again,
// latency while they come back, and that nothing was lost or duplicated across the handover.

import { Setup, finish } from '../lib/setup.mjs'
import { ranges } from '../lib/clients.mjs'
import { PublisherPool, schedule, padding } from '../lib/publisher.mjs'
import { gatewayFigures, machineFigures, mergeReports, selfCpuS, sumCpu, waitDeliveries, sleep } from '../lib/measure.mjs'
import { Histogram, nowMs } from '../lib/hist.mjs'
import { round, steadyRate } from '../lib/report.mjs'
import { result } from '../lib/results.mjs'
import { userMessage } from './per-user.mjs'

const BEFORE_S = 3
const AFTER_S = 3
const TIMEOUT_S = 120

export async function storm (o) {
  const K = Math.max(2, o.instances ?? 2)
  const rate = o.rate ?? 1000
  const total = o.connections
  const setup = new Setup(o, { instances: K, redis: true, batchMs: o.batchMs, total, channel: null, label: 'storm', openOn: [0], trackIds: true })
  await setup.start()
  try {
    const connect = await setup.open()
    const survivors = setup.gws.slice(1)
    const per = Math.max(1, Math.ceil(o.concurrency / setup.clients.length))
    await Promise.all(setup.clients.map(c => c.call('storm-arm', { targets: survivors.map(g => ({ host: g.host, port: g.port })), concurrency: per }, 'storm-armed')))
    // The publisher talks to the survivors only: it must not die with A.
    const publisher = new PublisherPool({ urls: survivors.map(g => g.url), token: setup.publisherToken(), shards: 2, shardOf: (e) => e.u })
    const pad = padding(o.payload)
    const seqs = new Uint32Array(total)
    const parts = ranges(total, setup.clients.length)
    await sleep(1000)
    const before = await setup.snapshots()
    const t0 = nowMs()
    await Promise.all(setup.clients.map(c => c.call('record', { t0 }, 'recording')))
    let stopped = false
    const load = schedule({ publisher, rate, durationS: 3600, make: userMessage(setup, seqs, total, pad), stopped: () => stopped })
    await sleep(BEFORE_S * 1000)

    const atKill = await setup.snapshots()
    await Promise.all(setup.clients.map(c => c.call('storm-record', { on: true }, 'storm-recording')))
    const killedAt = nowMs()
    await setup.gws[0].kill()
    let status = null
    for (;;) {
      const ss = await Promise.all(setup.clients.map(c => c.call('storm-status', {}, 'storm-status')))
      status = ss
      const lost = ss.reduce((a, s) => a + s.lostStreams, 0)
      const back = ss.reduce((a, s) => a + s.back, 0)
      if (lost >= connect.opened && back >= lost) break
      if (nowMs() - killedAt > TIMEOUT_S * 1000) break
      await sleep(50)
    }
    const allLiveAt = Math.max(...status.map(s => s.lastLiveAt))
    const live = await setup.snapshots()
    await Promise.all(setup.clients.map(c => c.call('storm-record', { on: false }, 'storm-recording')))
    await sleep(AFTER_S * 1000)
    stopped = true
    const r = await load
    await publisher.drain()
    await waitDeliveries(setup, r.sent)
    const reports = await Promise.all(setup.clients.map((c, k) => c.call('report', { expected: Array.from(seqs.subarray(parts[k][0], parts[k][1])) }, 'report')))
    const final = await setup.snapshots()
    publisher.close()

    const ss = await Promise.all(setup.clients.map(c => c.call('storm-status', {}, 'storm-status')))
    const toLive = new Histogram()
    const latency = new Histogram()
    for (const s of ss) {
      toLive.merge(s.toLive)
      latency.merge(s.latency)
    }
    const delivery = mergeReports(reports)
    delivery.windowS = round((delivery.lastReceive - r.firstAt) / 1000, 2)
    delivery.perSecondAvg = Math.round(delivery.received / Math.max(0.001, delivery.windowS))
    delivery.perSecondSteady = steadyRate(delivery, r.elapsedMs / 1000)
    delivery.perSecondMin = Math.min(...delivery.perSecond.slice(1, Math.max(2, Math.floor(r.elapsedMs / 1000))))
    const lostStreams = ss.reduce((a, s) => a + s.lostStreams, 0)
    const back = ss.reduce((a, s) => a + s.back, 0)
    const failures = {}
    for (const s of ss) for (const [k, v] of Object.entries(s.failures)) failures[k] = (failures[k] ?? 0) + v
    // The survivors' CPU while the streams came back: the cost of a resume with Last-Event-ID.
    const stormGws = gatewayFigures(setup, atKill, live, null)
    const survivorCpuS = stormGws.slice(1).reduce((a, g) => a + (g.cpuS ?? 0), 0)
    return result(o, setup, {
      scenario: 'storm',
      rate,
      connect,
      storm: {
        streams: connect.opened,
        lostStreams,
        back,
        allLive: back >= connect.opened,
        timeToAllLiveMs: Math.round(allLiveAt - killedAt),
        perStreamToLiveMs: toLive.summary(),
        reconnectAttemptsFailed: ss.reduce((a, s) => a + s.retries, 0),
        reconnectFailures: failures,
        latencyDuringStormMs: latency.summary(),
        survivorCpuS: round(survivorCpuS, 2),
        survivorCpuPerReconnectUs: back > 0 ? Math.round(survivorCpuS / back * 1e6) : null,
        redisCpuS: live.redis !== null && atKill.redis !== null ? round(live.redis - atKill.redis, 2) : null,
        loadavg: live.loadavg
      },
      publish: { sent: r.sent, ...publisher.stats() },
      delivery: { expectedPerSecond: rate, ...delivery },
      gateways: gatewayFigures(setup, before, final, null),
      machineLoad: machineFigures(before, final, selfCpuS(before) + sumCpu(setup, before, final) + delivery.clientCpuS.reduce((a, b) => a + (b ?? 0), 0))
    })
  } finally {
    await finish(setup)
  }
}
