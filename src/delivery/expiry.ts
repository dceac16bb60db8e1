/**
 * Token expiry for every stream of an instance with ONE timer: streams are grouped by their
 * expiry instant (a token's `exp` is in whole seconds, so 10,000 streams share a handful of
 * instants), and the timer is armed for the earliest. A timer, its closure and a frame per
 * stream cost ~0.4 KiB each and a timer-list insert on every connect.
 */
export class ExpirySweep<T extends { expiresAt: number }> {
  private readonly due = new Map<number, Set<T>>()
  /** The instants in `due`, ascending. */
  private readonly instants: number[] = []
  private timer: NodeJS.Timeout | null = null
  private armedFor = 0

  constructor (private readonly expire: (item: T) => void, private readonly now: () => number = Date.now) {}

  add (item: T, epochMs: number): void {
    // Node timers overflow past 2^31-1 ms (~24.8 days); such tokens simply never expire here.
    if (epochMs - this.now() > 2 ** 31 - 1) return
    item.expiresAt = epochMs
    let set = this.due.get(epochMs)
    if (set === undefined) {
      set = new Set()
      this.due.set(epochMs, set)
      let i = this.instants.length
      while (i > 0 && this.instants[i - 1] > epochMs) i--
      this.instants.splice(i, 0, epochMs)
    }
    set.add(item)
    if (this.timer === null || epochMs < this.armedFor) this.arm()
  }

  remove (item: T): void {
    if (item.expiresAt === 0) return
    const set = this.due.get(item.expiresAt)
    item.expiresAt = 0
    if (set === undefined) return
    set.delete(item)
    // An emptied instant stays in `instants` until its time: the timer then finds nothing.
  }

  get size (): number {
    let n = 0
    for (const set of this.due.values()) n += set.size
    return n
  }

  close (): void {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    this.due.clear()
    this.instants.length = 0
  }

  private arm (): void {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    if (this.instants.length === 0) return
    this.armedFor = this.instants[0]
    this.timer = setTimeout(() => this.sweep(), Math.max(0, this.armedFor - this.now()))
    this.timer.unref()
  }

  private sweep (): void {
    this.timer = null
    const now = this.now()
    while (this.instants.length > 0 && this.instants[0] <= now) {
      const at = this.instants.shift() as number
      const set = this.due.get(at)
      this.due.delete(at)
      if (set === undefined) continue
      for (const item of set) {
        item.expiresAt = 0
        this.expire(item)
      }
    }
    this.arm()
  }
}
