#!/usr/bin/env node
// sse-gateway load benchmarks. `npm run bench` (all scenarios at 1,000 connections, ~2 min),
// `npm run bench -- --help` for the options, bench/README.md for what each figure means.

import { parseArgs } from 'node:util'
import { randomBytes, createHash } from 'node:crypto'
import { mkdirSync, writeFileSync, readdirSync, statSync, existsSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { execFileSync } from 'node:child_process'
import { createSigner } from 'fast-jwt'
import { Histogram, nowMs } from './lib/hist.mjs'
import { startGateway, snapshot, distExists } from './lib/gateway.mjs'
import { spawnNode } from './lib/spawn.mjs'
import { PublisherPool, schedule, padding } from './lib/publisher.mjs'
import { Sampler, fdLimit } from './lib/proc.mjs'
import { machine, machineCpu } from './lib/machine.mjs'
import { summarizeProfile } from './lib/profile.mjs'
import { targets, row, table, describeRun, round, steadyRate } from './lib/report.mjs'

const HERE = dirname(fileURLToPath(import.meta.url))
const ROOT = join(HERE, '..')
const SCENARIOS = ['idle', 'broadcast', 'per-user', 'publish', 'connect', 'multi']
const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))

const HELP = `usage: npm run bench -- [options]

  --scenario S      idle | broadcast | per-user | publish | connect | multi | all | targets  (all)
  --connections N   SSE streams (for multi: per instance)                                (1000)
  --duration S      seconds of load per measurement                                       (10)
  --rate R          broadcast: messages/s on the channel (10); per-user: total messages/s
                    (default: one per stream per second)
  --instances K     gateway instances (K > 1 uses Redis)                                  (1; multi: 2)
  --batch-ms MS     BATCH_WINDOW_MS of the gateway                                        (100)
  --clients P       load-client processes       (default: one per 5,000 streams, at least 1)
  --concurrency C   handshakes in flight while connecting, over all clients              (500)
  --payload B       padding bytes in each message's data                                  (100)
  --publishers C    autocannon connections in the publish scenario                        (32)
  --pub-connections P  per-user: publisher connections, users sharded over them, spread over
                    the instances (2 per instance)
  --url URL[,URL]   target running gateways instead of starting them (needs --secret or
                    JWT_SECRET; --pid PID[,PID] to read their CPU and RSS from /proc)
  --redis           use Redis even with one instance (REDIS_URL, default redis://127.0.0.1:6379)
  --env K=V         extra gateway environment (repeatable), e.g. --env HISTORY_SIZE=100
  --profile         run the gateway with --cpu-prof and print its top self-time functions
  --perf            record the gateway with Linux perf during the load (kernel symbols)
  --heap-snapshot   idle: write a gateway heap snapshot after the hold and print the largest
                    object kinds per stream (slow at 10,000 streams)
  --no-save         do not write bench/results/*.json
  --build           run \`npm run build\` first (also done when dist/ is missing)
  --dist DIR        the built gateway to run (dist); e.g. a snapshot build of another commit
  --quiet-wait S    before each scenario wait up to S s for the machine to be quiet (< 25 %
                    busy over 2 s), so other jobs on a shared machine disturb less      (0)
`

function options () {
  const { values } = parseArgs({
    options: {
      scenario: { type: 'string', default: 'all' },
      connections: { type: 'string', default: '1000' },
      duration: { type: 'string', default: '10' },
      rate: { type: 'string' },
      instances: { type: 'string' },
      'batch-ms': { type: 'string', default: '100' },
      'heartbeat-ms': { type: 'string' },
      clients: { type: 'string' },
      concurrency: { type: 'string', default: '500' },
      payload: { type: 'string', default: '100' },
      publishers: { type: 'string', default: '32' },
      'pub-connections': { type: 'string' },
      url: { type: 'string' },
      pid: { type: 'string' },
      secret: { type: 'string' },
      redis: { type: 'boolean', default: false },
      'redis-url': { type: 'string' },
      env: { type: 'string', multiple: true, default: [] },
      profile: { type: 'boolean', default: false },
      'heap-snapshot': { type: 'boolean', default: false },
      perf: { type: 'boolean', default: false },
      'no-save': { type: 'boolean', default: false },
      build: { type: 'boolean', default: false },
      dist: { type: 'string', default: 'dist' },
      'quiet-wait': { type: 'string', default: '0' },
      help: { type: 'boolean', short: 'h', default: false }
    },
    allowPositionals: false
  })
  if (values.help) {
    process.stdout.write(HELP)
    process.exit(0)
  }
  const int = (k, v) => {
    const n = Number(v)
    if (!Number.isFinite(n) || n < 0) throw new Error(`--${k} must be a non-negative number, got ${v}`)
    return n
  }
  const o = {
    scenario: values.scenario,
    connections: int('connections', values.connections),
    duration: int('duration', values.duration),
    rate: values.rate === undefined ? null : int('rate', values.rate),
    instances: values.instances === undefined ? null : int('instances', values.instances),
    batchMs: int('batch-ms', values['batch-ms']),
    heartbeatMs: values['heartbeat-ms'] === undefined ? null : int('heartbeat-ms', values['heartbeat-ms']),
    clients: values.clients === undefined ? null : int('clients', values.clients),
    concurrency: int('concurrency', values.concurrency),
    payload: int('payload', values.payload),
    publishers: int('publishers', values.publishers),
    pubConnections: values['pub-connections'] === undefined ? null : int('pub-connections', values['pub-connections']),
    urls: values.url === undefined ? null : values.url.split(',').map(s => s.trim()).filter(Boolean),
    pids: values.pid === undefined ? [] : values.pid.split(',').map(Number),
    secret: values.secret ?? process.env.JWT_SECRET ?? null,
    redis: values.redis,
    redisUrl: values['redis-url'] ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    env: Object.fromEntries(values.env.map(kv => {
      const i = kv.indexOf('=')
      if (i <= 0) throw new Error(`--env expects KEY=VALUE, got ${kv}`)
      return [kv.slice(0, i), kv.slice(i + 1)]
    })),
    profile: values.profile,
    heapSnapshot: values['heap-snapshot'],
    perf: values.perf,
    save: !values['no-save'],
    build: values.build,
    dist: values.dist,
    quietWait: int('quiet-wait', values['quiet-wait'])
  }
  if (![...SCENARIOS, 'all', 'targets'].includes(o.scenario)) throw new Error(`--scenario must be one of ${[...SCENARIOS, 'all', 'targets'].join(', ')}`)
  if (o.urls !== null) {
    for (const u of o.urls) {
      const h = new URL(u).hostname
      if (h !== '127.0.0.1' && h !== 'localhost' && h !== '::1') throw new Error(`--url must be a loopback address (bench traffic stays on this machine): ${u}`)
    }
    if (o.secret === null) throw new Error('--url needs the gateway\'s JWT secret: --secret or JWT_SECRET')
  }
  return o
}

// ---------------------------------------------------------------------------------------------
// Load-client processes

class Client {
  constructor (k) {
    this.k = k
    this.proc = spawnNode(join(HERE, 'lib/client-worker.mjs'), { ipc: true, stdio: 'inherit' })
    this.inbox = []
    this.waiters = []
    this.exited = false
    this.proc.on('message', (m) => {
      if (m.type === 'error') process.stderr.write(`client ${k}: ${m.message}\n`)
      const w = this.waiters.findIndex(x => x.type === m.type || m.type === 'error')
      if (w >= 0) {
        const [x] = this.waiters.splice(w, 1)
        if (m.type === 'error') x.reject(new Error(`client ${k}: ${m.message}`))
        else x.resolve(m)
      } else this.inbox.push(m)
    })
    this.proc.on('exit', () => {
      this.exited = true
      for (const x of this.waiters.splice(0)) x.reject(new Error(`client ${k} exited`))
    })
  }

  wait (type, timeoutMs = 600000) {
    const i = this.inbox.findIndex(m => m.type === type)
    if (i >= 0) return Promise.resolve(this.inbox.splice(i, 1)[0])
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`client ${this.k}: no '${type}' within ${timeoutMs} ms`)), timeoutMs)
      this.waiters.push({
        type,
        resolve: (m) => { clearTimeout(timer); resolve(m) },
        reject: (e) => { clearTimeout(timer); reject(e) }
      })
    })
  }

  call (cmd, payload, reply, timeoutMs) {
    const p = this.wait(reply, timeoutMs)
    this.proc.send({ cmd, ...payload })
    return p
  }

  async exit () {
    if (this.exited) return
    const done = new Promise(resolve => this.proc.once('exit', resolve))
    try { this.proc.send({ cmd: 'exit' }) } catch {}
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 3000)
    await done
    clearTimeout(t)
  }
}

function ranges (total, parts) {
  const out = []
  for (let k = 0; k < parts; k++) out.push([Math.floor(total * k / parts), Math.floor(total * (k + 1) / parts)])
  return out
}

// ---------------------------------------------------------------------------------------------
// One set-up: gateways (or external targets), Redis, client processes

class Setup {
  constructor (o, { instances, redis, batchMs, total, channel, label }) {
    this.o = o
    this.instances = instances
    this.redis = redis
    this.batchMs = batchMs
    this.total = total
    this.channel = channel
    this.label = label
    this.runId = randomBytes(3).toString('hex')
    this.secret = o.secret ?? randomBytes(24).toString('base64url')
    this.userPrefix = `b${this.runId}-`
    this.prefix = `bench-${this.runId}:`
    this.gws = []
    this.clients = []
    this.env = null
    this.redisClient = null
    this.results = []
  }

  gatewayEnv () {
    const perInstance = Math.ceil(this.total / this.instances)
    const env = {
      PATH: process.env.PATH,
      NODE_ENV: 'production',
      JWT_SECRET: this.secret,
      LOG_LEVEL: 'warn',
      BATCH_WINDOW_MS: String(this.batchMs),
      MAX_CONNECTIONS: String(Math.max(20000, perInstance + 1000)),
      SHUTDOWN_DRAIN_MS: '500',
      ...(this.o.heartbeatMs !== null ? { HEARTBEAT_MS: String(this.o.heartbeatMs) } : {}),
      ...(this.o.heapSnapshot ? { BENCH_HEAP_DIR: join(HERE, 'results/tmp/heap') } : {}),
      ...(this.redis ? { REDIS_URL: this.o.redisUrl, CHANNEL_PREFIX: this.prefix, HISTORY_TTL_S: '600' } : {}),
      ...this.o.env
    }
    return env
  }

  /** The settings recorded with the results (the secret left out). */
  settings () {
    const { JWT_SECRET, PATH, ...env } = this.env ?? {}
    return { env, external: this.o.urls !== null }
  }

  async start () {
    if (this.redis) await this.redisCheck()
    if (this.o.urls !== null) {
      this.gws = this.o.urls.slice(0, Math.max(1, this.instances)).map((u, k) => {
        const url = new URL(u)
        return { url: url.origin, host: url.hostname === 'localhost' ? '127.0.0.1' : url.hostname, port: Number(url.port || 80), pid: this.o.pids[k] ?? null, stop: async () => {} }
      })
    } else {
      this.env = this.gatewayEnv()
      const profileDir = this.o.profile ? join(HERE, 'results/tmp/profiles') : null
      this.gws = await Promise.all(Array.from({ length: this.instances }, (_, k) =>
        startGateway({ root: ROOT, dist: this.o.dist, env: this.env, logDir: join(HERE, 'results/tmp/logs'), profileDir, label: `${this.label}-${k}` })))
    }
    const P = this.o.clients ?? Math.max(1, Math.ceil(this.total / 5000))
    this.clients = Array.from({ length: P }, (_, k) => new Client(k))
    const targets = this.gws.map(g => ({ host: g.host, port: g.port }))
    await Promise.all(this.clients.map(async (c) => {
      await c.wait('hello', 15000)
      await c.call('init', { targets, secret: this.secret, channel: this.channel, userPrefix: this.userPrefix, fdLimit: fdLimit(c.proc.pid) }, 'ready')
    }))
    this.clientLimits = this.clients.map(c => fdLimit(c.proc.pid))
    this.publishUrl = this.gws[0].url
    this.sign = createSigner({ key: this.secret, algorithm: 'HS256', expiresIn: 3600 * 1000 })
  }

  publisherToken () {
    return this.sign({ sub: 'bench-publisher', role: 'publisher' })
  }

  user (i) {
    return `user:${this.userPrefix}${i}`
  }

  /** Opens streams [0, total) spread over the clients; resolves once all are live or failed. */
  async open (concurrency = this.o.concurrency) {
    const parts = ranges(this.total, this.clients.length)
    const per = Math.max(1, Math.ceil(concurrency / this.clients.length))
    const t0 = nowMs()
    const replies = await Promise.all(this.clients.map((c, k) => c.call('open', { from: parts[k][0], to: parts[k][1], concurrency: per }, 'opened')))
    const elapsedMs = nowMs() - t0
    const ttfb = new Histogram()
    const live = new Histogram()
    const failures = {}
    let opened = 0
    let failed = 0
    for (const r of replies) {
      ttfb.merge(r.ttfb)
      live.merge(r.live)
      opened += r.opened
      failed += r.failed
      for (const [k, v] of Object.entries(r.failures)) failures[k] = (failures[k] ?? 0) + v
    }
    return {
      requested: this.total,
      opened,
      failed,
      failures,
      elapsedMs: Math.round(elapsedMs),
      perSecond: Math.round(opened / (elapsedMs / 1000)),
      concurrency,
      timeToHeadMs: ttfb.summary(),
      timeToLiveMs: live.summary(),
      clientRss: replies.map(r => r.mem),
      clientCpuS: replies.map(r => round(r.cpuS, 2))
    }
  }

  async closeStreams () {
    await Promise.all(this.clients.map(c => c.call('close', {}, 'closed')))
  }

  async snapshots () {
    const gws = await Promise.all(this.gws.map(g => snapshot(g)))
    return { at: nowMs(), gws, machine: machineCpu(), redis: await this.redisCpu(), self: process.cpuUsage() }
  }

  async redisCheck () {
    const { Redis } = await import('ioredis')
    const r = new Redis(this.o.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null })
    r.on('error', () => {})
    try {
      await r.connect()
      await r.ping()
    } catch (err) {
      r.disconnect()
      throw new Error(`Redis is needed (${this.instances > 1 ? 'instances > 1' : '--redis'}) but ${this.o.redisUrl} does not answer: ${err.message}. Start it: redis-server --daemonize yes`)
    }
    this.redisClient = r
  }

  async redisCpu () {
    if (this.redisClient === null) return null
    try {
      const info = await this.redisClient.info('cpu')
      const v = (k) => Number(new RegExp(`${k}:([0-9.]+)`).exec(info)?.[1] ?? NaN)
      return v('used_cpu_sys') + v('used_cpu_user')
    } catch {
      return null
    }
  }

  async stop () {
    await Promise.all(this.clients.map(c => c.exit()))
    const results = await Promise.all(this.gws.map(g => g.stop(this.o.profile ? 30000 : 8000)))
    if (this.o.profile) {
      this.profiles = []
      for (const g of this.gws) {
        if (g.profile && existsSync(g.profile)) this.profiles.push({ file: relative(ROOT, g.profile), top: summarizeProfile(g.profile, 25) })
      }
      for (const r of this.results) r.profiles = this.profiles
    }
    if (this.redisClient !== null) {
      // Remove this run's history keys (a unique CHANNEL_PREFIX per run).
      try {
        let cursor = '0'
        do {
          const [next, keys] = await this.redisClient.scan(cursor, 'MATCH', `${this.prefix}*`, 'COUNT', 1000)
          cursor = next
          if (keys.length > 0) await this.redisClient.unlink(...keys)
        } while (cursor !== '0')
      } catch {}
      this.redisClient.disconnect()
    }
    return results
  }
}

// ---------------------------------------------------------------------------------------------
// Measurements

function gatewayFigures (setup, before, after, samples) {
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

function machineFigures (before, after, ownCpuS) {
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
    redisCpuS: redis === null ? null : round(redis, 2)
  }
}

function selfCpuS (before, _after) {
  const d = process.cpuUsage(before.self)
  return (d.user + d.system) / 1e6
}


/** Waits until the clients received `expected` messages, or nothing changed for 3 s (max 30 s). */
async function waitDeliveries (setup, expected) {
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

function mergeReports (reports) {
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
async function measure (setup, { load, expectedTotal, expectedFor }) {
  await sleep(1000)
  const before = await setup.snapshots()
  const sampler = new Sampler(setup.gws.map(g => g.pid).filter(p => p != null), 1000)
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
  return { loadResult, delivery, perf, gateways: gatewayFigures(setup, before, after, samples), machineLoad: machineFigures(before, after, selfCpuS(before, after) + sumCpu(setup, before, after) + delivery.clientCpuS.reduce((a, b) => a + (b ?? 0), 0)) }
}

async function startPerfs (setup) {
  const { startPerf } = await import('./lib/perf.mjs')
  const dir = join(HERE, 'results/tmp/perf')
  mkdirSync(dir, { recursive: true })
  return setup.gws.filter(g => g.pid != null).map(g => {
    const file = join(dir, `${setup.label}-${g.pid}.data`)
    return { file, p: startPerf(g.pid, file) }
  })
}

async function stopPerfs (perfs) {
  const { perfReport } = await import('./lib/perf.mjs')
  const out = []
  for (const x of perfs) {
    await x.p.stop()
    out.push({ file: relative(ROOT, x.file), ...perfReport(x.file) })
  }
  return out
}

function sumCpu (setup, before, after) {
  let s = 0
  before.gws.forEach((b, k) => { if (b.cpuS !== null && after.gws[k].cpuS !== null) s += after.gws[k].cpuS - b.cpuS })
  return s
}

// ---------------------------------------------------------------------------------------------
// Scenarios

async function scenarioIdle (o, { label = 'idle', instances = 1, redis = false, perInstance = false } = {}) {
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
    const sampler = new Sampler(setup.gws.map(g => g.pid).filter(p => p != null), 1000)
    await sleep(idleHoldS(o) * 1000)
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
      connect: { ...connect, gatewayCpuS: connectCpu },
      idle: {
        streamsPerInstance: per,
        // Steady state: both readings after a full GC in the gateway (gateway-preload.cjs).
        rssPerConnKiB: gws[0].rssBefore === null ? null : round(rssDelta / connect.opened / 1024, 2),
        // What a plain reading shows before any GC has collected the handshakes' garbage.
        rssPerConnKiBBeforeGc: gws[0].rssBefore === null ? null : round(rawDelta / connect.opened / 1024, 2),
        heapPerConnKiB: gws[0].heapUsedBefore === null ? null : round(heapDelta / connect.opened / 1024, 2),
        holdS: idleHoldS(o),
        idleCpuPct: gws.map(g => g.cpuPct)
      },
      heap,
      gateways: gws,
      machineLoad: machineFigures(before, after, selfCpuS(before, after) + sumCpu(setup, before, after))
    })
  } finally {
    await finish(setup)
  }
}

function idleHoldS (o) {
  return Math.max(2, Math.min(o.duration / 2, 10))
}

async function gcAll (setup) {
  for (const g of setup.gws) g.gc?.()
  await sleep(1500)
}

/** What the streams added to instance 0's heap, per object kind, per stream. */
function heapDiff (a, b, perInstance) {
  if (a === null || b === null || a.error || b.error) return { error: a?.error ?? b?.error ?? 'no snapshot' }
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
  const dir = join(HERE, 'results/tmp/heap')
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
  const { summarizeHeap } = await import('./lib/heap.mjs')
  const s = summarizeHeap(file, Infinity)
  return { file: relative(ROOT, file), totalBytes: s.totalBytes, totalMiB: round(s.totalBytes / 2 ** 20, 1), all: s.top }
}

async function scenarioBroadcast (o, { label = 'broadcast', instances = 1, redis = false, perInstance = false } = {}) {
  const total = perInstance ? o.connections * instances : o.connections
  const rate = o.rate ?? 10
  const setup = new Setup(o, { instances, redis, batchMs: o.batchMs, total, channel: 'topic:bench', label })
  await setup.start()
  try {
    const connect = await setup.open()
    // One channel: one publisher connection keeps its order.
    const publisher = new PublisherPool({ urls: [setup.publishUrl], token: setup.publisherToken() })
    const pad = padding(o.payload)
    const m = await measure(setup, {
      load: async () => {
        const r = await schedule({ publisher, rate, durationS: o.duration, make: (k, t) => ({ channel: 'topic:bench', event: 'tick', data: { s: k + 1, t: round(t, 3), p: pad }, ts: t }) })
        await publisher.drain()
        return r
      },
      expectedTotal: (r) => r.sent * connect.opened,
      expectedFor: (_k, r) => r.sent
    })
    publisher.close()
    return result(o, setup, {
      scenario: label,
      rate,
      connect,
      publish: { sent: m.loadResult.sent, ...publisher.stats() },
      delivery: { expectedPerSecond: rate * connect.opened, ...m.delivery },
      perf: m.perf,
      gateways: m.gateways,
      machineLoad: m.machineLoad
    })
  } finally {
    await finish(setup)
  }
}

async function scenarioPerUser (o, { label = 'per-user', instances = 1, redis = false, perInstance = false } = {}) {
  const total = perInstance ? o.connections * instances : o.connections
  const rate = o.rate ?? total
  const setup = new Setup(o, { instances, redis, batchMs: o.batchMs, total, channel: null, label })
  await setup.start()
  try {
    const connect = await setup.open()
    // Users are sharded over publisher connections (user u → shard u % P; shard k → instance
    // k % K, as behind a load balancer): each channel keeps one path, so its order is kept.
    const shards = o.pubConnections ?? Math.max(2, setup.gws.length * 2)
    const publisher = new PublisherPool({ urls: setup.gws.map(g => g.url), token: setup.publisherToken(), shards, shardOf: (e) => e.u })
    const pad = padding(o.payload)
    const seqs = new Uint32Array(total)
    const parts = ranges(total, setup.clients.length)
    const m = await measure(setup, {
      load: async () => {
        const r = await schedule({
          publisher,
          rate,
          durationS: o.duration,
          make: (_k, t) => {
            const u = Math.floor(Math.random() * total)
            const e = { channel: setup.user(u), event: 'tick', data: { s: ++seqs[u], t: round(t, 3), p: pad }, ts: t }
            Object.defineProperty(e, 'u', { value: u, enumerable: false }) // the shard key, not sent
            return e
          }
        })
        await publisher.drain()
        return r
      },
      expectedTotal: (r) => r.sent,
      expectedFor: (k) => Array.from(seqs.subarray(parts[k][0], parts[k][1]))
    })
    publisher.close()
    return result(o, setup, {
      scenario: label,
      rate,
      connect,
      publish: { sent: m.loadResult.sent, ...publisher.stats() },
      delivery: { expectedPerSecond: rate, ...m.delivery },
      perf: m.perf,
      gateways: m.gateways,
      machineLoad: m.machineLoad
    })
  } finally {
    await finish(setup)
  }
}

async function scenarioPublish (o) {
  const { default: autocannon } = await import('autocannon')
  const total = o.connections
  const setup = new Setup(o, { instances: o.instances ?? 1, redis: o.redis || (o.instances ?? 1) > 1, batchMs: o.batchMs, total, channel: null, label: 'publish' })
  await setup.start()
  const out = []
  try {
    const connect = await setup.open()
    const token = setup.publisherToken()
    const pad = padding(o.payload)
    const C = o.publishers
    for (const perRequest of [1, 100]) {
      const seqs = new Uint32Array(total)
      const parts = ranges(total, setup.clients.length)
      let assigned = 0
      let accepted = 0
      // A user's channel is in at most one request in flight at a time (autocannon keeps a
      // context from a request's setup to its response), so the per-channel order at the
      // gateway is the send order and out-of-order counts mean what they say.
      const inFlight = new Set()
      const pick = (mine) => {
        for (let tries = 0; tries < 50; tries++) {
          const u = Math.floor(Math.random() * total)
          if (!inFlight.has(u) || mine.has(u)) return u
        }
        return mine.size > 0 ? mine.values().next().value : -1
      }
      let ac = null
      const m = await measure(setup, {
        load: async () => {
          const t0 = nowMs()
          ac = await autocannon({
            url: `${setup.publishUrl}/publish`,
            connections: C,
            pipelining: 1,
            duration: o.duration,
            headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
            requests: [{
              method: 'POST',
              path: '/publish',
              setupRequest: (req, context) => {
                const t = nowMs()
                const batch = []
                const mine = new Set()
                for (let j = 0; j < perRequest; j++) {
                  const u = pick(mine)
                  if (u < 0) break
                  mine.add(u)
                  inFlight.add(u)
                  batch.push({ channel: setup.user(u), event: 'tick', data: { s: ++seqs[u], t: round(t, 3), p: pad }, ts: t })
                }
                if (batch.length === 0) batch.push({ channel: 'topic:nobody', event: 'tick', data: { s: 0, t: round(t, 3), p: pad }, ts: t })
                assigned += mine.size === 0 ? 0 : batch.length
                context.users = mine
                context.n = mine.size === 0 ? 0 : batch.length
                return { ...req, body: JSON.stringify(batch.length === 1 ? batch[0] : batch) }
              },
              onResponse: (status, _body, context) => {
                if (status === 202) accepted += context.n
                for (const u of context.users ?? []) inFlight.delete(u)
              }
            }]
          })
          return { sent: accepted, elapsedMs: nowMs() - t0, firstAt: t0 }
        },
        expectedTotal: () => accepted,
        expectedFor: (k) => Array.from(seqs.subarray(parts[k][0], parts[k][1]))
      })
      // Messages whose request was built but never answered 202 cannot be delivered.
      const unaccepted = assigned - accepted
      m.delivery.lostRaw = m.delivery.lost
      m.delivery.lost = Math.max(0, m.delivery.lost - unaccepted)
      out.push(result(o, setup, {
        scenario: perRequest === 1 ? 'publish' : `publish-x${perRequest}`,
        connect,
        publish: {
          tool: 'autocannon',
          connections: C,
          messagesPerRequest: perRequest,
          durationS: o.duration,
          requestsPerSecond: round(ac.requests.average, 0),
          messagesPerSecond: round(ac.requests.average * perRequest, 0),
          requests: ac.requests.total,
          latencyMs: { p50: ac.latency.p50, p90: ac.latency.p90, p99: ac.latency.p99, max: ac.latency.max, mean: ac.latency.average },
          non2xx: ac.non2xx,
          errors: ac.errors,
          timeouts: ac.timeouts,
          assigned,
          accepted,
          unaccepted
        },
        delivery: m.delivery,
        gateways: m.gateways,
        machineLoad: m.machineLoad
      }))
    }
    return out
  } finally {
    await finish(setup)
  }
}

async function scenarioConnect (o, { label = 'connect', instances = 1, redis = false } = {}) {
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
      rounds.push({ round: name, ...c, gatewayCpuS: gws.map(g => g.cpuS), gatewayCpuPct: gws.map(g => g.cpuPct), gatewaySystemPct: gws.map(g => g.systemPct), gatewayRssAfter: gws.map(g => g.rssAfter) })
      await setup.closeStreams()
      // Let the gateway notice every close before the next round.
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

async function finish (setup) {
  try {
    await setup.stop()
  } catch (err) {
    process.stderr.write(`stopping: ${err.message}\n`)
  }
}

// ---------------------------------------------------------------------------------------------
// Results

let machineInfo = null

function result (o, setup, r) {
  const res = {
    scenario: r.scenario,
    date: new Date().toISOString(),
    command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(),
    machine: machineInfo,
    settings: {
      instances: setup.gws.length,
      bus: setup.redis ? 'redis' : (o.urls !== null ? 'external' : 'memory'),
      connections: setup.total,
      connectionsPerInstance: Math.ceil(setup.total / setup.gws.length),
      rate: r.rate ?? null,
      durationS: o.duration,
      batchWindowMs: o.urls !== null ? null : setup.batchMs,
      payloadPadBytes: o.payload,
      clientProcesses: setup.clients.length,
      clientOpenFileLimit: setup.clientLimits,
      connectConcurrency: o.concurrency,
      gateway: setup.settings()
    },
    ...r
  }
  res.targets = targets(res)
  setup.results.push(res) // profiles are attached when the gateways have stopped
  return res
}

function save (r) {
  const dir = join(HERE, 'results')
  mkdirSync(dir, { recursive: true })
  const stamp = r.date.replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')
  const file = join(dir, `${r.scenario}-${r.settings.connections}-${stamp}.json`)
  writeFileSync(file, JSON.stringify(r, null, 2) + '\n')
  return relative(ROOT, file)
}

// ---------------------------------------------------------------------------------------------

/** Which build ran: the newest file of the build and a hash of its .js files. */
function buildInfo (dir) {
  const files = readdirSync(dir, { recursive: true }).filter(f => String(f).endsWith('.js')).map(String).sort()
  const h = createHash('sha1')
  let newest = 0
  for (const f of files) {
    const p = join(dir, f)
    h.update(f).update(readFileSync(p))
    newest = Math.max(newest, statSync(p).mtimeMs)
  }
  return { gatewayBuiltAt: new Date(newest).toISOString(), gatewayBuildSha1: h.digest('hex').slice(0, 12) }
}

function gitInfo () {
  try {
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT }).toString().trim()
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src'], { cwd: ROOT }).toString().trim().split('\n').filter(Boolean).length
    return { commit, srcFilesChanged: dirty }
  } catch {
    return {}
  }
}

async function ensureBuilt (o) {
  if (o.urls !== null) return
  if (o.dist !== 'dist') return
  if (o.build || !distExists(ROOT)) {
    process.stderr.write('building dist/ (npm run build)...\n')
    execFileSync('npm', ['run', 'build', '--silent'], { cwd: ROOT, stdio: 'inherit' })
    return
  }
  const newest = (dir) => {
    let t = 0
    for (const f of readdirSync(dir, { recursive: true })) {
      const st = statSync(join(dir, f))
      if (st.isFile() && st.mtimeMs > t) t = st.mtimeMs
    }
    return t
  }
  if (newest(join(ROOT, 'src')) > statSync(join(ROOT, 'dist/main.js')).mtimeMs + 1000) {
    process.stderr.write('warning: src/ is newer than dist/; run `npm run build` (or pass --build) to bench the current code\n')
  }
}

/** Waits (up to o.quietWait s) until the whole machine is under 25 % busy for 2 s. */
async function quiet (o) {
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

async function runOne (o, name) {
  const K = o.instances ?? 1
  const redis = o.redis || K > 1
  switch (name) {
    case 'idle': return [await scenarioIdle(o, { instances: K, redis })]
    case 'broadcast': return [await scenarioBroadcast(o, { instances: K, redis })]
    case 'per-user': return [await scenarioPerUser(o, { instances: K, redis })]
    case 'publish': return await scenarioPublish(o)
    case 'connect': return [await scenarioConnect(o, { instances: K, redis })]
    case 'multi': {
      const M = Math.max(2, K)
      const mo = { ...o, instances: M, rate: null }
      return [
        await scenarioIdle(mo, { label: 'multi-idle', instances: M, redis: true, perInstance: true }),
        await scenarioBroadcast({ ...mo, rate: o.rate }, { label: 'multi-broadcast', instances: M, redis: true, perInstance: true }),
        await scenarioPerUser(mo, { label: 'multi-per-user', instances: M, redis: true, perInstance: true })
      ]
    }
  }
  throw new Error(`unknown scenario ${name}`)
}

/** The issue's target configurations, one after the other. */
function targetPlan (o) {
  return [
    ['idle', { connections: 10000 }],
    ['connect', { connections: 10000 }],
    ['broadcast', { connections: 1000, rate: 10, batchMs: 100 }],
    ['broadcast', { connections: 1000, rate: 10, batchMs: 0 }],
    ['broadcast', { connections: 10000, rate: 10, batchMs: 100 }],
    ['broadcast', { connections: 10000, rate: 50, batchMs: 100 }],
    ['per-user', { connections: 10000, rate: 10000, batchMs: 100 }],
    ['multi', { connections: 10000, batchMs: 100 }]
  ].map(([name, x]) => [name, { ...o, ...x }])
}

async function main () {
  const o = options()
  await ensureBuilt(o)
  machineInfo = { ...machine(), ...gitInfo(), gateway: o.urls !== null ? 'external' : relative(ROOT, resolve(ROOT, o.dist, 'main.js')), ...(o.urls !== null ? {} : buildInfo(resolve(ROOT, o.dist))) }
  process.stdout.write(`sse-gateway bench: ${machineInfo.cores} cores (${machineInfo.cpuModel}), ${machineInfo.memoryGiB} GiB, Node ${machineInfo.node}, load average ${machineInfo.loadavg.join(' ')}\n`)
  const plan = o.scenario === 'targets'
    ? targetPlan(o)
    : (o.scenario === 'all' ? SCENARIOS : [o.scenario]).map(n => [n, o])
  const results = []
  const started = Date.now()
  for (const [name, so] of plan) {
    if (name === 'multi' && o.urls !== null && o.urls.length < 2) {
      process.stdout.write('\nmulti: skipped (--url gives one gateway; pass two URLs)\n')
      continue
    }
    process.stdout.write(`\n== ${name}: ${so.connections} connections${name === 'multi' ? ' per instance' : ''}, ${so.duration} s${so.rate ? `, rate ${so.rate}` : ''}, batch ${so.batchMs} ms\n`)
    let rs
    try {
      const q = await quiet(so)
      if (q !== null && q.waitedS > 0) process.stdout.write(`  waited ${q.waitedS} s for a quiet machine\n`)
      rs = await runOne(so, name)
    } catch (err) {
      process.stdout.write(`  FAILED: ${err.message}\n`)
      if (o.scenario !== 'all' && o.scenario !== 'targets') process.exitCode = 1
      continue
    }
    for (const r of rs) {
      process.stdout.write(`${r.scenario}:\n${describeRun(r)}\n`)
      if (o.save) process.stdout.write(`  saved ${save(r)}\n`)
      results.push(r)
    }
  }
  if (results.length > 0) {
    process.stdout.write(`\n${table(results.map(row))}\n`)
  }
  process.stdout.write(`\ndone in ${Math.round((Date.now() - started) / 1000)} s\n`)
}

main().then(() => process.exit(process.exitCode ?? 0), (err) => {
  process.stderr.write(`bench: ${err.message}\n`)
  process.exit(1)
})
