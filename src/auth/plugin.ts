import { randomBytes } from 'node:crypto'
import fp from 'fastify-plugin'
import fastifyJwt from '@fastify/jwt'
import fastifyCookie from '@fastify/cookie'
import type { FastifyInstance } from 'fastify'
import type { Config } from '../config'
import type { Store } from '../bus/bus'
import { errors } from '../errors'
import { userIdProblem } from '../channels'
import { TokenCache } from './token-cache'

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

export interface TokenSources {
  /** `?ticket=` (single use). Stream routes only. */
  ticket?: boolean
  /** `?access_token=`. Stream routes only. */
  query?: boolean
  /**
   * The `sse_token` cookie. Default: GET and HEAD only. A browser attaches cookies to
   * cross-site requests, so a write (or minting a ticket) needs the Authorization header.
   */
  cookie?: boolean
}

/** What the credential sources are read from: fastify's request, or the front door's parse. */
export interface AuthRequest {
  method: string
  url: string
  headers: Record<string, string | string[] | undefined>
  query: unknown
  cookies?: Record<string, string | undefined>
}

declare module 'fastify' {
  interface FastifyInstance {
    auth: {
      /** Claims from a Bearer header, or the sources the route allows (cookie, query token, ticket). */
      claims (request: AuthRequest, opts?: TokenSources): Promise<Claims>
      issueTicket (claims: Claims): Promise<string>
    }
  }
}

// Names under which a credential travels in a URL. Accepted only spelled exactly so: a proxy
// or load balancer that redacts `access_token=` in its own logs would miss `access%5Ftoken=`.
const QUERY_CREDENTIALS = new Set(['access_token', 'ticket'])

/** The decoded name of a query parameter, as fastify's parser sees it. */
export function decodedName (raw: string): string {
  try {
    return decodeURIComponent(raw.replace(/\+/g, ' '))
  } catch {
    return raw
  }
}

/** Refuses a credential parameter spelled any way other than its canonical name. */
function checkQuerySpelling (url: string): void {
  const q = url.indexOf('?')
  if (q === -1) return
  for (const part of url.slice(q + 1).split('&')) {
    const eq = part.indexOf('=')
    const raw = eq === -1 ? part : part.slice(0, eq)
    const name = decodedName(raw)
    if (QUERY_CREDENTIALS.has(name) && raw !== name) throw errors.unauthorized(`spell the query parameter "${name}" without percent-encoding`)
  }
}

function toClaims (payload: any): Claims {
  if (payload === null || typeof payload !== 'object') throw errors.unauthorized('token payload is not an object')
  if (typeof payload.sub !== 'string' || payload.sub.length === 0) throw errors.unauthorized('token has no "sub" claim')
  const problem = userIdProblem(payload.sub)
  if (problem !== null) throw errors.unauthorized(`token "sub" is not a usable user id: ${problem}`)
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
    case 'FAST_JWT_INVALID_CLAIM_VALUE': return 'token issuer or audience is not accepted'
    case 'FAST_JWT_MISSING_REQUIRED_CLAIM': return `token has no ${/The (\w+) claim/.exec(String(err.message))?.[1] ?? 'required'} claim (the gateway requires it)`
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
      // allowedIss/allowedAud only check a claim that is present: a token without it would pass.
      requiredClaims: [...(jwt.issuer !== undefined ? ['iss'] : []), ...(jwt.audience !== undefined ? ['aud'] : [])]
    }
  })
  const cache = new TokenCache<Claims>(Math.min(opts.config.maxConnections, 20000))

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
    const now = Date.now()
    const hit = cache.get(token, now)
    // Revocation is checked on every use, cached or not.
    if (hit !== undefined) return allowed(hit)
    let payload: any
    try {
      payload = app.jwt.verify(token)
    } catch (err) {
      throw errors.unauthorized(jwtProblem(err))
    }
    const claims = toClaims(payload)
    cache.set(token, claims, now, payload.nbf, payload.exp)
    return allowed(claims)
  }

  app.decorate('auth', {
    async claims (request: AuthRequest, o: TokenSources = {}): Promise<Claims> {
      if (o.ticket === true || o.query === true) checkQuerySpelling(request.url)
      const header = request.headers.authorization
      if (header !== undefined) {
        const m = typeof header === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null
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
      const cookieAllowed = o.cookie ?? (request.method === 'GET' || request.method === 'HEAD')
      const cookie = request.cookies?.sse_token
      if (cookieAllowed && typeof cookie === 'string' && cookie.length > 0) return verify(cookie)
      if (!cookieAllowed && cookie !== undefined) throw errors.unauthorized(`${request.method} needs Authorization: Bearer <token>; the sse_token cookie authenticates stream reads only`)
      const sources = ['Authorization: Bearer <token>', ...(cookieAllowed ? ['an sse_token cookie'] : []), ...(o.query === true ? ['?access_token='] : []), ...(o.ticket === true ? ['?ticket='] : [])]
      throw errors.unauthorized(`no token: send ${sources.join(', ')}`)
    },
    async issueTicket (claims: Claims): Promise<string> {
      const ticket = randomBytes(24).toString('base64url')
      await opts.store.set(`ticket:${ticket}`, JSON.stringify(claims), TICKET_TTL_MS, true)
      return ticket
    }
  })
}

export default fp(authPlugin, { name: 'auth', fastify: '5.x' })
