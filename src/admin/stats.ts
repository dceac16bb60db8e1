import type { Bus } from '../bus/bus'

/** The operator page's channel: every instance publishes its numbers there. Refused by channel rules, like the control channel. */
export const ADMIN_CHANNEL = '[gateway]:admin'
export const STATS_INTERVAL_MS = 1000
const TOP = 10

/** One instance's numbers at one moment; the page turns consecutive ones into rates. */
export interface StatsSnapshot {
  instance: string
  /** host:port, for people. */
  name: string
  t: number
  connections: number
  subscriptions: number
  channels: number
  presenceMembers: number
  /** Counter totals since the start: the page differentiates them. */
  delivered: number
  published: number
  /** The delivery-latency histogram: upper bounds (seconds, last +Inf) and cumulative counts. */
  latency: { le: Array<number | string>, counts: number[] }
  /** This instance's busiest channels: [channel, local streams]. */
  top: Array<[string, number]>
}

export interface StatsSource {
  instance: string
  name: () => string
  connections: () => number
  subscriptions: () => number
  channelSizes: () => Iterable<[string, number]>
  presenceMembers: () => number
  /** Metric values, read when a snapshot is taken. */
  counters: () => Promise<{ delivered: number, published: number, latency: { le: Array<number | string>, counts: number[] } }>
}

/**
 * Publishes this instance's snapshot on ADMIN_CHANNEL every second (only with ADMIN on), so a
 * page connected to any instance sees all of them, aggregated through the bus like any message.
 */
export class StatsPublisher {
  private readonly timer: NodeJS.Timeout

  constructor (private readonly bus: Bus, private readonly src: StatsSource, private readonly log?: { warn: (o: object, m: string) => void }) {
    this.timer = setInterval(() => { void this.publish() }, STATS_INTERVAL_MS)
    this.timer.unref()
  }

  async snapshot (): Promise<StatsSnapshot> {
    const top: Array<[string, number]> = []
    let channels = 0
    for (const entry of this.src.channelSizes()) {
      if (entry[0].startsWith('[')) continue
      channels++
      top.push(entry)
      // Keep the list short while scanning: sort and cut whenever it doubles.
      if (top.length > TOP * 2) {
        top.sort((a, b) => b[1] - a[1])
        top.length = TOP
      }
    }
    top.sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    top.length = Math.min(top.length, TOP)
    return {
      instance: this.src.instance,
      name: this.src.name(),
      t: Date.now(),
      connections: this.src.connections(),
      subscriptions: this.src.subscriptions(),
      channels,
      presenceMembers: this.src.presenceMembers(),
      ...await this.src.counters(),
      top
    }
  }

  private async publish (): Promise<void> {
    try {
      const s = await this.snapshot()
      await this.bus.publish([{ channel: ADMIN_CHANNEL, event: 'stats', data: s, ts: s.t }])
    } catch (err) {
      this.log?.warn({ err }, 'admin stats not published')
    }
  }

  close (): void {
    clearInterval(this.timer)
  }
}
