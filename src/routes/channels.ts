import type { FastifyInstance, FastifyRequest } from 'fastify'
import { allows, channelProblem, userChannel } from '../channels'
import type { Claims } from '../auth/plugin'
import { isId } from '../bus/bus'
import { errors } from '../errors'
import { MAX_HISTORY_PAGE } from '../history/reader'
import { Presence } from '../presence/presence'

/** Same rule as streaming: the own user channel, or one the `channels` claim allows; publishers and admins read any. */
export function mayRead (claims: Claims, channel: string): boolean {
  return claims.role === 'publisher' || claims.role === 'admin' || channel === userChannel(claims.sub) || allows(claims.channels, channel)
}

/** `{ channel, count, members?, truncated? }` across instances; 400 for a channel without presence, 503 when Redis fails. */
export async function presenceAnswer (app: FastifyInstance, request: FastifyRequest, channel: string, members: boolean): Promise<object> {
  if (!Presence.tracks(channel)) throw errors.invalidChannel(`channel "${channel}"`, 'presence is kept for shared channels, not user:<sub>')
  let view
  try {
    // This instance's own latest changes first: a client that just opened a stream here sees itself.
    await app.features.presence.flush()
    view = await app.features.presence.query(channel, app.config.presence.maxMembers)
  } catch (err) {
    request.log.warn({ err }, 'presence read failed')
    throw errors.busUnavailable()
  }
  if (!members) return { channel, count: view.count }
  return { channel, count: view.count, members: view.members, ...(view.count > view.members.length ? { truncated: true } : {}) }
}

export function channelParam (request: FastifyRequest): string {
  const channel = (request.params as { channel: string }).channel
  const problem = channelProblem(channel)
  if (problem !== null) throw errors.invalidChannel(`channel "${channel.slice(0, 200)}"`, problem)
  return channel
}

function limitParam (raw: unknown, dflt: number): number {
  if (raw === undefined) return dflt
  if (typeof raw !== 'string' || !/^[0-9]{1,4}$/.test(raw) || Number(raw) < 1 || Number(raw) > MAX_HISTORY_PAGE) {
    throw errors.invalidRequest(`limit: must be an integer from 1 to ${MAX_HISTORY_PAGE}`)
  }
  return Number(raw)
}

export default async function channelRoutes (app: FastifyInstance): Promise<void> {
  const { history } = app.features

  app.get('/channels/:channel/presence', async (request) => {
    const claims = await app.auth.claims(request)
    const channel = channelParam(request)
    // The count is for anyone with a token; who the members are only for those who may read the channel.
    return await presenceAnswer(app, request, channel, mayRead(claims, channel))
  })

  app.get('/channels/:channel/history', async (request) => {
    const claims = await app.auth.claims(request)
    const channel = channelParam(request)
    if (!mayRead(claims, channel)) throw errors.forbiddenChannel(channel)
    const q = request.query as Record<string, unknown>
    if (q.after !== undefined && (typeof q.after !== 'string' || !isId(q.after))) {
      throw errors.invalidRequest('after: must be a message id like 1700000000000-0')
    }
    const limit = limitParam(q.limit, 100)
    let page
    try {
      page = await history.page(channel, (q.after as string | undefined) ?? null, limit)
    } catch (err) {
      request.log.warn({ err }, 'history read failed')
      throw errors.busUnavailable()
    }
    const messages = page.messages.map(m => m.key === undefined
      ? { id: m.id, event: m.event, data: m.data, ts: m.ts }
      : { id: m.id, event: m.event, data: m.data, key: m.key, ts: m.ts })
    return {
      channel,
      messages,
      // The `after` of the next page; null once the page reached the newest message.
      next: page.more && messages.length > 0 ? messages[messages.length - 1].id : null,
      head: page.head,
      ...(page.reset ? { reset: true } : {})
    }
  })
}
