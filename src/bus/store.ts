/**
 * Small key-value store with TTLs: tickets, prediction records and locks, webhook ids. Made
 * beside the bus (MemoryStore with the memory bus, redis/store.ts on a Redis bus's command
 * connection) and handed to whoever needs it; the bus never uses it. Keys are plain names (the
 * Redis store adds CHANNEL_PREFIX); an expired key reads as absent.
 */
export interface Store {
  /**
   * Sets `key` to `value` for `ttlMs` (a plain set replaces the value and restarts the TTL);
   * with `nx` only when the key is absent or expired. Resolves true when written.
   */
  set (key: string, value: string, ttlMs: number, nx?: boolean): Promise<boolean>
  /** The value, or null when absent or expired. */
  get (key: string): Promise<string | null>
  /** Gets and deletes in one step (single-use tickets): of two concurrent takes one gets it. */
  take (key: string): Promise<string | null>
  /** Deleting an absent key is not an error. */
  del (key: string): Promise<void>
  /** Restarts the TTL only while the key still holds `value` (lock renewal); false otherwise. */
  refresh (key: string, value: string, ttlMs: number): Promise<boolean>
  /** Deletes only while the key still holds `value` (lock release); false otherwise. */
  release (key: string, value: string): Promise<boolean>
}

/** The Store of one process (beside the memory bus); expiry is checked on access. */
export class MemoryStore implements Store {
  private readonly items = new Map<string, { value: string, expiresAt: number }>()
  constructor (private readonly now: () => number = Date.now) {}

  private live (key: string): { value: string, expiresAt: number } | undefined {
    const it = this.items.get(key)
    if (it !== undefined && it.expiresAt <= this.now()) {
      this.items.delete(key)
      return undefined
    }
    return it
  }

  async set (key: string, value: string, ttlMs: number, nx = false): Promise<boolean> {
    if (nx && this.live(key) !== undefined) return false
    this.items.set(key, { value, expiresAt: this.now() + ttlMs })
    // Bounded memory without a timer per key: sweep expired entries now and then.
    if (this.items.size % 1024 === 0) for (const k of this.items.keys()) this.live(k)
    return true
  }

  async get (key: string): Promise<string | null> {
    return this.live(key)?.value ?? null
  }

  async take (key: string): Promise<string | null> {
    const it = this.live(key)
    this.items.delete(key)
    return it?.value ?? null
  }

  async del (key: string): Promise<void> {
    this.items.delete(key)
  }

  async refresh (key: string, value: string, ttlMs: number): Promise<boolean> {
    const it = this.live(key)
    if (it === undefined || it.value !== value) return false
    it.expiresAt = this.now() + ttlMs
    return true
  }

  async release (key: string, value: string): Promise<boolean> {
    const it = this.live(key)
    if (it === undefined || it.value !== value) return false
    this.items.delete(key)
    return true
  }
}
