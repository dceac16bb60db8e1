// idle: N streams held open; connect rate, RSS and JS heap per stream.

import { mkdirSync, readdirSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { Setup, finish, BENCH, ROOT } from '../lib/setup.mjs'
import { Sampler } from '../lib/proc.mjs'
import { gatewayFigures, machineFigures, selfCpuS, sumCpu, gcAll, sleep } from '../lib/measure.mjs'
import { round } from '../lib/report.mjs'
import { result } from '../lib/results.mjs'

export async function idle (o, { label = 'idle', instances = 1, redis = false, perInstance = false } = {}) {
  const total = perInstance ? o.connections * instances : o.connections
  const setup = new Setup(o, { instances, redis, batchMs: o.batchMs, total, channel: 'topic:bench', label })
  await setup.start()
  try {
    await sleep(1000)
    await gcAll(setup)
    const heapBefore = o.heapSnapshot ? await heapSnapshot(setup) : null
    const before = await setup.snapshots()
    const connect = await setup.open()
    await sleep(2000)
    const mid = await setup.snapshots()
    const sampler = new Sampler(setup.samplePids(), 1000)
    await sleep(holdS(o) * 1000)
    const raw = await setup.snapshots()
    await gcAll(setup)
    const after = await setup.snapshots()
    const samples = sampler.stop()
    const gws = gatewayFigures(setup, before, after, samples)
    const per = connect.opened / setup.gws.length
    const rssDelta = gws.reduce((a, g) => a + ((g.rssAfter ?? 0) - (g.rssBefore ?? 0)), 0)
    const rawDelta = raw.gws.reduce((a, g, k) => a + ((g.rss ?? 0) - (before.gws[k].rss ?? 0)), 0)
    const heapDelta = gws.reduce((a, g) => a + ((g.heapUsedAfter ?? 0) - (g.heapUsedBefore ?? 0)), 0)
    const heap = o.heapSnapshot ? heapDiff(heapBefore, await heapSnapshot(setup), connect.opened / setup.gws.length) : undefined
    const connectCpu = mid.gws.map((m, k) => m.cpuS !== null && before.gws[k].cpuS !== null ? round(m.cpuS - before.gws[k].cpuS, 2) : null)
    return result(o, setup, {
      scenario: label,
      connect: { ...connect, gatewayCpuS: connectCpu, cpuPerConnectUs: connectCpu.map(c => c === null ? null : Math.round(c / per * 1e6)) },
      idle: {
        streamsPerInstance: per,
        // Steady state: both readings after a full GC in the gateway (gateway-preload.cjs).
        rssPerConnKiB: gws[0].rssBefore === null ? null : round(rssDelta / connect.opened / 1024, 2),
        // What a plain reading shows before any GC has collected the handshakes' garbage.
        rssPerConnKiBBeforeGc: gws[0].rssBefore === null ? null : round(rawDelta / connect.opened / 1024, 2),
        heapPerConnKiB: gws[0].heapUsedBefore === null ? null : round(heapDelta / connect.opened / 1024, 2),
        holdS: holdS(o),
        idleCpuPct: gws.map(g => g.cpuPct)
      },
      heap,
      gateways: gws,
      machineLoad: machineFigures(before, after, selfCpuS(before) + sumCpu(setup, before, after))
    })
  } finally {
    await finish(setup)
  }
}

function holdS (o) {
  return Math.max(2, Math.min(o.duration / 2, 10))
}

/** What the streams added to instance 0's heap, per object kind, per stream. */
function heapDiff (a, b, perInstance) {
  if (a === null || b === null || a === undefined || b === undefined || a.error || b.error) return { error: a?.error ?? b?.error ?? 'no snapshot' }
  const before = new Map(a.all.map(x => [x.name, x]))
  const rows = b.all.map(x => {
    const y = before.get(x.name) ?? { count: 0, bytes: 0 }
    return { name: x.name, perStreamBytes: Math.round((x.bytes - y.bytes) / perInstance), perStreamCount: round((x.count - y.count) / perInstance, 2) }
  }).sort((p, q) => q.perStreamBytes - p.perStreamBytes)
  return {
    files: [a.file, b.file],
    totalMiB: [a.totalMiB, b.totalMiB],
    perStreamBytes: Math.round((b.totalBytes - a.totalBytes) / perInstance),
    top: rows.slice(0, 40)
  }
}

async function heapSnapshot (setup) {
  const dir = join(BENCH, 'results/tmp/heap')
  mkdirSync(dir, { recursive: true })
  const g = setup.gws[0]
  if (g.heapSnapshot === undefined) return undefined
  const seen = new Set(readdirSync(dir))
  g.heapSnapshot()
  const t0 = Date.now()
  let file = null
  while (Date.now() - t0 < 120000) {
    await sleep(1000)
    const f = readdirSync(dir).find(x => !seen.has(x) && x.includes(`-${g.pid}-`))
    if (f !== undefined) {
      const a = statSync(join(dir, f)).size
      await sleep(1000)
      if (statSync(join(dir, f)).size === a && a > 0) {
        file = join(dir, f)
        break
      }
    }
  }
  if (file === null) return { error: 'no heap snapshot within 120 s' }
  const { summarizeHeap } = await import('../lib/heap.mjs')
  const s = summarizeHeap(file, Infinity)
  return { file: relative(ROOT, file), totalBytes: s.totalBytes, totalMiB: round(s.totalBytes / 2 ** 20, 1), all: s.top }
}
