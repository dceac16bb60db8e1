// The prediction domain's entry point: creating, reading, cancelling and listing predictions
// and taking webhooks, over the records (shared state), the scheduler (who polls) and the
// upstream client. It knows nothing of HTTP: the edge (src/routes/) maps its errors.
import { randomBytes } from 'node:crypto'
import type { Bus, Store } from '../bus/bus'
import type { Metrics } from '../metrics/metrics'
import type { PollerHost, PollerTiming } from './poller'
import { PredictionRecords, type ApplyOutcome } from './records'
import { PollScheduler, type LocalStreams } from './scheduler'
import { keys, type FrameOptions, type PredictionRecord } from './state'
import { followStream } from './stream'
import { isTerminal, type CreateOptions, type CreatePredictionRequest, type Prediction } from './types'
import { createUpstream, redactCredentials, type RetryInfo, type Upstream, type UpstreamOp, type UpstreamTimeouts } from './upstream'

export interface ReplicateOptions {
  /** pause between two polls of one prediction while no webhooks arrive (default 1000) */
  pollIntervalMs?: number
  /** pause between two polls once webhooks arrive (default 30000) */
  safetyPollMs?: number
  /** TTL of the poller lock and of the "someone watches" mark (default 2000) */
  lockTtlMs?: number
  /** first step of the upstream backoff on 5xx, network errors and timeouts (default 1000) */
  retryBaseDelayMs?: number
  /** GET /predictions/:id refreshes a running prediction's record older than this (default pollIntervalMs) */
  staleMs?: number
  /** ... and a final one older than this, so removed data shows (default 30 min) */
  finalStaleMs?: number
  /** how long owners and states are kept (default 24 h) */
  recordTtlMs?: number
  /** how long a poller that saw the end waits for the output stream to finish (default 10000) */
  streamGraceMs?: number
  fetch?: typeof fetch
  /** false leaves locks to expire on close, as a crashed process would (tests) */
  releaseOnClose?: boolean
}

export interface ReplicateSettings {
  apiToken?: string
  baseUrl: string
  maxRetryAfterS: number
  connectTimeoutMs: number
  timeoutMs: number
  createTimeoutMs: number
  streamIdleTimeoutMs: number
}

export interface ServiceDeps {
  bus: Bus
  store: Store
  streams: LocalStreams
  metrics: Metrics
  replicate: ReplicateSettings
  frames: FrameOptions
  log: { warn: (o: object, msg: string) => void, debug: (o: object, msg: string) => void }
}

export class PredictionService {
  readonly instanceId = randomBytes(8).toString('hex')
  readonly records: PredictionRecords
  readonly scheduler: PollScheduler
  readonly timing: PollerTiming
  private readonly staleMs: number
  private readonly finalStaleMs: number
  private readonly retryBaseDelayMs: number
  private readonly refreshing = new Set<string>()

  constructor (readonly deps: ServiceDeps, private readonly opts: ReplicateOptions = {}) {
    const pollIntervalMs = opts.pollIntervalMs ?? 1000
    this.timing = {
      pollIntervalMs,
      safetyPollMs: opts.safetyPollMs ?? 30_000,
      lockTtlMs: opts.lockTtlMs ?? 2000,
      streamGraceMs: opts.streamGraceMs ?? 10_000,
      callTimeoutMs: deps.replicate.timeoutMs
    }
    this.staleMs = opts.staleMs ?? pollIntervalMs
    this.finalStaleMs = opts.finalStaleMs ?? 30 * 60_000
    this.retryBaseDelayMs = opts.retryBaseDelayMs ?? 1000
    this.records = new PredictionRecords({
      bus: deps.bus,
      store: deps.store,
      metrics: deps.metrics,
      instanceId: this.instanceId,
      recordTtlMs: opts.recordTtlMs ?? 24 * 3600_000,
      frames: deps.frames
    })
    this.scheduler = new PollScheduler({ bus: deps.bus, streams: deps.streams, host: this.pollerHost(), instanceId: this.instanceId, log: deps.log }, opts.releaseOnClose ?? true)
  }

  get configured (): boolean {
    return this.deps.replicate.apiToken !== undefined
  }

  upstream (onRetry?: (info: RetryInfo) => void, o: { maxAttempts?: number } = {}): Upstream {
    const r = this.deps.replicate
    const calls = this.deps.metrics.replicateCalls
    const timeouts: UpstreamTimeouts = { connectMs: r.connectTimeoutMs, getMs: r.timeoutMs, createMs: r.createTimeoutMs }
    return createUpstream({
      baseUrl: r.baseUrl,
      token: r.apiToken ?? '',
      fetch: this.opts.fetch,
      baseDelayMs: this.retryBaseDelayMs,
      maxRetryAfterMs: r.maxRetryAfterS * 1000,
      maxAttempts: o.maxAttempts,
      timeouts,
      onRetry: info => {
        calls.labels(info.op, 'retry').inc()
        onRetry?.(info)
      }
    })
  }

  private async call<T> (op: UpstreamOp, fn: () => Promise<T>): Promise<T> {
    try {
      const v = await fn()
      this.deps.metrics.replicateCalls.labels(op, 'ok').inc()
      return v
    } catch (err) {
      this.deps.metrics.replicateCalls.labels(op, 'error').inc()
      throw err
    }
  }

  private pollerHost (): PollerHost {
    const { records } = this
    const { metrics, log } = this.deps
    const calls = metrics.replicateCalls
    return {
      store: this.deps.store,
      timing: this.timing,
      log,
      get: async (id, signal, onRetry) => await this.call('get', () => this.upstream(onRetry).get(id, { signal })),
      apply: async (p, o) => (await records.apply(p, o)).record,
      record: async id => await records.record(id),
      finalize: async rec => await records.finalize(rec, true),
      notifyRetry: async (id, reason, delayMs, attempt) => await records.notifyRetry(id, { reason, delayMs, attempt }),
      holdUntil: async (id, at) => await records.holdUntil(id, at),
      heldUntil: async id => await records.heldUntil(id),
      lastWebhookAt: async id => await records.lastWebhookAt(id),
      countPoll: mode => metrics.replicatePolls.labels(mode).inc(),
      follow: async (id, url, { signal }) => {
        const store = this.deps.store
        const ttl = records.deps.recordTtlMs
        // A follower taking over from a dead one resumes after the last event forwarded.
        const lastEventId = (await store.get(keys.streamCursor(id))) ?? undefined
        try {
          await followStream({
            url,
            lastEventId,
            signal,
            fetch: this.opts.fetch,
            connectTimeoutMs: this.deps.replicate.connectTimeoutMs,
            idleTimeoutMs: this.deps.replicate.streamIdleTimeoutMs,
            retry: { baseDelayMs: this.retryBaseDelayMs, onRetry: () => calls.labels('stream', 'retry').inc() },
            onEvent: async (event, data, eventId) => {
              await this.forward(id, event, data)
              if (event === 'done') await store.set(keys.streamed(id), '1', ttl)
              if (eventId !== undefined) await store.set(keys.streamCursor(id), eventId, ttl)
            }
          })
          calls.labels('stream', 'ok').inc()
        } catch (err) {
          if (!signal?.aborted) calls.labels('stream', 'error').inc()
          throw err
        }
      }
    }
  }

  /** One upstream stream event to the watchers, as plain JSON. */
  private async forward (id: string, event: string, data: string): Promise<void> {
    // Text tokens and log lines go out as JSON strings, so `42` or a token ending in `\r`
    // reaches the client unchanged; one too large for a frame is left to the final status.
    if (event === 'output' || event === 'logs') {
      if (JSON.stringify(data).length > this.deps.frames.budget / 2) return
      await this.records.publishStream(id, event, JSON.stringify(data))
    } else if (event === 'error') {
      // Replicate sends `{"detail": ...}`; anything else is passed on as its text. Named
      // `stream-error` because EventSource hands a message named "error" to onerror handlers.
      let value: unknown
      try { value = JSON.parse(data) } catch { value = { detail: data } }
      await this.records.publishStream(id, 'stream-error', value)
    }
  }

  async create (owner: string, req: CreatePredictionRequest, o: CreateOptions = {}): Promise<PredictionRecord> {
    const p = await this.call('create', () => this.upstream().create(req, o))
    const rec = await this.records.register(owner, p, { deployment: req.deployment })
    // The owner's streams on this instance hear about it even if nobody opens its events.
    if (!isTerminal(rec.status)) this.scheduler.watch(p.id, owner)
    return rec
  }

  async owner (id: string): Promise<string | null> {
    return await this.records.owner(id)
  }

  async record (id: string): Promise<PredictionRecord | null> {
    return await this.records.record(id)
  }

  /**
   * The record at once; when it is old, a refresh from Replicate in the background (one try,
   * none while Replicate asked to wait), so readers never wait out upstream trouble.
   */
  async read (id: string): Promise<PredictionRecord | null> {
    const rec = await this.records.record(id)
    if (rec === null) return await this.refresh(id)
    const age = Date.now() - rec.updatedAt
    const stale = isTerminal(rec.status) ? rec.dataRemoved !== true && age > this.finalStaleMs : age > this.staleMs
    if (stale && !this.refreshing.has(id)) {
      this.refreshing.add(id)
      void this.refresh(id).catch(err => this.deps.log.warn({ err, prediction: id }, 'background refresh failed'))
        .finally(() => this.refreshing.delete(id))
    }
    return rec
  }

  private async refresh (id: string): Promise<PredictionRecord | null> {
    if ((await this.records.heldUntil(id)) !== null) return await this.records.record(id)
    const p = await this.call('get', () => this.upstream(undefined, { maxAttempts: 1 }).get(id))
    const { record } = await this.records.apply(p)
    await this.records.finalize(record)
    return record
  }

  async cancel (id: string): Promise<PredictionRecord> {
    const p = await this.call('cancel', () => this.upstream().cancel(id))
    const { record } = await this.records.apply(p)
    await this.records.finalize(record)
    return record
  }

  async list (owner: string, o: { after?: string, limit: number }): Promise<{ records: PredictionRecord[], next: string | null }> {
    return await this.records.list(owner, o)
  }

  /**
   * A verified webhook's snapshot. A prediction this gateway did not create is acknowledged
   * and ignored (`unknown`): Replicate must stop retrying it, and nothing of it is kept.
   */
  async webhook (p: Prediction): Promise<ApplyOutcome | 'unknown'> {
    if ((await this.records.owner(p.id)) === null) return 'unknown'
    await this.records.markWebhook(p.id)
    const { outcome, record } = await this.records.apply(p)
    await this.records.finalize(record)
    if (outcome === 'ok' && isTerminal(record.status)) this.scheduler.poke(p.id)
    return outcome
  }

  /** Registers a stream's interest in a prediction (after the stream attached). */
  watch (id: string, owner: string | null = null): void {
    this.scheduler.watch(id, owner)
  }

  async doneId (id: string): Promise<string | null> {
    return await this.records.doneId(id)
  }

  endLocalAfter (id: string, doneId: string): void {
    this.scheduler.endAfter(id, doneId)
  }

  get pollerCount (): number {
    return this.scheduler.pollerCount
  }

  isPolling (id: string): boolean {
    return this.scheduler.isPolling(id)
  }

  /** For log lines: the upstream's words without credentials. */
  redact (text: string): string {
    return redactCredentials(text, this.deps.replicate.apiToken !== undefined ? [this.deps.replicate.apiToken] : [])
  }

  async close (): Promise<void> {
    await this.scheduler.close()
  }
}
