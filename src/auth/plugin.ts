import { randomBytes } from 'node:crypto'
import fp from 'fastify-plugin'
import fastifyJwt from '@fastify/jwt'
import fastifyCookie from '@fastify/cookie'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { Config } from '../config'
import type { Store } from '../bus/bus'
import { errors } from '../errors'

export interface Claims {
  sub: string
  channels: string[]
  role?: string
  /** Seconds since epoch. */
  exp?: number
  /** Token id and issue time (seconds): what POST /disconnect revokes by. */
  jti?: string
  iat?: number
}

export const TICKET_TTL_MS = 30_000

declare module 'fastify' {
  interface FastifyInstance {
    auth: {
      /** Claims from a Bearer header, cookie or query token (or a ticket when allowed). */
      claims (request: FastifyRequest, opts?: { ticket?: boolean, query?: boolean }): Promise<Claims>
      issueTicket (claims: Claims): Promise<string>
    }
  }
}

function toClaims (payload: any): Claims {
  if (payload === null || typeof payload !== 'object') throw errors.unauthorized('token payload is not an object')
  if (typeof payload.sub !== 'string' || payload.sub.length === 0) throw errors.unauthorized('token has no "sub" claim')
  // eslint-disable-next-line no-control-regex -- a sub becomes a channel name: same rules
  if (payload.sub.length > 128 || /[\s\x00-\x1f*?[\]{}]/.test(payload.sub)) throw errors.unauthorized('token "sub" is not a usable user id')
  const channels = payload.channels === undefined ? [] : payload.channels
  if (!Array.isArray(channels) || !channels.every((c: unknown) => typeof c === 'string')) {
    throw errors.unauthorized('token "channels" claim must be a list of strings')
  }
  return {
    sub: payload.sub,
    channels,
    role: typeof payload.role === 'string' ? payload.role : undefined,
    exp: typeof payload.exp === 'number' ? payload.exp : undefined,
    jti: typeof payload.jti === 'string' && payload.jti.length > 0 && payload.jti.length <= 256 ? payload.jti : undefined,
    iat: typeof payload.iat === 'number' ? payload.iat : undefined
  }
}

function jwtProblem (err: any): string {
  switch (err?.code) {
    case 'FAST_JWT_EXPIRED': return 'token expired'
    case 'FAST_JWT_INACTIVE': return 'token not yet valid'
    case 'FAST_JWT_INVALID_SIGNATURE': return 'token signature is invalid'
    case 'FAST_JWT_MALFORMED': case 'FAST_JWT_INVALID_TYPE': return 'token is malformed'
    case 'FAST_JWT_INVALID_ALGORITHM': return 'token algorithm is not accepted'
    case 'FAST_JWT_INVALID_CLAIM_VALUE': case 'FAST_JWT_MISSING_REQUIRED_CLAIM': return 'token issuer or audience is not accepted'
    default: return 'token is invalid'
  }
}

export interface AuthPluginOptions {
  config: Config
  store: Store
  /** Why a verified token may not be used (revoked), or null; synchronous unless it must ask a store. */
  refuse?: (claims: Claims) => string | null | Promise<string | null>
}

async function authPlugin (app: FastifyInstance, opts: AuthPluginOptions): Promise<void> {
  const { jwt } = opts.config
  await app.register(fastifyCookie)
  await app.register(fastifyJwt, {
    secret: jwt.secret ?? { public: jwt.publicKey as string },
    verify: {
      algorithms: jwt.secret !== undefined ? ['HS256'] : ['RS256', 'ES256'],
      ...(jwt.issuer !== undefined ? { allowedIss: jwt.issuer } : {}),
      ...(jwt.audience !== undefined ? { allowedAud: jwt.audience } : {}),
      // A reconnecting client presents the token it had: a cache hit costs one hash instead of
      // decoding, the signature and the claim checks (bench/README.md, connect). fast-jwt keys
      // the cache by a hash of the token and expires entries with the token.
      cache: Math.min(opts.config.maxConnections, 20000)
    }
  })

  const refuse = opts.refuse
  const allowed = (claims: Claims): Claims | Promise<Claims> => {
    if (refuse === undefined) return claims
    const why = refuse(claims)
    if (why === null) return claims
    if (typeof why === 'string') throw errors.unauthorized(why)
    return why.then(w => {
      if (w !== null) throw errors.unauthorized(w)
      return claims
    })
  }

  const verify = (token: string): Claims | Promise<Claims> => {
    let payload: unknown
    try {
      payload = app.jwt.verify(token)
    } catch (err) {
      throw errors.unauthorized(jwtProblem(err))
    }
    return allowed(toClaims(payload))
  }

  app.decorate('auth', {
    async claims (request: FastifyRequest, o: { ticket?: boolean, query?: boolean } = {}): Promise<Claims> {
      const header = request.headers.authorization
      if (header !== undefined) {
        const m = /^Bearer\s+(\S+)\s*$/i.exec(header)
        if (m === null) throw errors.unauthorized('Authorization header must be "Bearer <token>"')
        return verify(m[1])
      }
      const q = request.query as Record<string, unknown> | undefined
      if (o.ticket === true && typeof q?.ticket === 'string') {
        const raw = await opts.store.take(`ticket:${q.ticket}`)
        if (raw === null) throw errors.unauthorized('ticket is unknown, expired or already used')
        const claims = JSON.parse(raw) as Claims
        if (claims.exp !== undefined && claims.exp * 1000 <= Date.now()) throw errors.unauthorized('token expired')
        return await allowed(claims)
      }
      if (o.query === true && typeof q?.access_token === 'string') return verify(q.access_token)
      const cookie = request.cookies?.sse_token
      if (typeof cookie === 'string' && cookie.length > 0) return verify(cookie)
      throw errors.unauthorized('no token: send Authorization: Bearer <token>, an sse_token cookie, ?access_token= or ?ticket=')
    },
    async issueTicket (claims: Claims): Promise<string> {
      const ticket = randomBytes(24).toString('base64url')
      await opts.store.set(`ticket:${ticket}`, JSON.stringify(claims), TICKET_TTL_MS, true)
      return ticket
    }
  })
}

export default fp(authPlugin, { name: 'auth', fastify: '5.x' })
