// Prediction records: the shared state of every prediction and the only code that changes it.
// Owners, the latest state, the monotonic update rule, publishing, `done` exactly once, the
// owner's list. Everything lives in the Store (beside the bus), so any instance may apply any update; this
// module keeps no timers and knows nothing of HTTP or of who polls.
import { randomBytes } from 'node:crypto'
import type { Bus, Envelope, Store } from '../bus/bus'
import { userChannel } from '../channels'
import type { Metrics } from '../metrics/metrics'
import { sleep } from '../shared/sleep'
import { changePayload, keys, order, toRecord, type FrameOptions, type PredictionRecord, type StatusPayload } from './state'
import { isTerminal, type Prediction } from './types'

export type ApplyOutcome = 'ok' | 'duplicate' | 'stale'

export interface RecordsDeps {
  bus: Bus
  store: Store
  metrics: Pick<Metrics, 'published'>
  /** this process, for the `done` claim */
  instanceId: string
  /** how long owners and states are kept */
  recordTtlMs: number
  frames: FrameOptions
}

export interface RetryNotice {
  reason: string
  attempt?: number
  /** how long until the next try */
  delayMs: number
}

const MUTEX_TTL_MS = 5000
export const MUTEX_WAIT_MS = 5000
/** How many predictions an owner's list keeps (newest first). */
export const OWNER_INDEX_MAX = 1000

export class PredictionRecords {
  readonly store: Store
  private readonly chains = new Map<string, Promise<unknown>>()

  constructor (readonly deps: RecordsDeps) {
    this.store = deps.store
  }

  async owner (id: string): Promise<string | null> {
    return await this.store.get(keys.owner(id))
  }

  async record (id: string): Promise<PredictionRecord | null> {
    const raw = await this.store.get(keys.state(id))
    return raw === null ? null : JSON.parse(raw) as PredictionRecord
  }

  /** The bus id of the prediction's `done`, once published. */
  async doneId (id: string): Promise<string | null> {
    return await this.store.get(keys.done(id))
  }

  async streamUrl (id: string): Promise<string | null> {
    return await this.store.get(keys.stream(id))
  }

  /**
   * Makes a created prediction the gateway's: its owner (before anything is published, so the
   * owner's channel gets the first status), its upstream stream, its place in the owner's list.
   */
  async register (owner: string, p: Prediction, extra: { deployment?: string } = {}): Promise<PredictionRecord> {
    const ttl = this.deps.recordTtlMs
    await this.store.set(keys.owner(p.id), owner, ttl)
    // Replicate gives streaming models a stream URL whether or not `stream: true` was asked.
    if (typeof p.urls?.stream === 'string') await this.store.set(keys.stream(p.id), p.urls.stream, ttl)
    await this.exclusiveKey(keys.ownerMutex(owner), async () => {
      const raw = await this.store.get(keys.ownerIndex(owner))
      const ids = raw === null ? [] : JSON.parse(raw) as string[]
      await this.store.set(keys.ownerIndex(owner), JSON.stringify([p.id, ...ids.filter(i => i !== p.id)].slice(0, OWNER_INDEX_MAX)), ttl)
    })
    const { record } = await this.apply(p, {}, extra.deployment)
    await this.finalize(record)
    return record
  }

  /** The owner's predictions, newest first, from `after` (an id of the previous page) on. */
  async list (owner: string, o: { after?: string, limit: number }): Promise<{ records: PredictionRecord[], next: string | null }> {
    const raw = await this.store.get(keys.ownerIndex(owner))
    const ids = raw === null ? [] : JSON.parse(raw) as string[]
    let from = 0
    if (o.after !== undefined) {
      const i = ids.indexOf(o.after)
      if (i < 0) return { records: [], next: null }
      from = i + 1
    }
    const records: PredictionRecord[] = []
    let i = from
    for (; i < ids.length && records.length < o.limit; i++) {
      const rec = await this.record(ids[i])
      if (rec !== null) records.push(rec) // expired records drop out of the list
    }
    return { records, next: i < ids.length && records.length > 0 ? records[records.length - 1].id : null }
  }

  /**
   * Serialises every change to one prediction: within this process by a promise chain, across
   * instances by a short store lock. Read-compare-write-publish under it is what keeps a
   * webhook on one instance and a poll on another from publishing states out of order.
   */
  private async exclusive<T> (id: string, fn: () => Promise<T>): Promise<T> {
    return await this.exclusiveKey(keys.mutex(id), fn)
  }

  private async exclusiveKey<T> (key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.chains.get(key) ?? Promise.resolve()
    const run = prev.then(() => this.locked(key, fn))
    const tail = run.then(() => {}, () => {})
    this.chains.set(key, tail)
    void tail.then(() => { if (this.chains.get(key) === tail) this.chains.delete(key) })
    return await run
  }

  private async locked<T> (key: string, fn: () => Promise<T>): Promise<T> {
    const token = randomBytes(8).toString('hex')
    const until = Date.now() + MUTEX_WAIT_MS
    for (let i = 0; !(await this.store.set(key, token, MUTEX_TTL_MS, true)); i++) {
      if (Date.now() > until) throw new Error(`${key} is busy`)
      await sleep(Math.min(40, 2 + 2 * i) * (0.5 + Math.random()))
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
  async apply (p: Prediction, o: { force?: boolean } = {}, deployment?: string): Promise<{ outcome: ApplyOutcome, record: PredictionRecord }> {
    return await this.exclusive(p.id, async () => {
      const now = Date.now()
      const ttl = this.deps.recordTtlMs
      const old = await this.record(p.id)
      const ord = order(old, p)
      if (old !== null && ord === 'older') return { outcome: 'stale', record: old }
      if (old !== null && ord === 'same') {
        const rec = { ...old, updatedAt: now }
        await this.store.set(keys.state(p.id), JSON.stringify(rec), ttl)
        if (o.force === true && !isTerminal(rec.status)) await this.publish([this.statusMessage(rec, rec)])
        return { outcome: 'duplicate', record: rec }
      }
      const rec = toRecord(p, now, old)
      if (deployment !== undefined) rec.deployment = deployment
      if (old !== null && isTerminal(old.status)) {
        // A final record refreshed (its data removed): stored, not published: `done` stays last.
        await this.store.set(keys.state(p.id), JSON.stringify(rec), ttl)
        return { outcome: 'ok', record: rec }
      }
      // The first final status carries `done` in the same atomic publish (unless a stream's
      // output is still being forwarded): no crash can fall between them, and watchers get
      // both in one write.
      const withDone = isTerminal(rec.status) && !(await this.streamPending(rec.id)) &&
        await this.store.set(keys.doneClaim(rec.id), this.deps.instanceId, ttl, true)
      // Written before publishing: a late joiner reads the bus head first and the record
      // second, so it either sees this state in the record or gets the message replayed.
      await this.store.set(keys.state(p.id), JSON.stringify(rec), ttl)
      try {
        const msgs = [this.statusMessage(rec, old)]
        if (old?.status !== rec.status) {
          const owner = await this.owner(rec.id)
          if (owner !== null) msgs.push({ channel: userChannel(owner), event: 'prediction', data: { id: rec.id, status: rec.status }, ts: now })
        }
        if (withDone) msgs.push(this.doneMessage(rec))
        const ids = await this.publish(msgs)
        if (withDone) await this.store.set(keys.done(rec.id), ids[ids.length - 1], ttl)
      } catch (err) {
        if (old !== null) await this.store.set(keys.state(p.id), JSON.stringify(old), ttl).catch(() => {})
        else await this.store.del(keys.state(p.id)).catch(() => {})
        if (withDone) await this.store.del(keys.doneClaim(rec.id)).catch(() => {})
        throw err
      }
      return { outcome: 'ok', record: rec }
    })
  }

  // No conflation key: a status frame carries the log text appended since the previous one,
  // so dropping an unsent older frame would lose text.
  private statusMessage (rec: PredictionRecord, old: PredictionRecord | null, extra?: Record<string, unknown>): Envelope {
    const data: StatusPayload & Record<string, unknown> = { ...changePayload(rec, old, this.deps.frames), ...extra }
    return { channel: keys.channel(rec.id), event: 'status', data, ts: Date.now() }
  }

  private doneMessage (rec: PredictionRecord): Envelope {
    return { channel: keys.channel(rec.id), event: 'done', data: { id: rec.id, status: rec.status }, ts: Date.now() }
  }

  private async publish (msgs: Envelope[]): Promise<string[]> {
    const ids = await this.deps.bus.publish(msgs)
    this.deps.metrics.published.labels('replicate').inc(msgs.length)
    return ids
  }

  /** Tells watchers the upstream is failing and when the next try is. */
  async notifyRetry (id: string, n: RetryNotice): Promise<void> {
    await this.exclusive(id, async () => {
      const rec = await this.record(id)
      if (rec === null || isTerminal(rec.status)) return
      await this.publish([this.statusMessage(rec, rec, {
        upstream: 'retrying',
        reason: n.reason,
        ...(n.attempt !== undefined ? { attempt: n.attempt } : {}),
        retry_in_ms: n.delayMs,
        retry_at: new Date(Date.now() + n.delayMs).toISOString()
      })])
    })
  }

  /** Publishes one event of the upstream output stream (`output`, `logs`, `stream-error`). */
  async publishStream (id: string, event: string, data: unknown): Promise<void> {
    await this.publish([{ channel: keys.channel(id), event, data, ts: Date.now() }])
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
    const ttl = this.deps.recordTtlMs
    if (!(await this.store.set(keys.doneClaim(id), this.deps.instanceId, ttl, true))) return
    try {
      const [doneId] = await this.publish([this.doneMessage(rec)])
      await this.store.set(keys.done(id), doneId, ttl)
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

  async markWebhook (id: string): Promise<void> {
    await this.store.set(keys.webhookAt(id), String(Date.now()), this.deps.recordTtlMs)
  }

  async lastWebhookAt (id: string): Promise<number | null> {
    const v = await this.store.get(keys.webhookAt(id))
    return v === null ? null : Number(v)
  }

  /** Records a long Retry-After, so that whichever instance polls next waits it out too. */
  async holdUntil (id: string, at: number): Promise<void> {
    await this.store.set(keys.retryAt(id), String(at), Math.max(1, at - Date.now()))
  }

  async heldUntil (id: string): Promise<number | null> {
    const v = await this.store.get(keys.retryAt(id))
    return v === null || Number(v) <= Date.now() ? null : Number(v)
  }
}
