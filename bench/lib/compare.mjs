// `--compare nchan`: the same scenario against the gateway and nginx + Nchan in one run, and
// the figures side by side with their ratio (gateway / nchan).

import { fmt, round, steadyRate } from './report.mjs'

const perConnectUs = (round) => round?.cpuPerConnectUs?.[0] ?? null

/** [label, value(result), lowerIsBetter] per scenario. */
function metrics (r) {
  const d = r.delivery
  switch (r.scenario) {
    case 'idle':
      return [
        ['connects/s', r.connect.perSecond, false],
        ['server CPU per connect, µs', r.connect.cpuPerConnectUs?.[0] ?? null, true],
        ['RSS per idle stream, KiB', r.idle.rssPerConnKiB, true]
      ]
    case 'connect': {
      const [cold, warm] = r.connectRounds
      return [
        ['cold: time to connect all, ms', cold.elapsedMs, true],
        ['cold: connects/s', cold.perSecond, false],
        ['cold: server CPU per connect, µs', perConnectUs(cold), true],
        ['warm: time to connect all, ms', warm.elapsedMs, true],
        ['warm: connects/s', warm.perSecond, false],
        ['warm: server CPU per connect, µs', perConnectUs(warm), true],
        ['failed connects', cold.failed + warm.failed, true]
      ]
    }
    default:
      return [
        ['deliveries/s while publishing', d.perSecondSteady ?? steadyRate(d, r.settings.durationS), false],
        ['latency p50, ms', d.latencyMs.p50, true],
        ['latency p99, ms', d.latencyMs.p99, true],
        ['lost', d.lost, true],
        ['server CPU, s', r.gateways[0].cpuS, true]
      ]
  }
}

/** Rows { scenario, figure, gateway, nchan, ratio } for one pair of results. */
export function comparePair (g, n) {
  const a = metrics(g)
  const b = metrics(n)
  const label = `${g.scenario} ${fmt(g.settings.connections)}${g.rate ? ` x ${fmt(g.rate)}/s` : ''}`
  return a.map(([name, x], i) => {
    const y = b[i][1]
    return {
      scenario: label,
      figure: name,
      gateway: x,
      nchan: y,
      // gateway / nchan: below 1 means the gateway needs less (time, CPU, memory) or, for
      // rates, that it achieves less.
      ratio: x === null || y === null || y === 0 ? null : round(x / y, 2)
    }
  })
}

export function compareTable (rows) {
  const cols = ['scenario', 'figure', 'gateway', 'nchan', 'gateway / nchan']
  const vals = rows.map(r => [r.scenario, r.figure, fmt(r.gateway, 1), fmt(r.nchan, 1), r.ratio === null ? '-' : fmt(r.ratio, 2)])
  const w = cols.map((c, i) => Math.max(c.length, ...vals.map(v => String(v[i]).length)))
  const line = (v) => '| ' + v.map((x, i) => String(x).padEnd(w[i])).join(' | ') + ' |'
  return [line(cols), '|' + w.map(n => '-'.repeat(n + 2)).join('|') + '|', ...vals.map(line)].join('\n')
}
