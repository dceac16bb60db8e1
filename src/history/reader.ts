import { ZERO_ID, type Bus, type BusMessage } from '../bus/bus'

export const MAX_HISTORY_PAGE = 1000

export interface HistoryPage {
  messages: BusMessage[]
  /** The channel's newest id at read time. */
  head: string
  /** `after` was older than the retained history (or from another one): the page starts at the oldest retained message. */
  reset: boolean
  /** Messages after the last one returned exist (ask again with it as `after`). */
  more: boolean
}

/**
 * Pages through a channel's history, oldest first. Unlike `Bus.read` (built for resuming,
 * where a too-old cursor means "tell the client to refetch"), a page reader must also start
 * from the oldest retained message of a trimmed history, so each bus kind gets its own.
 */
export interface HistoryReader {
  /** `after` null: from the oldest retained message. At most `limit` messages. */
  page (channel: string, after: string | null, limit: number): Promise<HistoryPage>
}

/** The memory bus: `floor` is the id below its oldest retained message. */
export class MemoryHistoryReader implements HistoryReader {
  constructor (private readonly bus: Bus & { floor (channel: string): string }) {}

  async page (channel: string, after: string | null, limit: number): Promise<HistoryPage> {
    let reset = false
    let r = await this.bus.read(channel, after ?? this.bus.floor(channel))
    if (r.reset) {
      reset = after !== null && after !== ZERO_ID ? true : r.head !== ZERO_ID
      r = await this.bus.read(channel, this.bus.floor(channel))
    }
    return { messages: r.messages.slice(0, limit), head: r.head, reset, more: r.messages.length > limit }
  }
}
