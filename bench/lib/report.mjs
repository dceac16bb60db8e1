// Result evaluation and presentation, shared by run.mjs and report.mjs: which of the issue's
// targets a result meets, the table row, the per-run description.

export function round (v, d = 1) {
  if (v === null || v === undefined || !Number.isFinite(v)) return null
  const f = 10 ** d
  return Math.round(v * f) / f
}

/**
 * Deliveries per second while publishing: the mean of the whole seconds strictly inside the
 * publishing period (the first second ramps up, the tail after the last publish is latency,
 * not throughput).
 */
export function steadyRate (d, durationS) {
  const inner = d.perSecond.slice(1, Math.max(1, Math.floor(durationS)))
  return inner.length > 0 ? Math.round(inner.reduce((a, b) => a + b, 0) / inner.length) : d.perSecondAvg
}

/** The issue's targets that apply to a result (single instance unless stated). */
export function targets (r) {
  const t = []
  const s = r.settings
  const N = s.connectionsPerInstance
  const multi = s.instances > 1
  const d = r.delivery
  const add = (name, value, limit, ok) => t.push({ target: name, value, limit, met: value !== null && ok })
  if ((r.scenario === 'idle' || r.scenario === 'multi-idle') && N >= 10000) {
    add('gateway RSS per connection ≤ 10 KiB', r.idle.rssPerConnKiB, 10, r.idle.rssPerConnKiB <= 10)
  }
  if ((r.scenario === 'idle' || r.scenario === 'connect') && N >= 10000 && !multi) {
    add('6,000+ connects/s', r.connect.perSecond, 6000, r.connect.perSecond >= 6000)
  }
  if (d !== undefined && /broadcast/.test(r.scenario)) {
    const rate = r.rate
    const p99 = d.latencyMs.p99
    if (N === 1000 && rate === 10 && s.batchWindowMs === 100) add('broadcast 1,000 x 10/s p99 < 130 ms', p99, 130, p99 < 130)
    if (N === 1000 && rate === 10 && s.batchWindowMs === 0) add('broadcast 1,000 x 10/s (window 0) p99 < 20 ms', p99, 20, p99 < 20)
    if (N === 10000 && rate === 10) {
      const steady = d.perSecondSteady ?? steadyRate(d, s.durationS)
      // 98 %: the publisher's jitter alone moves a 9-second mean by about ±1 %.
      add('broadcast 10,000 x 10/s: 100,000 deliveries/s', steady, 0.98 * d.expectedPerSecond, steady >= 0.98 * d.expectedPerSecond && d.lost === 0)
      add('broadcast 10,000 x 10/s: zero loss', d.lost + d.dropped, 0, d.lost === 0 && d.dropped === 0)
      add('broadcast 10,000 x 10/s: p99 < 250 ms', p99, 250, p99 < 250)
      if (s.batchWindowMs === 0) add('broadcast 10,000 x 10/s, window 0: ≥ 95,000/s, 0 lost, p99 < 100 ms', p99, 100, steady >= 95000 && d.lost === 0 && p99 < 100)
      else add('broadcast 10,000 x 10/s, window 100: p99 ≤ 400 ms', p99, 400, p99 <= 400)
    }
    if (N === 10000 && rate === 50) {
      add('broadcast 10,000 x 50/s: zero loss', d.lost + d.dropped, 0, d.lost === 0 && d.dropped === 0)
      add('broadcast 10,000 x 50/s: p99 < 400 ms', p99, 400, p99 < 400)
    }
  }
  if (r.scenario === 'storm' && r.storm !== undefined) {
    add('storm: every stream live again', r.storm.back, r.storm.streams, r.storm.back >= r.storm.streams)
    add('storm: lost 0, duplicated 0', d.lost + d.duplicated, 0, d.lost === 0 && d.duplicated === 0)
  }
  if (N >= 10000 && r.connectRounds !== undefined && !multi) {
    const [cold, warm] = r.connectRounds
    add('connect 10,000 cold: ≤ 200 µs server CPU per stream', cold.cpuPerConnectUs?.[0] ?? null, 200, cold.cpuPerConnectUs?.[0] <= 200)
    add('connect 10,000 warm: ≤ 100 µs server CPU per stream', warm.cpuPerConnectUs?.[0] ?? null, 100, warm.cpuPerConnectUs?.[0] <= 100)
  }
  if (d !== undefined && /per-user/.test(r.scenario) && N === 10000 && r.rate === 10000 * s.instances) {
    add('per-user 10,000 at 10,000/s: zero loss', d.lost + d.dropped, 0, d.lost === 0 && d.dropped === 0)
    add('per-user 10,000 at 10,000/s: p99 < 120 ms', d.latencyMs.p99, 120, d.latencyMs.p99 < 120)
  }
  return t
}

export function fmt (v, d = 0) {
  if (v === null || v === undefined) return '-'
  if (typeof v === 'number') return v.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: 0 })
  return String(v)
}

export function row (r) {
  const s = r.settings
  const d = r.delivery
  const g = r.gateways ?? []
  const lat = d?.latencyMs
  const gw = (f) => g.length === 0 ? '-' : g.map(f).join('/')
  let rate = r.rate ?? '-'
  if (r.publish?.tool === 'autocannon') rate = `${fmt(r.publish.messagesPerSecond)} (${fmt(r.publish.requestsPerSecond)} req/s)`
  return {
    scenario: r.scenario,
    inst: s.instances,
    conns: fmt(s.connections),
    'msg/s': typeof rate === 'number' ? fmt(rate) : rate,
    batch: s.batchWindowMs ?? '-',
    'conn/s': r.connect?.perSecond !== undefined ? fmt(r.connect.perSecond) : '-',
    'deliv/s': d === undefined ? '-' : `${fmt(d.perSecondSteady ?? steadyRate(d, s.durationS))}${d.expectedPerSecond ? ` / ${fmt(d.expectedPerSecond)}` : ''}`,
    'p50 ms': fmt(lat?.p50, 1),
    'p95 ms': fmt(lat?.p95, 1),
    'p99 ms': fmt(lat?.p99, 1),
    'max ms': fmt(lat?.max, 1),
    'lost/dup/ooo': d === undefined ? '-' : `${d.lost}/${d.duplicated}/${d.outOfOrder}${d.dropped ? ` (+${d.dropped} cut)` : ''}`,
    'gw cpu%': gw(x => fmt(x.cpuPct)),
    'gw rss MiB': gw(x => fmt(x.rssAfter / 2 ** 20)),
    'KiB/conn rss (heap)': r.idle ? `${fmt(r.idle.rssPerConnKiB, 1)} (${fmt(r.idle.heapPerConnKiB, 1)})` : '-',
    'other cpu s': r.machineLoad ? fmt(r.machineLoad.otherCpuS, 1) : '-',
    targets: r.targets.length === 0 ? '' : r.targets.map(t => (t.met ? 'met' : 'MISSED')).join(',')
  }
}

export function table (rows) {
  const cols = Object.keys(rows[0])
  const w = cols.map(c => Math.max(c.length, ...rows.map(r => String(r[c]).length)))
  const line = (vals) => '| ' + vals.map((v, i) => String(v).padEnd(w[i])).join(' | ') + ' |'
  return [line(cols), '|' + w.map(n => '-'.repeat(n + 2)).join('|') + '|', ...rows.map(r => line(cols.map(c => r[c])))].join('\n')
}

export function describeRun (r) {
  const lines = []
  const c = r.connect
  if (c) lines.push(`  connect: ${c.opened}/${c.requested} streams in ${fmt(c.elapsedMs)} ms (${fmt(c.perSecond)}/s), live p50 ${fmt(c.timeToLiveMs.p50, 1)} ms p99 ${fmt(c.timeToLiveMs.p99, 1)} ms, client cpu ${(c.clientCpuS ?? []).join('/')} s${c.gatewayCpuS ? `, gateway cpu ${c.gatewayCpuS.join('/')} s` : ''}${c.failed ? `, failed ${c.failed} ${JSON.stringify(c.failures)}` : ''}`)
  if (r.connectRounds) for (const x of r.connectRounds) lines.push(`    ${x.round}: ${fmt(x.perSecond)}/s, head p50 ${fmt(x.timeToHeadMs.p50, 1)} p99 ${fmt(x.timeToHeadMs.p99, 1)} ms, live p99 ${fmt(x.timeToLiveMs.p99, 1)} ms, gateway cpu ${x.gatewayCpuS.join('/')} s (${x.gatewaySystemPct.join('/')}% kernel)`)
  const st = r.storm
  if (st) {
    lines.push(`  storm: ${fmt(st.back)}/${fmt(st.streams)} streams live again on the survivor ${fmt(st.timeToAllLiveMs)} ms after the SIGKILL (per stream p50 ${fmt(st.perStreamToLiveMs.p50, 0)} p99 ${fmt(st.perStreamToLiveMs.p99, 0)} ms), ${st.reconnectAttemptsFailed} failed attempts${Object.keys(st.reconnectFailures).length ? ` ${JSON.stringify(st.reconnectFailures)}` : ''}`)
    lines.push(`  during the storm: latency p50 ${fmt(st.latencyDuringStormMs.p50, 1)} p99 ${fmt(st.latencyDuringStormMs.p99, 1)} max ${fmt(st.latencyDuringStormMs.max, 1)} ms; survivor cpu ${st.survivorCpuS} s (${fmt(st.survivorCpuPerReconnectUs)} µs per resume), redis ${st.redisCpuS ?? '-'} s`)
  }
  const d = r.delivery
  if (d) {
    lines.push(`  delivery: ${fmt(d.received)}/${fmt(d.expected)} in ${d.windowS} s (first send to last receive, ${fmt(d.perSecondAvg)}/s), ${fmt(d.perSecondSteady)}/s while publishing (lowest second ${fmt(d.perSecondMin)}), lost ${d.lost}, dup ${d.duplicated}, ooo ${d.outOfOrder}, streams cut ${d.dropped}, client cpu ${d.clientCpuS.join('/')} s`)
    const gl = (r.gateways ?? []).map(g => g.gatewayLatencyMeanMs).filter(x => x !== null)
    lines.push(`  latency ms: p50 ${fmt(d.latencyMs.p50, 1)} p95 ${fmt(d.latencyMs.p95, 1)} p99 ${fmt(d.latencyMs.p99, 1)} p99.9 ${fmt(d.latencyMs.p999, 1)} max ${fmt(d.latencyMs.max, 1)} mean ${fmt(d.latencyMs.mean, 1)}${gl.length ? ` (gateway's own mean, publish → socket write: ${gl.map(x => fmt(x, 1)).join('/')})` : ''}`)
  }
  if (r.publish?.tool === 'autocannon') {
    const p = r.publish
    lines.push(`  autocannon: ${fmt(p.requestsPerSecond)} req/s x ${p.messagesPerRequest} msg, latency p50 ${p.latencyMs.p50} p99 ${p.latencyMs.p99} ms, non-2xx ${p.non2xx}, errors ${p.errors}`)
  } else if (r.publish) {
    lines.push(`  publisher: ${fmt(r.publish.sent)} messages in ${fmt(r.publish.requests)} requests, failed ${r.publish.failed}, request p99 ${fmt(r.publish.requestLatency.p99, 1)} ms`)
  }
  for (const g of r.gateways ?? []) {
    lines.push(`  gateway ${g.pid ?? g.url}: cpu ${g.cpuS} s (${g.cpuPct}%, ${g.systemPct}% of it in the kernel), rss ${fmt(g.rssBefore / 2 ** 20, 1)} → ${fmt(g.rssAfter / 2 ** 20, 1)} MiB (max ${fmt(g.rssMax / 2 ** 20, 1)}), heap used ${fmt(g.heapUsedAfter / 2 ** 20, 1)} MiB${g.messagesPerWrite ? `, ${g.messagesPerWrite} msg/write` : ''}${g.slowConsumerCloses ? `, slow-consumer closes ${g.slowConsumerCloses}` : ''}, gc ${g.gcSeconds} s`)
  }
  if (r.idle) lines.push(`  idle: ${fmt(r.idle.rssPerConnKiB, 2)} KiB RSS (${fmt(r.idle.rssPerConnKiBBeforeGc, 2)} before a GC) and ${fmt(r.idle.heapPerConnKiB, 2)} KiB JS heap per stream`)
  if (r.heap?.top) {
    lines.push(`  heap snapshots ${r.heap.files.join(', ')} (${r.heap.totalMiB.join(' → ')} MiB): ${r.heap.perStreamBytes} B per stream, by kind:`)
    for (const a of r.heap.top.slice(0, 20)) lines.push(`    ${String(a.perStreamBytes).padStart(6)} B  x${a.perStreamCount}  ${a.name}`)
  }
  if (r.machineLoad) lines.push(`  machine: ${r.machineLoad.busyPct}% busy, other processes ${r.machineLoad.otherCpuS} cpu s${r.machineLoad.redisCpuS !== null ? `, redis ${r.machineLoad.redisCpuS} s` : ''}`)
  for (const t of r.targets) lines.push(`  target ${t.met ? 'met   ' : 'MISSED'} ${t.target}: ${fmt(t.value, 1)}`)
  for (const p of r.perf ?? []) {
    lines.push(`  perf ${p.file}: ${Object.entries(p.byObject ?? {}).map(([k, v]) => `${k} ${round(v, 1)}%`).join(', ')}`)
    for (const f of (p.top ?? []).slice(0, 15)) lines.push(`    ${String(f.pct).padStart(5)}%  ${f.kernel ? '[k]' : '[u]'} ${f.symbol}  (${f.dso})`)
    if (p.error) lines.push(`    ${p.error}`)
  }
  for (const p of r.profiles ?? []) {
    lines.push(`  profile ${p.file} (top self time):`)
    for (const f of p.top.slice(0, 15)) lines.push(`    ${String(f.pct).padStart(5)}%  ${f.selfMs} ms  ${f.name}  ${f.where}`)
  }
  return lines.join('\n')
}

