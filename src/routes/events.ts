import type { FastifyInstance } from 'fastify'
import { streamChannels } from '../channels'
import { orThrow } from '../errors'
import { asList, openStream, parseEvents } from './stream'

export default async function eventsRoutes (app: FastifyInstance): Promise<void> {
  app.get('/events', async (request, reply) => {
    const claims = await app.auth.claims(request, { ticket: true, query: true })
    const q = request.query as Record<string, unknown>
    const channels = orThrow(streamChannels(claims.sub, claims.channels, asList(q.channel), app.config.maxChannelsPerStream))
    await openStream(app, request, reply, { claims, channels, events: parseEvents(q.events) })
  })
}
