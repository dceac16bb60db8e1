import type { FastifyInstance } from 'fastify'
import { streamChannels } from '../channels'
import { orThrow } from '../errors'
import { asList, openStream, parseEvents } from './stream'

export default async function eventsRoutes (app: FastifyInstance): Promise<void> {
  const hook = app.features.authHook
  app.get('/events', async (request, reply) => {
    const claims = await app.auth.claims(request, { ticket: true, query: true })
    const q = request.query as Record<string, unknown>
    let channels = orThrow(streamChannels(claims.sub, claims.channels, asList(q.channel), app.config.maxChannelsPerStream))
    // AUTH_HOOK_URL: the backend decides (and may narrow) before anything opens; null when unconfigured.
    if (hook !== null) channels = (await hook.check(claims, channels, request.id)).channels
    await openStream(app, request, reply, { claims, channels, events: parseEvents(q.events) })
  })
}
