// The one poller of a prediction, run by whichever instance holds `prediction:<id>:poller`.
// It polls while the "watched" mark lives, follows the output stream when there is one, and
// gives the lock back at the end. The lock is renewed on its own timer, so a long Retry-After
// wait inside a poll does not let another instance start polling too.
import type { PredictionService } from './service'
import { keys, type PredictionRecord } from './state'
import { followStream } from './stream'
import { isTerminal, type Prediction } from './types'

export class Poller {
  readonly finished: Promise<void>
  private resolveFinished!: () => void
  private readonly ac = new AbortController()
  private wake: (() => void) | null = null
  private follower: Promise<void> | null = null
  private renewTimer: NodeJS.Timeout | null = null
  private retrying = false
  private release = true

  constructor (private readonly svc: PredictionService, readonly id: string, private readonly token: string) {
    this.finished = new Promise(resolve => { this.resolveFinished = resolve })
  }

  start (): void {
    this.renewTimer = setInterval(() => { void this.renew() }, Math.max(10, Math.floor(this.svc.lockTtlMs / 3)))
    this.renewTimer.unref()
    void this.run()
  }

  /** Stops polling; `release: false` leaves the lock to expire, as a crash would. */
  async stop (release = true): Promise<void> {
    if (!release) this.release = false
    this.ac.abort(new Error('poller stopped'))
    await this.finished
  }

  private get log (): PredictionService['deps']['log'] {
    return this.svc.deps.log
  }

  private async renew (): Promise<void> {
    try {
      if (await this.svc.store.refresh(keys.poller(this.id), this.token, this.svc.lockTtlMs)) return
      // Someone else holds it now (we stalled past the TTL): two pollers must not overlap.
      this.log.warn({ prediction: this.id }, 'poller lock lost')
      this.release = false
      this.ac.abort(new Error('poller lock lost'))
    } catch (err) {
      // A store hiccup: keep going; if it lasts, the lock expires and we stop at the next renewal.
      this.log.warn({ err, prediction: this.id }, 'poller lock renewal failed')
    }
  }

  private async run (): Promise<void> {
    try {
      await this.loop()
    } catch (err) {
      if (!this.ac.signal.aborted) this.log.warn({ err, prediction: this.id }, 'poller failed')
    } finally {
      if (this.renewTimer !== null) clearInterval(this.renewTimer)
      this.ac.abort(new Error('poller finished'))
      await this.follower?.catch(() => {})
      if (this.release) await this.svc.store.release(keys.poller(this.id), this.token).catch(() => {})
      this.resolveFinished()
    }
  }

  private async loop (): Promise<void> {
    const { svc, id } = this
    const { store } = svc
    const signal = this.ac.signal
    const streamUrl = await store.get(keys.stream(id))
    const upstream = svc.upstream(info => {
      this.retrying = true
      svc.notifyRetry(id, info).catch(err => this.log.warn({ err, prediction: id }, 'retry notice failed'))
    })
    let failures = 0
    while (!signal.aborted) {
      if ((await store.get(keys.watched(id))) === null) return
      let p: Prediction
      try {
        p = await this.scoped(s => svc.call('get', () => upstream.get(id, { signal: s })))
      } catch (err) {
        if (signal.aborted) return
        failures++
        this.log.warn({ err, prediction: id }, 'poll failed')
        await this.sleep(Math.min(svc.pollIntervalMs * 2 ** failures, 30_000))
        continue
      }
      failures = 0
      if (streamUrl !== null && this.follower === null && (await store.get(keys.streamed(id))) === null) this.follow(streamUrl)
      // The stream usually ends just after the final status is visible: its last output is
      // forwarded before that status, so watchers see every token, then the end.
      if (isTerminal(p.status) && this.follower !== null) await Promise.race([this.follower, this.sleep(svc.streamGraceMs)])
      let rec: PredictionRecord
      try {
        rec = (await svc.apply(p, { force: this.retrying })).record
        this.retrying = false
      } catch (err) {
        this.log.warn({ err, prediction: id }, 'applying a polled state failed')
        await this.sleep(svc.pollIntervalMs)
        continue
      }
      if (isTerminal(rec.status)) {
        // Final through a webhook while the stream still runs: `done` waits for its output.
        if (this.follower !== null) await Promise.race([this.follower, this.sleep(svc.streamGraceMs)])
        await svc.finalize(rec, true)
        return
      }
      await this.sleep(svc.pollIntervalMs)
    }
  }

  private follow (url: string): void {
    const { svc, id } = this
    const { store, recordTtlMs } = svc
    const signal = this.ac.signal
    const calls = svc.deps.metrics.replicateCalls
    this.follower = (async () => {
      // A follower taking over from a dead one resumes after the last event forwarded.
      const lastEventId = (await store.get(keys.streamCursor(id))) ?? undefined
      try {
        await followStream({
          url,
          lastEventId,
          signal,
          fetch: svc.fetch,
          retry: { baseDelayMs: svc.retryBaseDelayMs, onRetry: () => calls.labels('stream', 'retry').inc() },
          onEvent: async (event, data, eventId) => {
            if (event === 'output' || event === 'logs') await svc.publishStream(id, event, data)
            // Not `error`: EventSource hands a message named "error" to onerror handlers.
            else if (event === 'error') await svc.publishStream(id, 'stream-error', data)
            else if (event === 'done') await store.set(keys.streamed(id), '1', recordTtlMs)
            if (eventId !== undefined) await store.set(keys.streamCursor(id), eventId, recordTtlMs)
          }
        })
        calls.labels('stream', 'ok').inc()
      } catch (err) {
        if (!signal.aborted) {
          calls.labels('stream', 'error').inc()
          this.log.warn({ err, prediction: id }, 'output stream failed')
        }
      } finally {
        // The stream's end usually means a final status: poll now rather than after the pause.
        this.wake?.()
      }
    })()
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

  private async sleep (ms: number): Promise<void> {
    const signal = this.ac.signal
    if (signal.aborted) return
    await new Promise<void>(resolve => {
      const done = (): void => {
        clearTimeout(timer)
        signal.removeEventListener('abort', done)
        if (this.wake === done) this.wake = null
        resolve()
      }
      const timer = setTimeout(done, ms)
      signal.addEventListener('abort', done, { once: true })
      this.wake = done
    })
  }
}
