#!/usr/bin/env node
// Fan-out micro-benchmark: one message to N in-memory connections, no sockets. It runs the
// gateway's own Hub, Connection and memory bus from dist/ with a response object whose socket
// only counts what it is given, so what it measures is the JS cost per recipient (framing the
// cursor, queueing, the write call) without the ~10 µs kernel cost of a real write
// (bench/lib/write-cost.mjs has that).
//
//   node --expose-gc bench/fanout.mjs [N,N,...=1000,10000,100000] [rounds=30] [--no-save]

import { join } from 'node:path'
import { execFileSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { machine } from './lib/machine.mjs'
import { channelSetHash, Connection, CountingResponse, createMetrics, Hub, MemoryBus, ROOT } from './lib/delivery-core.mjs'

const args = process.argv.slice(2).filter(a => !a.startsWith('--'))
const sizes = (args[0] ?? '1000,10000,100000').split(',').map(Number)
const rounds = Number(args[1] ?? 30)
const gc = globalThis.gc ?? (() => {})
const quiet = { info () {}, warn () {} }

async function run (n, windowMs) {
  const bus = new MemoryBus({ historySize: 1000, historyTtlS: 600 })
  const metrics = createMetrics(undefined, { defaults: false })
  const hub = new Hub(bus, { batchWindowMs: windowMs, heartbeatMs: 3600000, maxConnections: n + 1, maxConnectionsPerUser: n + 1, retryMs: 3000, log: quiet }, metrics)
  const counter = { writes: 0, bytes: 0 }
  const channels = ['topic:bench', 'user:u'] // like a bench stream: a topic and its user channel
  const hash = channelSetHash(channels)
  for (let i = 0; i < n; i++) {
    const conn = new Connection({ res: new CountingResponse(counter), user: 'u', channels, hash, events: null, maxBufferedBytes: 1 << 20, immediate: hub.immediate, metrics, onClose: hub.onClose })
    await hub.attach(conn, { from: 'live' })
  }
  const pad = 'x'.repeat(100)
  const times = []
  const allocs = []
  for (let r = 0; r < rounds; r++) {
    gc()
    const w0 = counter.writes
    const h0 = process.memoryUsage().heapUsed
    const t0 = process.hrtime.bigint()
    await bus.publish([{ channel: 'topic:bench', event: 'tick', data: { s: r + 1, t: Date.now(), p: pad }, ts: Date.now() }])
    // Window 0 writes within the turn (or at its end); a window flushes on its tick: run it now.
    if (windowMs > 0) hub.flush()
    else await new Promise(resolve => setImmediate(resolve))
    const t1 = process.hrtime.bigint()
    const h1 = process.memoryUsage().heapUsed
    if (counter.writes - w0 !== n) throw new Error(`round ${r}: ${counter.writes - w0} writes for ${n} connections`)
    times.push(Number(t1 - t0) / n)
    allocs.push((h1 - h0) / n)
  }
  hub.close()
  await bus.close()
  times.sort((a, b) => a - b)
  allocs.sort((a, b) => a - b)
  const med = (a) => a[Math.floor(a.length / 2)]
  return { n, windowMs, nsPerRecipient: Math.round(med(times)), nsPerRecipientBest: Math.round(times[0]), heapBytesPerRecipient: Math.round(med(allocs)), bytesPerWrite: Math.round(counter.bytes / counter.writes) }
}

const m = machine()
let commit = null
try { commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT }).toString().trim() } catch {}
process.stdout.write(`fan-out: one message to N connections, median of ${rounds} rounds (Node ${process.version}, ${m.cores} cores, commit ${commit}, load average ${m.loadavg.join(' ')})\n`)
process.stdout.write('| connections | window | ns per recipient (median / best) | heap allocated per recipient |\n|---|---|---|---|\n')
const rows = []
for (const n of sizes) {
  for (const w of [100, 0]) {
    const r = await run(n, w)
    rows.push(r)
    process.stdout.write(`| ${n.toLocaleString('en-US')} | ${w} ms | ${r.nsPerRecipient} / ${r.nsPerRecipientBest} | ${r.heapBytesPerRecipient} B |\n`)
  }
}
if (!process.argv.includes('--no-save')) {
  const date = new Date().toISOString()
  const file = join(ROOT, 'bench/results', `fanout-${date.replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}.json`)
  mkdirSync(join(ROOT, 'bench/results'), { recursive: true })
  writeFileSync(file, JSON.stringify({ scenario: 'fanout', date, command: `node --expose-gc bench/fanout.mjs ${process.argv.slice(2).join(' ')}`.trim(), machine: { ...m, commit }, rounds, rows }, null, 2) + '\n')
  process.stdout.write(`saved ${file.slice(ROOT.length + 1)}\n`)
}
