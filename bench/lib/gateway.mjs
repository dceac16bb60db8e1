// Starts gateway instances from dist/ on loopback ports and reads their figures.

import net from 'node:net'
import { createWriteStream, existsSync, mkdirSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { spawnNode } from './spawn.mjs'
import { cpuSeconds, cpuSplit, rssBytes, hwmBytes } from './proc.mjs'

/** A free TCP port on 127.0.0.1. */
export function freePort () {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.unref()
    s.on('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))

/**
 * startGateway({ root, env, logDir, profileDir, label }) → { pid, port, url, stop() }
 * Resolves once GET /readyz answers 200.
 */
export async function startGateway ({ root, dist = 'dist', env, logDir, profileDir = null, label = 'gateway', nodeArgs = [] }) {
  const port = await freePort()
  mkdirSync(logDir, { recursive: true })
  const logFile = join(logDir, `${label}-${port}.log`)
  const log = createWriteStream(logFile)
  // --expose-gc and the preload only add signal handlers (full GC, heap snapshot); see the file.
  const args = ['--expose-gc', '--require', resolve(import.meta.dirname ?? new URL('.', import.meta.url).pathname, 'gateway-preload.cjs'), ...nodeArgs]
  if (profileDir !== null) {
    mkdirSync(profileDir, { recursive: true })
    args.push('--cpu-prof', `--cpu-prof-dir=${profileDir}`, `--cpu-prof-name=${label}-${port}.cpuprofile`)
  }
  const child = spawnNode(resolve(root, dist, 'main.js'), {
    nodeArgs: args,
    env: { ...env, PORT: String(port), HOST: '127.0.0.1' },
    stdio: ['ignore', 'pipe', 'pipe'],
    cwd: root
  })
  child.stdout.pipe(log)
  child.stderr.pipe(log)
  let exited = null
  const exit = new Promise(resolve => child.on('exit', (code, signal) => {
    exited = { code, signal }
    resolve(exited)
  }))
  const url = `http://127.0.0.1:${port}`
  const t0 = Date.now()
  for (;;) {
    if (exited !== null) throw new Error(`gateway exited during start (${JSON.stringify(exited)}); see ${logFile}`)
    try {
      const r = await fetch(`${url}/readyz`)
      if (r.status === 200) break
    } catch {}
    if (Date.now() - t0 > 20000) {
      child.kill('SIGKILL')
      throw new Error(`gateway not ready after 20 s; see ${logFile}`)
    }
    await sleep(100)
  }
  return {
    kind: 'gateway',
    pid: child.pid,
    port,
    url,
    host: '127.0.0.1',
    logFile,
    profile: profileDir === null ? null : join(profileDir, `${label}-${port}.cpuprofile`),
    /** Full garbage collection in the gateway (SIGWINCH, see gateway-preload.cjs). */
    gc () {
      if (exited === null) child.kill('SIGWINCH')
    },
    /** Heap snapshot into env.BENCH_HEAP_DIR (SIGURG). */
    heapSnapshot () {
      if (exited === null) child.kill('SIGURG')
    },
    /** SIGKILL: the crash of the reconnect-storm scenario (no drain, no goodbye frames). */
    async kill () {
      if (exited !== null) return exited
      child.kill('SIGKILL')
      const r = await exit
      log.end()
      return r
    },
    async stop (graceMs = 8000) {
      if (exited !== null) return exited
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
      const r = await exit
      clearTimeout(timer)
      log.end()
      return r
    }
  }
}

/** Prometheus text → { 'name{labels}': value }. */
export async function scrape (url) {
  try {
    const r = await fetch(`${url}/metrics`)
    const text = await r.text()
    const out = {}
    for (const line of text.split('\n')) {
      if (line === '' || line[0] === '#') continue
      const sp = line.lastIndexOf(' ')
      out[line.slice(0, sp)] = Number(line.slice(sp + 1))
    }
    return out
  } catch {
    return null
  }
}

/** One reading of a gateway: CPU seconds, RSS and a few metrics. */
export async function snapshot (gw) {
  // nchan has no /metrics; its figures are the processes' (master and workers).
  const m = gw.kind === 'nchan' ? null : await scrape(gw.url)
  const pick = (k) => m?.[k] ?? null
  const p = gw.proc?.() ?? null
  return {
    at: Date.now(),
    cpuS: p !== null ? p.cpuS : gw.pid == null ? null : cpuSeconds(gw.pid),
    sysS: p !== null ? p.sysS : gw.pid == null ? null : (cpuSplit(gw.pid)?.system ?? null),
    rss: p !== null ? p.rss : gw.pid == null ? null : rssBytes(gw.pid),
    hwm: p !== null ? p.hwm : gw.pid == null ? null : hwmBytes(gw.pid),
    heapUsed: pick('nodejs_heap_size_used_bytes'),
    heapTotal: pick('nodejs_heap_size_total_bytes'),
    external: pick('nodejs_external_memory_bytes'),
    connectionsActive: pick('gateway_connections_active'),
    socketWrites: pick('gateway_delivery_socket_writes_total'),
    delivered: pick('gateway_delivery_messages_delivered_total'),
    slowConsumers: pick('gateway_connections_closed_total{reason="slow_consumer"}'),
    latencySum: pick('gateway_delivery_latency_seconds_sum'),
    latencyCount: pick('gateway_delivery_latency_seconds_count'),
    eventLoopLagP99: pick('nodejs_eventloop_lag_p99_seconds'),
    eventLoopLagMax: pick('nodejs_eventloop_lag_max_seconds'),
    gcSeconds: Object.entries(m ?? {}).filter(([k]) => k.startsWith('nodejs_gc_duration_seconds_sum')).reduce((a, [, v]) => a + v, 0) || null
  }
}

export function distExists (root) {
  return existsSync(join(root, 'dist/main.js'))
}
