// connect: N streams opened as fast as --concurrency allows against a freshly started server
// (cold), closed, then opened again (warm). Server CPU per connect from /proc.

import { Setup, finish } from '../lib/setup.mjs'
import { gatewayFigures, sleep } from '../lib/measure.mjs'
import { result } from '../lib/results.mjs'

export async function connect (o, { label = 'connect', instances = 1, redis = false } = {}) {
  const total = o.connections
  const setup = new Setup(o, { instances, redis, batchMs: o.batchMs, total, channel: 'topic:bench', label })
  await setup.start()
  try {
    await sleep(1000)
    const rounds = []
    for (const name of ['cold', 'warm']) {
      const before = await setup.snapshots()
      const c = await setup.open()
      const after = await setup.snapshots()
      const gws = gatewayFigures(setup, before, after, null)
      const per = c.opened / setup.gws.length
      rounds.push({
        round: name,
        ...c,
        gatewayCpuS: gws.map(g => g.cpuS),
        // utime + stime of the server process(es) over the connect, per stream opened.
        cpuPerConnectUs: gws.map(g => g.cpuS === null || per === 0 ? null : Math.round(g.cpuS / per * 1e6)),
        gatewayCpuPct: gws.map(g => g.cpuPct),
        gatewaySystemPct: gws.map(g => g.systemPct),
        gatewayRssAfter: gws.map(g => g.rssAfter),
        redisCpuS: after.redis !== null && before.redis !== null ? Math.round((after.redis - before.redis) * 100) / 100 : null,
        loadavg: after.loadavg
      })
      await setup.closeStreams()
      // Let the server notice every close before the next round.
      for (let i = 0; i < 100; i++) {
        const s = await setup.snapshots()
        if (s.gws.every(g => g.connectionsActive === 0 || g.connectionsActive === null)) break
        await sleep(100)
      }
      await sleep(1000)
    }
    const best = rounds.reduce((a, b) => (b.perSecond > a.perSecond ? b : a))
    return result(o, setup, { scenario: label, connect: best, connectRounds: rounds })
  } finally {
    await finish(setup)
  }
}
