// The measured phase shared by the scenarios: readings before and after, the client reports
// merged, the server and machine figures derived from /proc.

import { mkdirSync } from 'node:fs'
import { join, relative } from 'node:path'
import { Histogram, nowMs } from './hist.mjs'
import { Sampler } from './proc.mjs'
import { machineCpu } from './machine.mjs'
import { round, steadyRate } from './report.mjs'
import { BENCH, ROOT } from './setup.mjs'

export const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))

export function gatewayFigures (setup, before, after, samples) {
  const wall = (after.at - before.at) / 1000
  return setup.gws.map((g, k) => {
    const b = before.gws[k]
    const a = after.gws[k]
    const s = samples?.[k]
    const d = (x) => (a[x] !== null && b[x] !== null) ? a[x] - b[x] : null
    const writes = d('socketWrites')
    const delivered = d('delivered')
    const latCount = d('latencyCount')
    return {
      server: g.kind ?? 'gateway',
      pid: g.pid ?? null,
      url: g.url,
      cpuS: d('cpuS') === null ? null : round(d('cpuS'), 2),
      cpuPct: d('cpuS') === null ? null : Math.round(d('cpuS') / wall * 100),
      // Share of the CPU time spent in the kernel (socket syscalls: on loopback the sender
      // also pays for the receiver's TCP processing and wake-up).
      systemPct: d('sysS') === null || !(d('cpuS') > 0) ? null : Math.round(d('sysS') / d('cpuS') * 100),
      rssBefore: b.rss,
      rssAfter: a.rss,
      rssMax: s?.rssMax ?? null,
      rssHwm: a.hwm,
      heapUsedBefore: b.heapUsed,
      heapUsedAfter: a.heapUsed,
      connectionsActive: a.connectionsActive,
      socketWrites: writes,
      delivered,
      messagesPerWrite: writes > 0 ? round(delivered / writes, 2) : null,
      gatewayLatencyMeanMs: latCount > 0 ? round(d('latencySum') / latCount * 1000, 2) : null,
      slowConsumerCloses: d('slowConsumers'),
      eventLoopLagP99Ms: a.eventLoopLagP99 === null ? null : round(a.eventLoopLagP99 * 1000, 1),
      gcSeconds: d('gcSeconds') === null ? null : round(d('gcSeconds'), 2),
      rssSeries: s?.series ?? null
    }
  })
}

export function machineFigures (before, after, ownCpuS) {
  if (before.machine === null || after.machine === null) return null
  const busy = after.machine.busyS - before.machine.busyS
  const total = after.machine.totalS - before.machine.totalS
  const redis = before.redis !== null && after.redis !== null ? after.redis - before.redis : null
  return {
    busyPct: Math.round(busy / total * 100),
    busyCpuS: round(busy, 2),
    benchCpuS: round(ownCpuS + (redis ?? 0), 2),
    // CPU the machine spent on processes that are not part of this benchmark (noise).
    otherCpuS: round(Math.max(0, busy - ownCpuS - (redis ?? 0)), 2),
    redisCpuS: redis === null ? null : round(redis, 2),
    loadavg: after.loadavg ?? null
  }
}

export function selfCpuS (before) {
  const d = process.cpuUsage(before.self)
  return (d.user + d.system) / 1e6
}

export function sumCpu (setup, before, after) {
  let s = 0
  before.gws.forEach((b, k) => { if (b.cpuS !== null && after.gws[k].cpuS !== null) s += after.gws[k].cpuS - b.cpuS })
  return s
}

/** Waits until the clients received `expected` messages, or nothing changed for 3 s (max 30 s). */
export async function waitDeliveries (setup, expected) {
  const t0 = Date.now()
  let last = -1
  let since = Date.now()
  for (;;) {
    const ps = await Promise.all(setup.clients.map(c => c.call('progress', {}, 'progress')))
    const got = ps.reduce((a, p) => a + p.received, 0)
    if (got >= expected) return got
    if (got !== last) {
      last = got
      since = Date.now()
    }
    if (Date.now() - since > 3000 || Date.now() - t0 > 30000) return got
    await sleep(200)
  }
}

export function mergeReports (reports) {
  const hist = new Histogram()
  const perSecond = []
  const out = { streams: 0, dropped: 0, received: 0, expected: 0, lost: 0, duplicated: 0, outOfOrder: 0, unexpected: 0, streamsWithLoss: 0, controlEvents: 0, lastReceive: 0, failures: {} }
  for (const r of reports) {
    hist.merge(r.latency)
    for (const k of ['streams', 'dropped', 'received', 'expected', 'lost', 'duplicated', 'outOfOrder', 'unexpected', 'streamsWithLoss', 'controlEvents']) out[k] += r[k]
    out.lastReceive = Math.max(out.lastReceive, r.lastReceive)
    r.perSecond.forEach((v, i) => { perSecond[i] = (perSecond[i] ?? 0) + v })
    for (const [k, v] of Object.entries(r.failures)) out.failures[k] = (out.failures[k] ?? 0) + v
  }
  for (let i = 0; i < perSecond.length; i++) perSecond[i] = perSecond[i] ?? 0
  return { ...out, latencyMs: hist.summary(), perSecond, clientCpuS: reports.map(r => round(r.cpuS, 2)), clientRss: reports.map(r => r.rss) }
}

/**
 * The common measured phase: record, run `load` (which publishes), wait for deliveries,
 * collect client reports with `expectedFor(k)` per client.
 */
export async function measure (setup, { load, expectedTotal, expectedFor }) {
  await sleep(1000)
  const before = await setup.snapshots()
  const sampler = new Sampler(setup.samplePids(), 1000)
  const t0 = nowMs()
  await Promise.all(setup.clients.map(c => c.call('record', { t0 }, 'recording')))
  const perfs = setup.o.perf ? await startPerfs(setup) : null
  const loadResult = await load()
  const perf = perfs === null ? undefined : await stopPerfs(perfs)
  const expected = expectedTotal(loadResult)
  await waitDeliveries(setup, expected)
  const reports = await Promise.all(setup.clients.map((c, k) => c.call('report', { expected: expectedFor(k, loadResult) }, 'report')))
  const after = await setup.snapshots()
  const samples = sampler.stop()
  const delivery = mergeReports(reports)
  const firstAt = loadResult.firstAt ?? t0
  const windowS = Math.max(loadResult.elapsedMs / 1000, (delivery.lastReceive - firstAt) / 1000)
  delivery.windowS = round(windowS, 2)
  delivery.perSecondAvg = Math.round(delivery.received / windowS)
  const inner = delivery.perSecond.slice(1, Math.max(1, Math.floor(loadResult.elapsedMs / 1000)))
  delivery.perSecondMin = inner.length > 0 ? Math.min(...inner) : null
  delivery.perSecondSteady = steadyRate(delivery, loadResult.elapsedMs / 1000)
  return { loadResult, delivery, perf, gateways: gatewayFigures(setup, before, after, samples), machineLoad: machineFigures(before, after, selfCpuS(before) + sumCpu(setup, before, after) + delivery.clientCpuS.reduce((a, b) => a + (b ?? 0), 0)) }
}

export async function startPerfs (setup) {
  const { startPerf } = await import('./perf.mjs')
  const dir = join(BENCH, 'results/tmp/perf')
  mkdirSync(dir, { recursive: true })
  return setup.gws.filter(g => g.pid != null).map(g => {
    const file = join(dir, `${setup.label}-${g.pid}.data`)
    return { file, p: startPerf(g.pid, file) }
  })
}

export async function stopPerfs (perfs) {
  const { perfReport } = await import('./perf.mjs')
  const out = []
  for (const x of perfs) {
    await x.p.stop()
    out.push({ file: relative(ROOT, x.file), ...perfReport(x.file) })
  }
  return out
}

/** A full GC in every gateway (SIGWINCH, bench/lib/gateway-preload.cjs), then a pause. */
export async function gcAll (setup) {
  for (const g of setup.gws) g.gc?.()
  await sleep(1500)
}

/** Waits (up to o.quietWait s) until the whole machine is under 25 % busy for 2 s. */
export async function quiet (o) {
  if (o.quietWait <= 0) return null
  const t0 = Date.now()
  for (;;) {
    const a = machineCpu()
    await sleep(2000)
    const b = machineCpu()
    const busy = a === null || b === null ? 0 : (b.busyS - a.busyS) / (b.totalS - a.totalS)
    if (busy < 0.25) return { waitedS: Math.round((Date.now() - t0) / 1000), busyPct: Math.round(busy * 100) }
    if (Date.now() - t0 > o.quietWait * 1000) {
      process.stdout.write(`  (machine still ${Math.round(busy * 100)}% busy after ${o.quietWait} s; measuring anyway)\n`)
      return { waitedS: o.quietWait, busyPct: Math.round(busy * 100) }
    }
  }
}
