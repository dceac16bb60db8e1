#!/usr/bin/env node
// Publish throughput on one Redis vs a 3-master Redis Cluster, two gateway instances each.
//
//   npm run build && bash .ci/redis-cluster.sh start
//   node bench/cluster.mjs [--duration 10] [--connections 32] [--channels 1000] [--batch 1]
//
// For each topology it starts two gateways from dist/ (REDIS_URL, then REDIS_CLUSTER_NODES),
// drives POST /publish on both at once with autocannon (--connections per instance, each
// request publishing --batch messages on channels spread over --channels names, hence over
// every slot), and reads each Redis master's CPU time (INFO cpu) before and after. Writes
// bench/results/cluster-<timestamp>.json and prints a table. Self-contained on purpose (the
// rest of bench/ is the main harness).

import { spawn } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'
import { createSigner } from 'fast-jwt'
import { Redis } from 'ioredis'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' },
    connections: { type: 'string', default: '32' },
    channels: { type: 'string', default: '1000' },
    batch: { type: 'string', default: '1' },
    'redis-url': { type: 'string', default: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' },
    'cluster-nodes': { type: 'string', default: process.env.REDIS_CLUSTER_NODES ?? '127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003' }
  }
})
const duration = Number(values.duration)
const connections = Number(values.connections)
const channels = Number(values.channels)
const batch = Number(values.batch)
const secret = 'bench-secret-' + randomBytes(8).toString('hex')
const token = createSigner({ key: secret })({ sub: 'bench', role: 'publisher' })

const freePort = () => new Promise((resolve, reject) => {
  const s = net.createServer()
  s.on('error', reject)
  s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)) })
})

async function startGateway (env) {
  const port = await freePort()
  const child = spawn(process.execPath, [join(root, 'dist', 'main.js')], {
    env: { PATH: process.env.PATH, NODE_ENV: 'production', PORT: String(port), HOST: '127.0.0.1', JWT_SECRET: secret, LOG_LEVEL: 'warn', HISTORY_SIZE: '100', HISTORY_TTL_S: '120', ...env },
    stdio: ['ignore', 'ignore', 'inherit']
  })
  let exited = false
  child.on('exit', () => { exited = true })
  const url = `http://127.0.0.1:${port}`
  for (let i = 0; i < 200; i++) {
    if (exited) throw new Error('gateway exited during start')
    const ok = await fetch(`${url}/readyz`).then(r => r.status === 200, () => false)
    if (ok) return { url, stop: () => new Promise(resolve => { if (exited) resolve(); else { child.on('exit', resolve); child.kill('SIGKILL') } }) }
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  child.kill('SIGKILL')
  throw new Error('gateway not ready after 20 s')
}

/** Busy CPU seconds of a Redis server (user + sys, main thread and children). */
async function redisCpu (hostPort) {
  const [host, port] = hostPort.split(':')
  const r = new Redis({ host, port: Number(port), lazyConnect: true, maxRetriesPerRequest: 1 })
  await r.connect()
  const info = await r.info('cpu')
  r.disconnect()
  const get = (k) => Number(new RegExp(`^${k}:([0-9.]+)`, 'm').exec(info)?.[1] ?? 0)
  return get('used_cpu_user') + get('used_cpu_sys')
}

async function masters (seed) {
  const [host, port] = seed.split(':')
  const r = new Redis({ host, port: Number(port), lazyConnect: true })
  await r.connect()
  const slots = await r.call('CLUSTER', 'SLOTS')
  r.disconnect()
  return [...new Set(slots.map(s => `${s[2][0]}:${s[2][1]}`))].sort()
}

function load (url) {
  let i = 0
  return new Promise((resolve, reject) => {
    const inst = autocannon({
      url: `${url}/publish`,
      method: 'POST',
      connections,
      duration,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      requests: [{
        setupRequest: (req) => {
          const msgs = Array.from({ length: batch }, () => ({ channel: `bench:${i++ % channels}`, event: 'tick', data: { n: i, pad: 'x'.repeat(64) } }))
          return { ...req, body: JSON.stringify(batch === 1 ? msgs[0] : msgs) }
        }
      }]
    }, (err, res) => err ? reject(err) : resolve(res))
    autocannon.track(inst, { renderProgressBar: false, renderResultsTable: false, renderLatencyTable: false })
  })
}

async function scenario (label, env, nodes) {
  const prefix = `bench${randomBytes(3).toString('hex')}:`
  const gws = [await startGateway({ ...env, CHANNEL_PREFIX: prefix }), await startGateway({ ...env, CHANNEL_PREFIX: prefix })]
  try {
    await Promise.all(gws.map(g => fetch(`${g.url}/publish`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ channel: 'bench:warm', data: 1 }) })))
    const cpu0 = await Promise.all(nodes.map(redisCpu))
    const t0 = Date.now()
    const results = await Promise.all(gws.map(g => load(g.url)))
    const seconds = (Date.now() - t0) / 1000
    const cpu1 = await Promise.all(nodes.map(redisCpu))
    const ok = results.reduce((s, r) => s + r['2xx'], 0)
    const errors = results.reduce((s, r) => s + r.non2xx + r.errors + r.timeouts, 0)
    const p99 = Math.max(...results.map(r => r.latency.p99))
    const p50 = Math.max(...results.map(r => r.latency.p50))
    return {
      topology: label,
      shards: nodes.length,
      requestsPerS: Math.round(ok / seconds),
      messagesPerS: Math.round(ok * batch / seconds),
      errors,
      latencyMs: { p50, p99 },
      redisCpuPct: Object.fromEntries(nodes.map((n, k) => [n, Math.round((cpu1[k] - cpu0[k]) / seconds * 1000) / 10]))
    }
  } finally {
    await Promise.all(gws.map(g => g.stop()))
  }
}

const clusterMasters = await masters(values['cluster-nodes'].split(',')[0])
const redisHost = new URL(values['redis-url']).host || '127.0.0.1:6379'
const runs = []
runs.push(await scenario('1 shard (REDIS_URL)', { REDIS_URL: values['redis-url'] }, [redisHost]))
runs.push(await scenario(`${clusterMasters.length} shards (REDIS_CLUSTER_NODES)`, { REDIS_CLUSTER_NODES: values['cluster-nodes'] }, clusterMasters))

const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')
const out = {
  scenario: 'cluster-publish',
  date: new Date().toISOString(),
  command: `node bench/cluster.mjs --duration ${duration} --connections ${connections} --channels ${channels} --batch ${batch}`,
  params: { duration, connectionsPerInstance: connections, instances: 2, channels, messagesPerRequest: batch },
  machine: { cores: os.cpus().length, cpuModel: os.cpus()[0]?.model, node: process.version, loadavg: os.loadavg().map(x => Math.round(x * 100) / 100) },
  runs
}
mkdirSync(join(root, 'bench', 'results'), { recursive: true })
const file = join(root, 'bench', 'results', `cluster-${stamp}.json`)
writeFileSync(file, JSON.stringify(out, null, 2) + '\n')

const rows = [['topology', 'req/s', 'msg/s', 'errors', 'p50 ms', 'p99 ms', 'Redis CPU % per master']]
for (const r of runs) rows.push([r.topology, String(r.requestsPerS), String(r.messagesPerS), String(r.errors), String(r.latencyMs.p50), String(r.latencyMs.p99), Object.values(r.redisCpuPct).join(' / ')])
const w = rows[0].map((_, c) => Math.max(...rows.map(r => r[c].length)))
for (const r of rows) console.log(r.map((v, c) => v.padEnd(w[c])).join('  '))
console.log(`\n${out.machine.cores} cores, ${out.machine.cpuModel}; wrote ${file}`)
