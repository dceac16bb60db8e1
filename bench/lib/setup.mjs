// One set-up of a measurement: the servers (gateways, nginx + Nchan, or external targets),
// Redis when needed, and the load-client processes.

import { randomBytes } from 'node:crypto'
import os from 'node:os'
import { existsSync } from 'node:fs'
import { join, relative } from 'node:path'
import { createSigner } from 'fast-jwt'
import { Histogram, nowMs } from './hist.mjs'
import { startGateway, snapshot } from './gateway.mjs'
import { startNchan, ensureNchan } from './nchan.mjs'
import { fdLimit } from './proc.mjs'
import { machineCpu } from './machine.mjs'
import { summarizeProfile } from './profile.mjs'
import { round } from './report.mjs'
import { Client, ranges } from './clients.mjs'

export const BENCH = join(import.meta.dirname, '..')
export const ROOT = join(BENCH, '..')

export class Setup {
  /**
   * `openOn`: which instances the streams connect to (default all, round-robin); the storm
   * scenario opens them all on instance 0 and lets them move to the others.
   */
  constructor (o, { instances, redis, batchMs, total, channel, label, openOn = null, trackIds = false }) {
    this.o = o
    this.server = o.server ?? 'gateway'
    this.instances = instances
    this.redis = redis && this.server === 'gateway'
    this.batchMs = batchMs
    this.total = total
    this.channel = channel
    this.label = this.server === 'nchan' ? `nchan-${label}` : label
    this.openOn = openOn
    this.trackIds = trackIds
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
    return {
      PATH: process.env.PATH,
      NODE_ENV: 'production',
      JWT_SECRET: this.secret,
      LOG_LEVEL: 'warn',
      BATCH_WINDOW_MS: String(this.batchMs),
      MAX_CONNECTIONS: String(Math.max(20000, perInstance + 1000)),
      SHUTDOWN_DRAIN_MS: '500',
      ...(this.o.heartbeatMs !== null ? { HEARTBEAT_MS: String(this.o.heartbeatMs) } : {}),
      ...(this.o.heapSnapshot ? { BENCH_HEAP_DIR: join(BENCH, 'results/tmp/heap') } : {}),
      ...(this.redis ? { REDIS_URL: this.o.redisUrl, CHANNEL_PREFIX: this.prefix, HISTORY_TTL_S: '600' } : {}),
      ...this.o.env
    }
  }

  /** The settings recorded with the results (the secret left out). */
  settings () {
    if (this.server === 'nchan') return { server: 'nginx + nchan (memory)', nginxWorkers: this.o.nchanWorkers, config: 'bench/nchan.conf' }
    const { JWT_SECRET, PATH, ...env } = this.env ?? {}
    return { env, external: this.o.urls !== null }
  }

  async start () {
    if (this.redis) await this.redisCheck()
    if (this.server === 'nchan') {
      ensureNchan()
      this.gws = [await startNchan({ root: ROOT, dir: join(BENCH, 'results/tmp/nchan'), workers: this.o.nchanWorkers, connections: this.total, label: this.label })]
    } else if (this.o.urls !== null) {
      this.gws = this.o.urls.slice(0, Math.max(1, this.instances)).map((u, k) => {
        const url = new URL(u)
        return { kind: 'gateway', url: url.origin, host: url.hostname === 'localhost' ? '127.0.0.1' : url.hostname, port: Number(url.port || 80), pid: this.o.pids[k] ?? null, stop: async () => {} }
      })
    } else {
      this.env = this.gatewayEnv()
      const profileDir = this.o.profile ? join(BENCH, 'results/tmp/profiles') : null
      this.gws = await Promise.all(Array.from({ length: this.instances }, (_, k) =>
        startGateway({ root: ROOT, dist: this.o.dist, env: this.env, logDir: join(BENCH, 'results/tmp/logs'), profileDir, label: `${this.label}-${k}` })))
    }
    const P = this.o.clients ?? Math.max(1, Math.ceil(this.total / 5000))
    this.clients = Array.from({ length: P }, (_, k) => new Client(k))
    const on = this.openOn ?? this.gws.map((_, k) => k)
    const targets = on.map(k => ({ host: this.gws[k].host, port: this.gws[k].port }))
    await Promise.all(this.clients.map(async (c) => {
      await c.wait('hello', 15000)
      await c.call('init', { targets, server: this.server, trackIds: this.trackIds, secret: this.secret, channel: this.channel, userPrefix: this.userPrefix, fdLimit: fdLimit(c.proc.pid) }, 'ready')
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
    return { at: nowMs(), gws, machine: machineCpu(), loadavg: os.loadavg().map(x => round(x, 2)), redis: await this.redisCpu(), self: process.cpuUsage() }
  }

  /** The pid whose RSS the sampler follows: nginx's worker for nchan. */
  samplePids () {
    return this.gws.map(g => (g.pids ? g.pids().at(-1) : g.pid)).filter(p => p != null)
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

export async function finish (setup) {
  try {
    await setup.stop()
  } catch (err) {
    process.stderr.write(`stopping: ${err.message}\n`)
  }
}
