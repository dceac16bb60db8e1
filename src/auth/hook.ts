import { createHash } from 'node:crypto'
import { userChannel } from '../channels'
import { GatewayError } from '../errors'
import type { Claims } from './plugin'

export const HOOK_TIMEOUT_MS = 2000
const MAX_ANSWER_BYTES = 65536
const MAX_CACHED = 10_000
const REASON_RE = /^[^\p{Cc}]{1,200}$/u

export interface HookDecision {
  /** The channels the stream gets: the requested ones the backend allowed (its own user channel always). */
  channels: string[]
}

export const hookErrors = {
  denied: (reason?: string) => new GatewayError(403, 'forbidden', reason !== undefined ? `the auth hook denied the stream: ${reason}` : 'the auth hook denied the stream'),
  unavailable: (why: string) => new GatewayError(503, 'auth_hook_unavailable', `the auth hook did not answer usably (${why}); retry`, { 'retry-after': '2' })
}

/**
 * AUTH_HOOK_URL: before a stream opens, the backend is asked with `POST { claims, channels,
 * request_id }` (never the raw token) and answers `{ allow, channels?, reason? }`: deny is a
 * 403, `channels` can only narrow what was asked. Anything else (a timeout, a 5xx, a body that
 * is not such an answer) fails closed with a 503 and Retry-After. Allow and deny answers are
 * cached per (claims, channels) for AUTH_HOOK_CACHE_S.
 */
export class AuthHook {
  private readonly cache = new Map<string, { until: number, allow: boolean, channels?: string[], reason?: string }>()

  constructor (private readonly url: string, private readonly cacheS: number, private readonly opts: { timeoutMs?: number, fetch?: typeof fetch } = {}) {}

  async check (claims: Claims, channels: string[], requestId: string): Promise<HookDecision> {
    const claimsOut = {
      sub: claims.sub,
      channels: claims.channels,
      ...(claims.role !== undefined ? { role: claims.role } : {}),
      ...(claims.exp !== undefined ? { exp: claims.exp } : {}),
      ...(claims.iat !== undefined ? { iat: claims.iat } : {}),
      ...(claims.jti !== undefined ? { jti: claims.jti } : {})
    }
    const key = this.cacheS > 0 ? createHash('sha256').update(JSON.stringify([claimsOut, channels])).digest('base64url') : ''
    const now = Date.now()
    let answer = this.cacheS > 0 ? this.cache.get(key) : undefined
    if (answer === undefined || answer.until <= now) {
      answer = { until: now + this.cacheS * 1000, ...await this.ask({ claims: claimsOut, channels, request_id: requestId }) }
      if (this.cacheS > 0) {
        this.cache.delete(key)
        this.cache.set(key, answer)
        // Map order is insertion order: the oldest answer goes first.
        if (this.cache.size > MAX_CACHED) this.cache.delete(this.cache.keys().next().value as string)
      }
    }
    if (!answer.allow) throw hookErrors.denied(answer.reason)
    if (answer.channels === undefined) return { channels }
    const allowed = new Set(answer.channels)
    const own = userChannel(claims.sub)
    return { channels: channels.filter(c => c === own || allowed.has(c)) }
  }

  private async ask (body: unknown): Promise<{ allow: boolean, channels?: string[], reason?: string }> {
    let res: Response
    try {
      res = await (this.opts.fetch ?? fetch)(this.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify(body),
        redirect: 'error',
        signal: AbortSignal.timeout(this.opts.timeoutMs ?? HOOK_TIMEOUT_MS)
      })
    } catch (err) {
      throw hookErrors.unavailable((err as Error).name === 'TimeoutError' ? 'timeout' : 'unreachable')
    }
    if (res.status === 401 || res.status === 403) {
      await res.body?.cancel()
      return { allow: false }
    }
    if (res.status !== 200) {
      await res.body?.cancel()
      throw hookErrors.unavailable(`status ${res.status}`)
    }
    const text = await readBounded(res, MAX_ANSWER_BYTES).catch((err: Error) => { throw hookErrors.unavailable(err.message) })
    let a: unknown
    try {
      a = JSON.parse(text)
    } catch {
      throw hookErrors.unavailable('answer is not JSON')
    }
    return parseAnswer(a)
  }
}

/** A hostile or broken backend cannot widen access: only a well-formed answer counts. */
function parseAnswer (a: unknown): { allow: boolean, channels?: string[], reason?: string } {
  if (a === null || typeof a !== 'object' || Array.isArray(a)) throw hookErrors.unavailable('answer is not an object')
  const o = a as Record<string, unknown>
  if (typeof o.allow !== 'boolean') throw hookErrors.unavailable('answer has no boolean "allow"')
  if (o.channels !== undefined && (!Array.isArray(o.channels) || o.channels.length > 1000 || !o.channels.every(c => typeof c === 'string'))) {
    throw hookErrors.unavailable('"channels" is not a list of names')
  }
  const reason = typeof o.reason === 'string' && REASON_RE.test(o.reason) ? o.reason : undefined
  return { allow: o.allow, channels: o.channels as string[] | undefined, reason }
}

async function readBounded (res: Response, max: number): Promise<string> {
  if (res.body === null) return ''
  const reader = res.body.getReader()
  const chunks: Uint8Array[] = []
  let size = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    size += value.byteLength
    if (size > max) {
      await reader.cancel()
      throw new Error(`answer larger than ${max} bytes`)
    }
    chunks.push(value)
  }
  return Buffer.concat(chunks).toString('utf8')
}
