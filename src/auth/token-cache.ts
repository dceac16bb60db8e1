/**
 * Verified tokens by their exact text. A reconnecting client presents the token it had (as
 * EventSource keeps its URL): a hit costs one Map lookup, where verifying costs decoding, an
 * HMAC and the claim checks, and fast-jwt's own cache hashes the token first (about 10 µs per
 * connect in a storm, bench/README.md "Issue 15"). Bounded, oldest entry out first; an entry
 * answers only inside its token's nbf..exp window, and never longer than `ttlMs` (a token
 * without exp). Only verified tokens enter; a refused one is verified again each time.
 */
export class TokenCache<T> {
  private readonly entries = new Map<string, { value: T, from: number, until: number }>()

  constructor (private readonly max: number, private readonly ttlMs = 600_000) {}

  get (token: string, now: number): T | undefined {
    const e = this.entries.get(token)
    if (e === undefined) return undefined
    if (now < e.from || now >= e.until) {
      this.entries.delete(token)
      return undefined
    }
    return e.value
  }

  /** `nbf` and `exp` in seconds, as in the token. */
  set (token: string, value: T, now: number, nbf: unknown, exp: unknown): void {
    if (this.max <= 0) return
    if (this.entries.size >= this.max) this.entries.delete(this.entries.keys().next().value as string)
    const from = typeof nbf === 'number' ? nbf * 1000 : 0
    const until = Math.min(now + this.ttlMs, typeof exp === 'number' ? exp * 1000 : Infinity)
    this.entries.set(token, { value, from, until })
  }

  get size (): number {
    return this.entries.size
  }
}
