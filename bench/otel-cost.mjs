#!/usr/bin/env node
// What tracing costs on the delivery path: the gateway's own Hub, Connection and memory bus from
// dist/ (as bench/fanout.mjs, sockets replaced by a counter), one message at a time through
// publish -> fan-out -> flush, in three modes:
//   off          no OTEL_* variables: the shipped default, no SDK loaded, one null check per message
//   on, unsampled the SDK with OTEL_TRACES_SAMPLER=always_off: a span decision per message
//   on, sampled  always_on, exported over OTLP http/json to a local sink that discards it
// Figures are per message (not per recipient): a delivery span is one per message per instance.
// CPU time of this process (process.cpuUsage), so other load on the machine counts less.
//
//   npm run build && node --expose-gc bench/otel-cost.mjs [connections=1,100,1000] [messages=20000] [modes=off,unsampled,sampled]
// (`off` alone also runs against a build from before tracing existed: copy this file there.)

import http from 'node:http'
import { channelSetHash, Connection, CountingResponse, createMetrics, dist, Hub, MemoryBus } from './lib/delivery-core.mjs'

const sizes = (process.argv[2] ?? '1,100,1000').split(',').map(Number)
const messages = Number(process.argv[3] ?? 20000)
const modes = (process.argv[4] ?? 'off,unsampled,sampled').split(',')
const ROUNDS = 5
const HEAP_MESSAGES = 200
const gc = globalThis.gc ?? (() => {})
const quiet = { info () {}, warn () {} }

// The OTLP sink: answers every export with 200 and keeps only a count.
let exported = 0
const sink = http.createServer((req, res) => {
  req.on('data', () => {})
  req.on('end', () => { exported++; res.writeHead(200, { 'content-type': 'application/json' }); res.end('{}') })
})
await new Promise(resolve => sink.listen(0, '127.0.0.1', resolve))
const sinkUrl = `http://127.0.0.1:${sink.address().port}/v1/traces`

async function tracing (mode) {
  if (mode === 'off') return null
  const { startTracing } = await dist('otel.js')
  return startTracing({ url: sinkUrl, protocol: 'http/json', headers: {}, sampler: mode === 'sampled' ? 'always_on' : 'always_off', samplerArg: 1, serviceName: 'bench', exportDelayMs: 200 })
}

async function run (n, mode) {
  const tr = await tracing(mode)
  const bus = new MemoryBus({ historySize: 100, historyTtlS: 600 })
  const metrics = createMetrics(undefined, { defaults: false })
  const hub = new Hub(bus, { batchWindowMs: 100, heartbeatMs: 3600000, maxConnections: n + 1, maxConnectionsPerUser: n + 1, retryMs: 3000, busWaitMs: 0, log: quiet, tracer: tr?.delivery ?? null }, metrics)
  const counter = { writes: 0 }
  const channels = ['topic:bench', 'user:u']
  const hash = channelSetHash(channels)
  for (let i = 0; i < n; i++) {
    const conn = new Connection({ res: new CountingResponse(counter), user: 'u', channels, hash, events: null, maxBufferedBytes: 1 << 20, immediate: hub.immediate, metrics, onClose: hub.onClose })
    await hub.attach(conn, { from: 'live' })
  }
  const data = { p: 'x'.repeat(100) }
  const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'
  const times = []
  const allocs = []
  const send = async (count) => {
    for (let k = 0; k < count; k++) {
      await bus.publish([{ channel: 'topic:bench', event: 'tick', data, ts: Date.now(), traceparent }])
      hub.flush() // the shared tick, run after every message: one write per message per stream
    }
  }
  for (let r = 0; r < ROUNDS; r++) {
    gc()
    const w0 = counter.writes
    const c0 = process.cpuUsage()
    await send(messages)
    const c1 = process.cpuUsage(c0)
    if (counter.writes - w0 !== n * messages) throw new Error(`${counter.writes - w0} writes, expected ${n * messages}`)
    // CPU time, not wall time: on a shared machine the wall clock mostly measures the others.
    times.push((c1.user + c1.system) * 1000 / messages)
    // Heap: a short pass right after a full GC, small enough that no scavenge runs inside it.
    gc()
    const h0 = process.memoryUsage().heapUsed
    await send(HEAP_MESSAGES)
    allocs.push((process.memoryUsage().heapUsed - h0) / HEAP_MESSAGES)
  }
  hub.close()
  await bus.close()
  await tr?.shutdown()
  times.sort((a, b) => a - b)
  allocs.sort((a, b) => a - b)
  const med = (a) => a[Math.floor(a.length / 2)]
  return { ns: Math.round(med(times)), best: Math.round(times[0]), heap: Math.round(med(allocs)) }
}

process.stdout.write(`tracing cost per message: publish + fan-out + flush, ${messages.toLocaleString('en-US')} messages x ${ROUNDS} rounds, median (Node ${process.version})\n`)
process.stdout.write('| connections | tracing | CPU ns per message (median / best) | vs off | heap per message |\n|---|---|---|---|---|\n')
for (const n of sizes) {
  let off = 0
  // "off" runs first so that the SDK is not even loaded for it.
  for (const mode of modes) {
    const r = await run(n, mode)
    if (mode === 'off') off = r.ns
    const label = mode === 'off' ? 'off' : mode === 'unsampled' ? 'on, unsampled' : 'on, sampled'
    process.stdout.write(`| ${n.toLocaleString('en-US')} | ${label} | ${r.ns.toLocaleString('en-US')} / ${r.best.toLocaleString('en-US')} | ${mode === 'off' ? '' : `+${(r.ns - off).toLocaleString('en-US')} ns`} | ${r.heap.toLocaleString('en-US')} B |\n`)
  }
}
process.stdout.write(`(${exported} OTLP exports received by the sink)\n`)
sink.close()
