import { ok, refused, type Outcome } from './outcome'

// No whitespace, control characters, glob characters (Redis PSUBSCRIBE) or braces (Redis
// Cluster hash tags); bounded so a key stays small.
// eslint-disable-next-line no-control-regex -- rejecting control characters is the point
const CHANNEL_RE = /^[^\s\x00-\x1f\x7f*?[\]{}]{1,200}$/
const EVENT_RE = /^[A-Za-z0-9_.:-]{1,64}$/
export const RESERVED_EVENTS = new Set(['reset', 'auth-expired', 'disconnect'])

export function channelProblem (name: unknown): string | null {
  if (typeof name !== 'string') return 'must be a string'
  if (name.length === 0) return 'must not be empty'
  if (name.length > 200) return 'must be at most 200 characters'
  if (!CHANNEL_RE.test(name)) return 'must not contain whitespace, control characters or any of * ? [ ] { }'
  return null
}

export function eventProblem (name: unknown): string | null {
  if (typeof name !== 'string') return 'must be a string'
  if (!EVENT_RE.test(name)) return 'must be 1-64 characters of A-Z a-z 0-9 _ . : -'
  if (RESERVED_EVENTS.has(name)) return `"${name}" is reserved for the gateway`
  return null
}

export function userChannel (sub: string): string {
  return `user:${sub}`
}

/** The `channels` claim: exact names, or prefixes ending in `*` (`topic:*`). */
export function allows (patterns: readonly string[], channel: string): boolean {
  for (const p of patterns) {
    if (p.endsWith('*') ? channel.startsWith(p.slice(0, -1)) : p === channel) return true
  }
  return false
}

/**
 * The channels a stream gets: its own user channel plus each requested one that the token
 * allows. Refuses a bad name (invalid_channel), one the token may not read (forbidden_channel)
 * and too many (too_many_channels), before any subscription is made. Sorted, so the cursor's
 * channel order is stable across reconnects.
 */
export function streamChannels (sub: string, patterns: readonly string[], requested: readonly string[], max: number): Outcome<string[]> {
  const own = userChannel(sub)
  const set = new Set<string>([own])
  for (const ch of requested) {
    const problem = channelProblem(ch)
    if (problem !== null) return refused({ code: 'invalid_channel', where: `channel "${ch}"`, why: problem })
    if (ch !== own && !allows(patterns, ch)) return refused({ code: 'forbidden_channel', channel: ch })
    set.add(ch)
  }
  if (set.size > max) return refused({ code: 'too_many_channels', max })
  return ok([...set].sort())
}
