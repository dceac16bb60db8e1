// Which instance polls which prediction. An instance with local interest in a prediction (a
// stream on `prediction:<id>`, or the owner's own stream right after a create here) ticks:
// it keeps the cluster-wide "watched" mark alive and tries to take the poller lock, which is
// how a dead holder's polling moves here once its lock expires. Streams of a finished
// prediction are ended through the hub.
import { randomBytes } from 'node:crypto'
import type { Bus, Listener } from '../bus/bus'
import { compareIds } from '../bus/bus'
import { userChannel } from '../channels'
import { Poller, type PollerHost } from './poller'
import { keys } from './state'

/** The part of the hub the scheduler needs. */
export interface LocalStreams {
  watchers: (channel: string) => number
  endStreams: (channel: string) => number
}

export interface SchedulerDeps {
  bus: Bus
  streams: LocalStreams
  host: PollerHost
  instanceId: string
  log: { warn: (o: object, msg: string) => void, debug: (o: object, msg: string) => void }
}

interface LocalWatch {
  id: string
  owner: string | null
  timer: NodeJS.Timeout
  listener: Listener
  busy: boolean
}

export class PollScheduler {
  private readonly locals = new Map<string, LocalWatch>()
  private readonly pollers = new Map<string, Poller>()
  private closed = false

  constructor (private readonly deps: SchedulerDeps, private readonly releaseOnClose = true) {}

  /** Pollers running in this process (the cluster-wide rule is at most one per prediction). */
  get pollerCount (): number {
    return this.pollers.size
  }

  isPolling (id: string): boolean {
    return this.pollers.has(id)
  }

  /** A webhook moved the prediction on: a local poller re-checks at once instead of after its pause. */
  poke (id: string): void {
    this.pollers.get(id)?.poke()
  }

  /**
   * Registers local interest in a prediction (after its stream attached, or after a create
   * with `owner`: then the owner's open streams on this instance count as interest too).
   */
  watch (id: string, owner: string | null = null): void {
    if (this.closed) return
    const known = this.locals.get(id)
    if (known !== undefined) {
      known.owner ??= owner
      return
    }
    const listener: Listener = {
      onMessage: (msg) => {
        // After the hub's own listener has queued the frame to every local stream.
        if (msg.event === 'done') setImmediate(() => this.deps.streams.endStreams(keys.channel(id)))
      }
    }
    const { lockTtlMs, pollIntervalMs } = this.deps.host.timing
    const tickMs = Math.max(10, Math.min(pollIntervalMs, Math.floor(lockTtlMs / 3)))
    const w: LocalWatch = { id, owner, listener, busy: false, timer: setInterval(() => { void this.tick(w) }, tickMs) }
    w.timer.unref()
    this.locals.set(id, w)
    this.deps.bus.subscribe(keys.channel(id), listener).catch(() => {})
    void this.tick(w)
  }

  private interested (w: LocalWatch): boolean {
    const { streams } = this.deps
    return streams.watchers(keys.channel(w.id)) > 0 || (w.owner !== null && streams.watchers(userChannel(w.owner)) > 0)
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
    const { store, timing } = this.deps.host
    try {
      if (!this.interested(w)) return this.unwatch(w)
      const doneId = await store.get(keys.done(w.id))
      if (doneId !== null) {
        this.endAfter(w.id, doneId)
        if (this.deps.streams.watchers(keys.channel(w.id)) === 0) this.unwatch(w)
        return
      }
      await store.set(keys.watched(w.id), this.deps.instanceId, timing.lockTtlMs)
      if (this.pollers.has(w.id)) return
      const token = `${this.deps.instanceId}:${randomBytes(6).toString('hex')}`
      if (await store.set(keys.poller(w.id), token, timing.lockTtlMs, true)) this.start(w.id, token)
    } catch (err) {
      this.deps.log.warn({ err, prediction: w.id }, 'prediction watch tick failed')
    } finally {
      w.busy = false
    }
  }

  private start (id: string, token: string): void {
    if (this.closed) {
      void this.deps.host.store.release(keys.poller(id), token).catch(() => {})
      return
    }
    const poller = new Poller(this.deps.host, id, token)
    this.pollers.set(id, poller)
    this.deps.log.debug({ prediction: id }, 'poller lock taken')
    void poller.finished.then(() => {
      if (this.pollers.get(id) === poller) this.pollers.delete(id)
    })
    poller.start()
  }

  /** Ends this instance's prediction streams once they have been handed `done` (bus id `doneId`). */
  endAfter (id: string, doneId: string): void {
    // Position at or past `done` means the hub has queued it to every live local stream;
    // otherwise it is still on its way and the bus listener in watch() ends them.
    const channel = keys.channel(id)
    if (compareIds(this.deps.bus.position(channel), doneId) >= 0) this.deps.streams.endStreams(channel)
  }

  async close (): Promise<void> {
    this.closed = true
    for (const w of [...this.locals.values()]) this.unwatch(w)
    await Promise.all([...this.pollers.values()].map(p => p.stop(this.releaseOnClose)))
  }
}
