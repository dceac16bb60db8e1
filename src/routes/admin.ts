import { readFileSync } from 'node:fs'
import { timingSafeEqual } from 'node:crypto'
import { join } from 'node:path'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { Claims } from '../auth/plugin'
import { ADMIN_CHANNEL } from '../admin/stats'
import { channelProblem } from '../channels'
import { errors, GatewayError } from '../errors'
import { channelParam, presenceAnswer } from './channels'
import { openStream } from './stream'

const PAGE = join(__dirname, '..', '..', 'public', 'admin.html')

function sameKey (given: string, key: string): boolean {
  const a = Buffer.from(given)
  const b = Buffer.from(key)
  return a.length === b.length && timingSafeEqual(a, b)
}

/**
 * The operator page (ADMIN=true, or ADMIN=<key>): not registered at all otherwise, and only
 * answered to a token with `"role": "admin"` (or the key), from the Authorization header, the
 * `sse_token` cookie or `?access_token=` (a browser opening the page can send nothing else).
 */
export default async function adminRoutes (app: FastifyInstance): Promise<void> {
  const { admin } = app.config
  if (!admin.enabled) return
  const page = (() => {
    try {
      return readFileSync(PAGE, 'utf8')
    } catch {
      return null
    }
  })()

  const adminClaims = async (request: FastifyRequest): Promise<Claims> => {
    if (admin.key !== undefined) {
      const header = request.headers.authorization
      const q = request.query as Record<string, unknown>
      const given = header?.startsWith('Bearer ') === true ? header.slice(7).trim() : typeof q.access_token === 'string' ? q.access_token : undefined
      if (given !== undefined && sameKey(given, admin.key)) return { sub: 'admin', channels: [], role: 'admin' }
    }
    const claims = await app.auth.claims(request, { query: true })
    if (claims.role !== 'admin') throw new GatewayError(403, 'forbidden', 'the operator page needs a token with role "admin"')
    return claims
  }

  app.get('/admin', async (request, reply) => {
    await adminClaims(request)
    if (page === null) throw errors.notFound('admin page')
    reply.header('content-type', 'text/html; charset=utf-8')
      .header('cache-control', 'no-store')
      .header('x-frame-options', 'DENY')
      .header('referrer-policy', 'no-referrer')
    return page
  })

  // Every instance's numbers (ADMIN_CHANNEL), and optionally one channel to tail.
  app.get('/admin/events', async (request, reply) => {
    const claims = await adminClaims(request)
    const tail = (request.query as Record<string, unknown>).tail
    const channels = [ADMIN_CHANNEL]
    if (tail !== undefined && tail !== '') {
      const problem = channelProblem(tail)
      if (problem !== null) throw errors.invalidChannel('tail', problem)
      channels.push(tail as string)
    }
    await openStream(app, request, reply, { claims, channels: channels.sort(), events: null, start: { from: 'live' } })
  })

  app.get('/admin/presence/:channel', async (request) => {
    await adminClaims(request)
    return await presenceAnswer(app, request, channelParam(request), true)
  })
}
