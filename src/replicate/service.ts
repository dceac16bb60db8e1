// The Replicate proxy's shared state: owners, the latest state of each prediction, the
// monotonic update rule, publishing, `done` exactly once, and which instance polls.
// Everything that must hold across instances lives in the bus store; this process only keeps
// timers and the pollers it happens to run.
import { randomBytes } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import type { Bus, Envelope, Listener, Store } from '../bus/bus'
import { compareIds } from '../bus/bus'
import { userChannel } from '../channels'
import type { Config } from '../config'
import type { Hub } from '../delivery/hub'
import type { Metrics } from '../metrics/metrics'
import { Poller } from './poller'
import { keys, order, statusPayload, toRecord, type PredictionRecord } from './state'
import { isTerminal, type CreatePredictionRequest, type Prediction } from './types'
import { createUpstream, type RetryInfo, type Upstream, type UpstreamOp } from './upstream'

export interface ReplicateOptions {
  /** pause between two polls of one prediction (default 1000) */
  pollIntervalMs?: number
  /** TTL of the poller lock and of the "someone watches" mark (default 10000) */
  lockTtlMs?: number
  /** first step of the upstream backoff on 5xx and network errors (default 1000) */
  retryBaseDelayMs?: number
  /** GET /predictions/:id asks Replicate again when the record is older than this (default pollIntervalMs) */
  staleMs?: number
  /** how long owners and states are kept (default 24 h) */
  recordTtlMs?: number
  /** how long a poller that saw the end waits for the output stream to finish (default 10000) */
  streamGraceMs?: number
  fetch?: typeof fetch
  /** false leaves locks to expire on close, as a crashed process would (tests) */
  releaseOnClose?: boolean
}

export type ApplyOutcome = 'ok' | 'duplicate' | 'stale'

export interface ServiceDeps {
  bus: Bus
  store: Store
  hub: Hub
  metrics: Metrics
  config: Config
  log: FastifyBaseLogger
}

const MUTEX_TTL_MS = 5000
const MUTEX_WAIT_MS = 5000

interface LocalWatch {
  id: string
  timer: NodeJS.Timeout
  listener: Listener
  busy: boolean
}

export class PredictionService {
  readonly instanceId = randomBytes(8).toString('hex')
  readonly pollIntervalMs: number
  readonly lockTtlMs: number
  readonly retryBaseDelayMs: number
  readonly staleMs: number
  readonly recordTtlMs: number
  readonly streamGraceMs: number
  readonly fetch: typeof fetch | undefined
  readonly store: Store
  private readonly releaseOnClose: boolean
  private readonly locals = new Map<string, LocalWatch>()
  private readonly pollers = new Map<string, Poller>()
  private readonly chains = new Map<string, Promise<unknown>>()
  private closed = false

  constructor (readonly deps: ServiceDeps, opts: ReplicateOptions = {}) {
    this.pollIntervalMs = opts.pollIntervalMs ?? 1000
    this.lockTtlMs = opts.lockTtlMs ?? 10_000
    this.retryBaseDelayMs = opts.retryBaseDelayMs ?? 1000
    this.staleMs = opts.staleMs ?? this.pollIntervalMs
    this.recordTtlMs = opts.recordTtlMs ?? 24 * 3600_000
    this.streamGraceMs = opts.streamGraceMs ?? 10_000
    this.fetch = opts.fetch
    this.releaseOnClose = opts.releaseOnClose ?? true
    this.store = deps.store
  }

  get configured (): boolean {
    return this.deps.config.replicate.apiToken !== undefined
  }

  /** Pollers running in this process (the cluster-wide rule is at most one per prediction). */
  get pollerCount (): number {
    return this.pollers.size
  }

  isPolling (id: string): boolean {
    return this.pollers.has(id)
  }

  upstream (onRetry?: (info: RetryInfo) => void): Upstream {
    const { replicate } = this.deps.config
    const calls = this.deps.metrics.replicateCalls
    return createUpstream({
      baseUrl: replicate.baseUrl,
      token: replicate.apiToken ?? '',
      fetch: this.fetch,
      baseDelayMs: this.retryBaseDelayMs,
      onRetry: info => {
        calls.labels(info.op, 'retry').inc()
        onRetry?.(info)
      }
    })
  }

  async call<T> (op: UpstreamOp, fn: () => Promise<T>): Promise<T> {
    try {
      const v = await fn()
      this.deps.metrics.replicateCalls.labels(op, 'ok').inc()
      return v
    } catch (err) {
      this.deps.metrics.replicateCalls.labels(op, 'error').inc()
      throw err
    }
  }

  async create (owner: string, req: CreatePredictionRequest): Promise<PredictionRecord> {
    const up = this.upstream()
    const p = await this.call('create', () => up.create(req))
    await this.store.set(keys.owner(p.id), owner, this.recordTtlMs)
    if (req.stream === true && typeof p.urls?.stream === 'string') {
      await this.store.set(keys.stream(p.id), p.urls.stream, this.recordTtlMs)
    }
    const { record } = await this.apply(p)
    await this.finalize(record)
    return record
  }

  async owner (id: string): Promise<string | null> {
    return await this.store.get(keys.owner(id))
  }

  async record (id: string): Promise<PredictionRecord | null> {
    const raw = await this.store.get(keys.state(id))
    return raw === null ? null : JSON.parse(raw) as PredictionRecord
  }

  /** The record, asked again from Replicate when it is old and not final. */
  async fresh (id: string): Promise<PredictionRecord | null> {
    const rec = await this.record(id)
    if (rec !== null && (isTerminal(rec.status) || Date.now() - rec.updatedAt < this.staleMs)) return rec
    const up = this.upstream()
    let p: Prediction
    try {
      p = await this.call('get', () => up.get(id))
    } catch (err) {
      // An older state beats an error for a reader; only with nothing to show does it fail.
      if (rec !== null) {
        this.deps.log.warn({ err, prediction: id }, 'replicate get failed; answering the stored state')
        return rec
      }
      throw err
    }
    const { record } = await this.apply(p)
    await this.finalize(record)
    return record
  }

  async cancel (id: string): Promise<PredictionRecord> {
    const up = this.upstream()
    const p = await this.call('cancel', () => up.cancel(id))
    const { record } = await this.apply(p)
    await this.finalize(record)
    return record
  }

  /**
   * Serialises every change to one prediction: within this process by a promise chain, across
   * instances by a short store lock. Read-compare-write-publish under it is what keeps a
   * webhook on one instance and a poll on another from publishing states out of order.
   */
  private async exclusive<T> (id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.chains.get(id) ?? Promise.resolve()
    const run = prev.then(() => this.locked(id, fn))
    const tail = run.then(() => {}, () => {})
    this.chains.set(id, tail)
    void tail.then(() => { if (this.chains.get(id) === tail) this.chains.delete(id) })
    return await run
  }

  private async locked<T> (id: string, fn: () => Promise<T>): Promise<T> {
    const key = keys.mutex(id)
    const token = randomBytes(8).toString('hex')
    const until = Date.now() + MUTEX_WAIT_MS
    for (let i = 0; !(await this.store.set(key, token, MUTEX_TTL_MS, true)); i++) {
      if (Date.now() > until) throw new Error(`prediction ${id} is busy`)
      await new Promise(resolve => setTimeout(resolve, Math.min(40, 2 + 2 * i) * (0.5 + Math.random())))
    }
    try {
      return await fn()
    } finally {
      await this.store.release(key, token).catch(() => {})
    }
  }

  /**
   * Applies a snapshot from any source under the monotonic rule and publishes it when it moves
   * the state forward. `force` republishes an unchanged state (after upstream retries, so
   * watchers learn the upstream is back).
   */
  async apply (p: Prediction, o: { force?: boolean } = {}): Promise<{ outcome: ApplyOutcome, record: PredictionRecord }> {
    return await this.exclusive(p.id, async () => {
      const now = Date.now()
      const old = await this.record(p.id)
      const ord = order(old, p)
      if (old !== null && ord === 'older') return { outcome: 'stale', record: old }
      if (old !== null && ord === 'same') {
        const rec = { ...old, updatedAt: now }
        await this.store.set(keys.state(p.id), JSON.stringify(rec), this.recordTtlMs)
        if (o.force !== true) return { outcome: 'duplicate', record: rec }
        await this.publishState(rec, rec)
        return { outcome: 'duplicate', record: rec }
      }
      const rec = toRecord(p, now)
      // The first final status carries `done` in the same atomic publish (unless a stream's
      // output is still being forwarded): no crash can fall between them, and watchers get
      // both in one write.
      const withDone = isTerminal(rec.status) && !(await this.streamPending(rec.id)) &&
        await this.store.set(keys.doneClaim(rec.id), this.instanceId, this.recordTtlMs, true)
      // Written before publishing: a late joiner reads the bus head first and the record
      // second, so it either sees this state in the record or gets the message replayed.
      await this.store.set(keys.state(p.id), JSON.stringify(rec), this.recordTtlMs)
      try {
        const ids = await this.publishState(rec, old, undefined, withDone)
        if (withDone) await this.store.set(keys.done(rec.id), ids[ids.length - 1], this.recordTtlMs)
      } catch (err) {
        if (old !== null) await this.store.set(keys.state(p.id), JSON.stringify(old), this.recordTtlMs).catch(() => {})
        else await this.store.del(keys.state(p.id)).catch(() => {})
        if (withDone) await this.store.del(keys.doneClaim(rec.id)).catch(() => {})
        throw err
      }
      return { outcome: 'ok', record: rec }
    })
  }

  private async publishState (rec: PredictionRecord, old: PredictionRecord | null, extra?: Record<string, unknown>, done = false): Promise<string[]> {
    const ts = Date.now()
    const msgs: Envelope[] = [{
      channel: keys.channel(rec.id),
      event: 'status',
      data: { ...statusPayload(rec), ...extra },
      key: keys.statusKey(rec.id),
      ts
    }]
    if (extra === undefined && old?.status !== rec.status) {
      const owner = await this.owner(rec.id)
      if (owner !== null) msgs.push({ channel: userChannel(owner), event: 'prediction', data: { id: rec.id, status: rec.status }, ts })
    }
    if (done) msgs.push(this.doneMessage(rec, ts))
    const ids = await this.deps.bus.publish(msgs)
    this.deps.metrics.published.labels('replicate').inc(msgs.length)
    return ids
  }

  private doneMessage (rec: PredictionRecord, ts: number): Envelope {
    return { channel: keys.channel(rec.id), event: 'done', data: { id: rec.id, status: rec.status }, ts }
  }

  /** Tells watchers the poller is waiting out an upstream failure. */
  async notifyRetry (id: string, info: RetryInfo): Promise<void> {
    await this.exclusive(id, async () => {
      const rec = await this.record(id)
      if (rec === null || isTerminal(rec.status)) return
      await this.publishState(rec, rec, { upstream: 'retrying', reason: info.reason, attempt: info.attempt, retry_in_ms: info.delayMs })
    })
  }

  /** Publishes the raw output of the upstream stream. */
  async publishStream (id: string, event: string, data: string): Promise<void> {
    // A JSON string, so a token like `42` or one ending in `\r` reaches the client unchanged.
    await this.deps.bus.publish([{ channel: keys.channel(id), event, data: JSON.stringify(data), ts: Date.now() }])
    this.deps.metrics.published.labels('replicate').inc()
  }

  /**
   * Publishes `done` once cluster-wide for a final record whose `done` did not go out with its
   * status (the claim makes this a no-op when it did). While an output stream is still being
   * forwarded, its follower (the poller) ends it instead, so `done` stays last.
   */
  async finalize (rec: PredictionRecord, byPoller = false): Promise<void> {
    if (!isTerminal(rec.status)) return
    const id = rec.id
    if (!byPoller && await this.streamPending(id)) return
    if (!(await this.store.set(keys.doneClaim(id), this.instanceId, this.recordTtlMs, true))) return
    try {
      const [doneId] = await this.deps.bus.publish([this.doneMessage(rec, Date.now())])
      this.deps.metrics.published.labels('replicate').inc()
      await this.store.set(keys.done(id), doneId, this.recordTtlMs)
    } catch (err) {
      await this.store.del(keys.doneClaim(id)).catch(() => {})
      throw err
    }
  }

  private async streamPending (id: string): Promise<boolean> {
    if ((await this.store.get(keys.stream(id))) === null) return false
    if ((await this.store.get(keys.streamed(id))) !== null) return false
    return (await this.store.get(keys.poller(id))) !== null
  }

  /** The bus id of the prediction's `done`, once published. */
  async doneId (id: string): Promise<string | null> {
    return await this.store.get(keys.done(id))
  }

  /**
   * Registers local interest in a prediction (call after its stream attached). While this
   * instance has watchers it keeps the cluster-wide "watched" mark alive and tries to take the
   * poller lock, which is how a dead holder's polling moves here once its lock expires.
   */
  watch (id: string): void {
    if (this.closed || this.locals.has(id)) return
    const channel = keys.channel(id)
    const listener: Listener = {
      onMessage: (msg) => {
        // After the hub's own listener has queued the frame to every local stream.
        if (msg.event === 'done') setImmediate(() => this.endLocal(id))
      }
    }
    const tickMs = Math.max(10, Math.min(this.pollIntervalMs, Math.floor(this.lockTtlMs / 3)))
    const w: LocalWatch = { id, listener, busy: false, timer: setInterval(() => { void this.tick(w) }, tickMs) }
    w.timer.unref()
    this.locals.set(id, w)
    this.deps.bus.subscribe(channel, listener).catch(() => {})
    void this.tick(w)
  }

  private unwatch (w: LocalWatch): void {
    if (this.locals.get(w.id) !== w) return
    this.locals.delete(w.id)
    clearInterval(w.timer)
    this.deps.bus.unsubscribe(keys.channel(w.id), w.listener)
  }

  private async tick (w: LocalWatch): Promise<void> {
    if (w.busy || this.closed) return
    w.busy = true
    try {
      if (this.deps.hub.watchers(keys.channel(w.id)) === 0) return this.unwatch(w)
      const doneId = await this.doneId(w.id)
      if (doneId !== null) {
        this.endLocalAfter(w.id, doneId)
        return
      }
      await this.store.set(keys.watched(w.id), this.instanceId, this.lockTtlMs)
      if (this.pollers.has(w.id)) return
      const token = `${this.instanceId}:${randomBytes(6).toString('hex')}`
      if (await this.store.set(keys.poller(w.id), token, this.lockTtlMs, true)) this.startPoller(w.id, token)
    } catch (err) {
      this.deps.log.warn({ err, prediction: w.id }, 'prediction watch tick failed')
    } finally {
      w.busy = false
    }
  }

  private startPoller (id: string, token: string): void {
    if (this.closed) {
      void this.store.release(keys.poller(id), token).catch(() => {})
      return
    }
    const poller = new Poller(this, id, token)
    this.pollers.set(id, poller)
    this.deps.log.debug({ prediction: id }, 'poller lock taken')
    void poller.finished.then(() => {
      if (this.pollers.get(id) === poller) this.pollers.delete(id)
    })
    poller.start()
  }

  /** Ends this instance's prediction streams once they have been handed `done` (bus id `doneId`). */
  endLocalAfter (id: string, doneId: string): void {
    // Position at or past `done` means the hub has queued it to every live local stream;
    // otherwise it is still on its way and the bus listener in watch() ends them.
    if (compareIds(this.deps.bus.position(keys.channel(id)), doneId) >= 0) this.endLocal(id)
  }

  private endLocal (id: string): void {
    // Only the dedicated prediction streams: a /events stream on the same channel goes on.
    this.deps.hub.endStreams(keys.channel(id))
  }

  async close (): Promise<void> {
    this.closed = true
    for (const w of [...this.locals.values()]) this.unwatch(w)
    await Promise.all([...this.pollers.values()].map(p => p.stop(this.releaseOnClose)))
  }
}
