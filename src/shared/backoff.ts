export type Jitter = 'full' | 'equal' | 'none'

export interface BackoffOptions {
  /** Delay of the first retry before jitter; the server's `retry:` replaces it. Default 1000. */
  baseMs?: number
  /** Cap of the doubling sequence (1, 2, 4, 8, 16 s by default). Default 16000. */
  maxMs?: number
  /**
   * `full`: uniform in [floor, nominal]; `equal`: uniform in [nominal / 2, nominal];
   * `none`: nominal. The floor is the server's `retry:` when it sent one, else 0. Default `equal`.
   */
  jitter?: Jitter
  /** Source of randomness in [0, 1); injectable for tests. */
  random?: () => number
}

/**
 * The delay before retry number `attempt` (0 for the first retry).
 *
 * The server's `retry:` is honoured as both the base of the sequence and a floor: the gateway
 * sends it while draining, already jittered, to spread its clients over the other instances,
 * so reconnecting sooner than it asks would defeat that.
 */
export function backoffDelay (attempt: number, options: BackoffOptions = {}, serverRetryMs?: number): number {
  const hasServer = serverRetryMs !== undefined && Number.isFinite(serverRetryMs) && serverRetryMs >= 0
  const base = hasServer ? serverRetryMs : (options.baseMs ?? 1000)
  const cap = Math.max(options.maxMs ?? 16000, base)
  // Bounded exponent: 2 ** 1100 is Infinity, and Infinity * 0 would be NaN for base 0.
  const nominal = Math.min(cap, base * 2 ** Math.min(Math.max(attempt, 0), 30))
  const floor = hasServer ? serverRetryMs : 0
  const random = options.random ?? Math.random
  switch (options.jitter ?? 'equal') {
    case 'none': return nominal
    case 'full': return floor + random() * (nominal - floor)
    case 'equal': {
      const lo = Math.max(floor, nominal / 2)
      return lo + random() * (nominal - lo)
    }
  }
}

/**
 * Milliseconds from an HTTP `Retry-After` header (delta-seconds or an HTTP date), or undefined
 * when it is absent or unreadable. Fractional seconds are accepted: a load balancer or a test
 * double may send them, and rounding 0.3 up to 1 s would wait three times too long.
 */
export function parseRetryAfter (value: string | null | undefined, now: number = Date.now()): number | undefined {
  if (value === null || value === undefined) return undefined
  const v = value.trim()
  if (v === '') return undefined
  if (/^[0-9]+(\.[0-9]+)?$/.test(v)) return Math.round(Number(v) * 1000)
  // An HTTP date always names its month; this keeps Date.parse from reading "-1" as a year.
  if (!/[a-z]/i.test(v)) return undefined
  const at = Date.parse(v)
  if (Number.isNaN(at)) return undefined
  return Math.max(0, at - now)
}
