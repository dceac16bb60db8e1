import type { FastifyInstance } from 'fastify'
import { errors, GatewayError } from '../errors'
import type { Revocation } from '../revocation/revocations'

const FIELDS = new Set(['sub', 'jti', 'reason', 'exp'])
// eslint-disable-next-line no-control-regex -- a sub is a channel name part: the token rule
const SUB_RE = /^[^\s\x00-\x1f\x7f*?[\]{}]{1,128}$/
// eslint-disable-next-line no-control-regex -- ids are printable
const JTI_RE = /^[^\s\x00-\x1f\x7f]{1,256}$/
// eslint-disable-next-line no-control-regex -- a reason is shown to the client as is
const REASON_RE = /^[^\x00-\x1f\x7f]{1,200}$/

const bad = (field: string, why: string): GatewayError => errors.invalidRequest(`${field}: ${why}`)

/** Validates a POST /disconnect body into a revocation; nothing happens on a bad one. */
export function parseDisconnect (body: unknown, now: number, maxTtlMs: number): Revocation {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw bad('body', 'must be an object with "sub" or "jti"')
  const b = body as Record<string, unknown>
  for (const k of Object.keys(b)) if (!FIELDS.has(k)) throw bad(k, 'unknown field')
  if ((b.sub === undefined) === (b.jti === undefined)) throw bad('body', 'give exactly one of "sub" or "jti"')
  if (b.sub !== undefined && (typeof b.sub !== 'string' || !SUB_RE.test(b.sub))) throw bad('sub', 'must be a user id of 1-128 characters without whitespace or * ? [ ] { }')
  if (b.jti !== undefined && (typeof b.jti !== 'string' || !JTI_RE.test(b.jti))) throw bad('jti', 'must be 1-256 printable characters')
  if (b.reason !== undefined && (typeof b.reason !== 'string' || !REASON_RE.test(b.reason))) throw bad('reason', 'must be 1-200 characters without control characters')
  let until = now + maxTtlMs
  if (b.exp !== undefined) {
    if (typeof b.exp !== 'number' || !Number.isInteger(b.exp)) throw bad('exp', 'must be epoch seconds')
    if (b.exp * 1000 <= now) throw bad('exp', 'must be in the future')
    until = Math.min(until, b.exp * 1000)
  }
  const kind = b.sub !== undefined ? 'sub' : 'jti'
  return { kind, value: (b.sub ?? b.jti) as string, at: now, until, reason: (b.reason as string | undefined) ?? 'revoked' }
}

export default async function disconnectRoutes (app: FastifyInstance): Promise<void> {
  app.post('/disconnect', { bodyLimit: 4096 }, async (request, reply) => {
    if (request.headers.authorization === undefined) throw errors.unauthorized('POST /disconnect needs an Authorization: Bearer header')
    const claims = await app.auth.claims(request)
    if (claims.role !== 'publisher') throw new GatewayError(403, 'forbidden', 'disconnecting needs a token with role "publisher"')
    // A revocation outlives no history of the control channel: that is how new instances learn it.
    const r = parseDisconnect(request.body, Date.now(), app.config.historyTtlS * 1000)
    try {
      await app.features.revocations.revoke(r)
    } catch (err) {
      request.log.warn({ err }, 'revocation failed')
      throw errors.busUnavailable()
    }
    request.log.info({ kind: r.kind }, 'revoked')
    reply.code(202)
    return { revoked: r.kind, until: Math.floor(r.until / 1000) }
  })
}
