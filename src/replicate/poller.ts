// The one poller of a prediction, run by whichever instance holds `prediction:<id>:poller`.
// It polls while the "watched" mark lives, follows the output stream when there is one, and
// gives the lock back at the end. It depends only on the PollerHost declared here, which the
// scheduler builds from the records and the upstream client.
import type { Store } from '../bus/bus'
import { sleep } from '../shared/sleep'
import { keys, type PredictionRecord } from './state'
import type { FollowStreamOptions } from './stream'
import { UpstreamError, type RetryInfo } from './upstream'
import { isTerminal, type Prediction } from './types'

export interface PollerTiming {
  /** pause between two polls while no webhooks arrive */
  pollIntervalMs: number
  /** pause between two polls once webhooks arrive for the prediction (the safety net) */
  safetyPollMs: number
  /** TTL of the poller lock and of the "watched" mark */
  lockTtlMs: number
  /** how long the poller waits for the output stream to end after the final status */
  streamGraceMs: number
  /** the longest one upstream call may take, retries excluded (its timeout) */
  callTimeoutMs: number
}

export type PollMode = 'poll' | 'safety_net'

/** What a poller needs from the rest of the prediction domain, and nothing more. */
export interface PollerHost {
  readonly store: Store
  readonly timing: PollerTiming
  readonly log: { warn: (o: object, msg: string) => void, debug: (o: object, msg: string) => void }
  /** One upstream GET (with the upstream client's own retries); `onRetry` for each retry. */
  get: (id: string, signal: AbortSignal, onRetry: (info: RetryInfo) => void) => Promise<Prediction>
  apply: (p: Prediction, o: { force?: boolean }) => Promise<PredictionRecord>
  record: (id: string) => Promise<PredictionRecord | null>
  finalize: (rec: PredictionRecord) => Promise<void>
  notifyRetry: (id: string, reason: string, delayMs: number, attempt?: number) => Promise<void>
  holdUntil: (id: string, at: number) => Promise<void>
  heldUntil: (id: string) => Promise<number | null>
  lastWebhookAt: (id: string) => Promise<number | null>
  countPoll: (mode: PollMode) => void
  /** follows the upstream stream, forwarding its events; resolves when it ends */
  follow: (id: string, url: string, o: Pick<FollowStreamOptions, 'signal'>) => Promise<void>
}

export class Poller {
  readonly finished: Promise<void>
  private resolveFinished!: () => void
  private readonly ac = new AbortController()
  private wake = new AbortController()
  private follower: Promise<void> | null = null
  private renewTimer: NodeJS.Timeout | null = null
  private retrying = false
  private release = true
  // Until when the poller's current step may legitimately take: a step past it (an await that
  // never settles) stops the renewals, so the lock lapses and another instance takes over.
  private deadline = 0
  private lastPollAt = 0

  constructor (private readonly host: PollerHost, readonly id: string, private readonly token: string) {
    this.finished = new Promise(resolve => { this.resolveFinished = resolve })
  }

  private get slice (): number {
    return Math.max(10, Math.floor(this.host.timing.lockTtlMs / 3))
  }

  start (): void {
    this.busyFor(this.host.timing.callTimeoutMs)
    this.renewTimer = setInterval(() => { void this.renew() }, this.slice)
    this.renewTimer.unref()
    void this.run()
  }

  /** Stops polling; `release: false` leaves the lock to expire, as a crash would. */
  async stop (release = true): Promise<void> {
    if (!release) this.release = false
    this.ac.abort(new Error('poller stopped'))
    await this.finished
  }

  /** Poll now rather than after the pause (the stream ended, a webhook says it is final). */
  poke (): void {
    this.wake.abort()
  }

  private busyFor (ms: number): void {
    // A second of slack for the event loop and the store round trips around the step.
    this.deadline = Date.now() + ms + 1000
  }

  private async renew (): Promise<void> {
    const { store, timing, log } = this.host
    try {
      if (Date.now() > this.deadline) {
        // Stuck: do not hold the prediction hostage. The lock lapses within its TTL; once
        // another instance holds it, this one stops as soon as its step returns.
        log.warn({ prediction: this.id }, 'poller stalled; not renewing its lock')
        // Only once ANOTHER instance holds it, or has finished the prediction: stopping while
        // the lock is merely free would let this instance start a fresh poller and win the
        // lock again, starving the others.
        const holder = await store.get(keys.poller(this.id))
        const rec = holder === null ? await this.host.record(this.id) : null
        if ((holder !== null && holder !== this.token) || (rec !== null && isTerminal(rec.status))) {
          this.release = false
          this.ac.abort(new Error('poller lock lost'))
        }
        return
      }
      if (await store.refresh(keys.poller(this.id), this.token, timing.lockTtlMs)) return
      // Someone else holds it now (we stalled past the TTL): two pollers must not overlap.
      log.warn({ prediction: this.id }, 'poller lock lost')
      this.release = false
      this.ac.abort(new Error('poller lock lost'))
    } catch (err) {
      // A store hiccup: keep going; if it lasts, the lock expires and we stop at the next renewal.
      log.warn({ err, prediction: this.id }, 'poller lock renewal failed')
    }
  }

  private async run (): Promise<void> {
    try {
      await this.loop()
    } catch (err) {
      if (!this.ac.signal.aborted) this.host.log.warn({ err, prediction: this.id }, 'poller failed')
    } finally {
      if (this.renewTimer !== null) clearInterval(this.renewTimer)
      this.ac.abort(new Error('poller finished'))
      await this.follower?.catch(() => {})
      if (this.release) await this.host.store.release(keys.poller(this.id), this.token).catch(() => {})
      this.resolveFinished()
    }
  }

  /** Waits until `until` (epoch ms) in slices, so a lost watcher or a final record is seen soon. */
  private async waitUntil (until: number): Promise<'time' | 'woken' | 'stop'> {
    const signal = this.ac.signal
    while (!signal.aborted) {
      const left = until - Date.now()
      if (left <= 0) return 'time'
      const ms = Math.min(left, this.slice)
      this.busyFor(ms)
      await sleep(ms, signal, this.wake.signal)
      const woken = this.wake.signal.aborted
      if (woken) this.wake = new AbortController()
      if (!(await this.stillWanted())) return 'stop'
      if (woken) return 'woken'
    }
    return 'stop'
  }

  private async stillWanted (): Promise<boolean> {
    this.busyFor(this.host.timing.callTimeoutMs)
    if ((await this.host.store.get(keys.watched(this.id))) === null) return false
    const rec = await this.host.record(this.id)
    return rec === null || !isTerminal(rec.status)
  }

  private async nextPollAt (): Promise<{ at: number, mode: PollMode }> {
    const { timing } = this.host
    const hook = await this.host.lastWebhookAt(this.id)
    if (hook === null) return { at: this.lastPollAt + timing.pollIntervalMs, mode: 'poll' }
    // Webhooks arrive: they carry the updates, polling is only the net under them, counted
    // from the latest sign of life, so it comes sooner when webhooks stop than when they flow.
    return { at: Math.max(hook, this.lastPollAt) + timing.safetyPollMs, mode: 'safety_net' }
  }

  private async loop (): Promise<void> {
    const { host, id } = this
    const signal = this.ac.signal
    const streamUrl = await host.store.get(keys.stream(id))
    let failures = 0
    while (!signal.aborted) {
      if (!(await this.stillWanted())) {
        const rec = await host.record(id)
        if (rec !== null && isTerminal(rec.status)) await this.end(rec)
        return
      }
      const held = await host.heldUntil(id)
      if (held !== null && (await this.waitUntil(held)) === 'stop') continue
      const { at, mode } = await this.nextPollAt()
      if (Date.now() < at) {
        // 'stop' loops back to the checks above; woken while webhooks carry the updates
        // (the stream ended), the webhook of the end is due rather than a poll.
        const why = await this.waitUntil(at)
        if (why === 'stop' || (why === 'woken' && mode === 'safety_net')) continue
      }
      if (streamUrl !== null && this.follower === null && (await host.store.get(keys.streamed(id))) === null) this.follow(streamUrl)
      let p: Prediction
      host.countPoll(mode)
      try {
        this.busyFor(host.timing.callTimeoutMs)
        p = await this.scoped(s => host.get(id, s, info => {
          // The upstream client waits out the delay, then tries once more within its timeout.
          this.busyFor(info.delayMs + host.timing.callTimeoutMs)
          this.retrying = true
          host.notifyRetry(id, info.reason, info.delayMs, info.attempt).catch(err => host.log.warn({ err, prediction: id }, 'retry notice failed'))
        }))
      } catch (err) {
        this.lastPollAt = Date.now()
        if (signal.aborted) return
        failures++
        this.retrying = true
        if (err instanceof UpstreamError && err.retryAfterMs !== undefined) {
          // Longer than the upstream client holds a call: honoured here, whatever its length,
          // and shared with any instance that takes over, so nobody retries sooner.
          const at = Date.now() + err.retryAfterMs
          await host.holdUntil(id, at)
          await host.notifyRetry(id, err.code === 'replicate_rate_limited' ? 'rate_limited' : 'server_error', err.retryAfterMs)
          continue
        }
        host.log.warn({ err, prediction: id }, 'poll failed')
        const delayMs = Math.min(host.timing.pollIntervalMs * 2 ** failures, 30_000)
        await host.notifyRetry(id, err instanceof UpstreamError && err.code === 'replicate_timeout' ? 'timeout' : 'server_error', delayMs).catch(() => {})
        await this.waitUntil(Date.now() + delayMs)
        continue
      }
      // The pause runs from the end of a poll: a slow answer does not make the next one sooner.
      this.lastPollAt = Date.now()
      failures = 0
      // The stream usually ends just after the final status is visible: its last output is
      // forwarded before that status, so watchers see every token, then the end.
      if (isTerminal(p.status) && this.follower !== null) await this.streamEnd()
      let rec: PredictionRecord
      try {
        this.busyFor(host.timing.callTimeoutMs + 5000)
        rec = await host.apply(p, { force: this.retrying })
        this.retrying = false
      } catch (err) {
        host.log.warn({ err, prediction: id }, 'applying a polled state failed')
        continue
      }
      if (isTerminal(rec.status)) return await this.end(rec)
    }
  }

  private async streamEnd (): Promise<void> {
    this.busyFor(this.host.timing.streamGraceMs)
    await Promise.race([this.follower, sleep(this.host.timing.streamGraceMs, this.ac.signal)])
  }

  private async end (rec: PredictionRecord): Promise<void> {
    // Final through a webhook while the stream still runs: `done` waits for its output.
    if (this.follower !== null) await this.streamEnd()
    this.busyFor(this.host.timing.callTimeoutMs)
    await this.host.finalize(rec)
  }

  private follow (url: string): void {
    const signal = this.ac.signal
    this.follower = this.host.follow(this.id, url, { signal })
      .catch(err => { if (!signal.aborted) this.host.log.warn({ err, prediction: this.id }, 'output stream failed') })
      // The stream's end usually means a final status: poll now rather than after the pause.
      .finally(() => this.poke())
  }

  // fetch leaves an abort listener on the signal of every request it made; on the poller's
  // long-lived signal they would pile up, one per poll. A signal per call dies with the call.
  private async scoped<T> (fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const outer = this.ac.signal
    const ac = new AbortController()
    const abort = (): void => ac.abort(outer.reason)
    outer.addEventListener('abort', abort, { once: true })
    try {
      return await fn(ac.signal)
    } finally {
      outer.removeEventListener('abort', abort)
    }
  }
}
