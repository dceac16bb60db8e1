// A load-client process: holds a share of the benchmark's SSE streams and answers the
// orchestrator (bench/run.mjs) over the fork IPC channel. Started through bench/lib/spawn.mjs,
// which raises the open-file limit to the hard limit first (`ulimit -n`).

import { createSigner } from 'fast-jwt'
import { SsePool } from './sse-client.mjs'
import { nowMs } from './hist.mjs'

let pool = null
let cfg = null
let cpuAt = null
let from = 0
const tokens = new Map()

function userOf (i) {
  return `${cfg.userPrefix}${i}`
}

function send (msg) {
  process.send(msg)
}

const handlers = {
  init (m) {
    cfg = m
    const sign = createSigner({ key: cfg.secret, algorithm: 'HS256', expiresIn: 3600 * 1000 })
    pool = new SsePool({
      targets: cfg.targets,
      connectTimeoutMs: cfg.connectTimeoutMs ?? 30000,
      localAddresses: cfg.localAddresses ?? null,
      liveOnHead: cfg.server === 'nchan',
      trackIds: cfg.trackIds === true,
      requestFor: cfg.server === 'nchan'
        ? (i) => {
            // The same channels as a gateway stream: its user channel (+ the topic).
            const chans = [`user:${userOf(i)}`, ...(cfg.channel ? [cfg.channel] : [])].sort()
            return { path: `/sub/${chans.map(encodeURIComponent).join(',')}`, headers: {} }
          }
        : (i) => {
            // A client keeps its token across reconnects (as EventSource keeps its URL).
            const token = tokens.get(i) ?? sign({ sub: userOf(i), channels: ['topic:*'] })
            tokens.set(i, token)
            const path = cfg.channel ? `/events?channel=${encodeURIComponent(cfg.channel)}` : '/events'
            return { path, headers: { Authorization: `Bearer ${token}` } }
          }
    })
    send({ type: 'ready', pid: process.pid, fdLimit: cfg.fdLimit })
  },

  async open (m) {
    from = m.from
    const indices = []
    for (let i = m.from; i < m.to; i++) indices.push(i)
    const c0 = process.cpuUsage()
    const r = await pool.open(indices, { concurrency: m.concurrency })
    const c = process.cpuUsage(c0)
    send({ type: 'opened', ...r, cpuS: (c.user + c.system) / 1e6, ttfb: pool.ttfb.toJSON(), live: pool.liveHist.toJSON(), failures: pool.failures, streams: pool.openCount, mem: process.memoryUsage().rss })
  },

  record (m) {
    pool.startRecording(m.t0)
    cpuAt = process.cpuUsage()
    send({ type: 'recording' })
  },

  progress () {
    send({ type: 'progress', received: pool.received(), lastReceive: pool.lastReceive, dropped: pool.dropped })
  },

  report (m) {
    const exp = m.expected
    const r = pool.report(typeof exp === 'number' ? () => exp : (st) => exp[st.index - from] ?? 0)
    const cpu = cpuAt === null ? null : process.cpuUsage(cpuAt)
    send({ type: 'report', ...r, cpuS: cpu === null ? null : (cpu.user + cpu.system) / 1e6, rss: process.memoryUsage().rss })
  },

  'storm-arm' (m) {
    pool.armStorm({ targets: m.targets, concurrency: m.concurrency })
    send({ type: 'storm-armed' })
  },

  'storm-record' (m) {
    pool.storm.recording = m.on
    send({ type: 'storm-recording' })
  },

  'storm-status' () {
    send({ type: 'storm-status', ...pool.stormStatus(), toLive: pool.storm.toLive.toJSON(), latency: pool.storm.latency.toJSON() })
  },

  close () {
    pool.closeAll()
    pool.resetConnectStats()
    send({ type: 'closed' })
  },

  exit () {
    pool?.closeAll()
    setTimeout(() => process.exit(0), 50)
  }
}

process.on('message', (m) => {
  Promise.resolve(handlers[m.cmd](m)).catch((err) => {
    send({ type: 'error', message: err.stack ?? String(err) })
  })
})
// The orchestrator died: do not linger holding thousands of sockets.
process.on('disconnect', () => process.exit(0))
send({ type: 'hello', pid: process.pid, at: nowMs() })
