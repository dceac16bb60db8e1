import type { FastifyInstance } from 'fastify'
import { streamChannels } from '../channels'
import { orThrow } from '../errors'
import { asList, openStream, parseEvents, type StreamRequest, type StreamSpec } from './stream'

/**
 * What GET /events asks for: who (the token), which channels, which events. Shared by the
 * route below and the front door (src/http1/front-door.ts), which serves the same request
 * off the bare socket when it arrives as a plain HTTP/1.1 GET.
 */
export async function eventsSpec (app: FastifyInstance, request: StreamRequest): Promise<StreamSpec> {
  const claims = await app.auth.claims(request, { ticket: true, query: true })
  const q = request.query as Record<string, unknown>
  let channels = orThrow(streamChannels(claims.sub, claims.channels, asList(q.channel), app.config.maxChannelsPerStream))
  // AUTH_HOOK_URL: the backend decides (and may narrow) before anything opens; null when unconfigured.
  const hook = app.features.authHook
  if (hook !== null) channels = (await hook.check(claims, channels, request.id)).channels
  return { claims, channels, events: parseEvents(q.events) }
}

export default async function eventsRoutes (app: FastifyInstance): Promise<void> {
  app.get('/events', async (request, reply) => {
    await openStream(app, request, reply, await eventsSpec(app, request))
  })
}
