import type { FastifyInstance } from 'fastify'
import { parsePublishBody } from '../bus/validate'
import { errors, orThrow, problemError } from '../errors'
import { Refused } from '../outcome'

export default async function publishRoutes (app: FastifyInstance): Promise<void> {
  const published = app.metrics.published.labels('http')
  app.post('/publish', { bodyLimit: app.config.maxBodyBytes }, async (request, reply) => {
    const claims = await app.auth.claims(request)
    if (claims.role !== 'publisher') throw errors.publisherRequired()
    const messages = orThrow(parsePublishBody(request.body, Date.now(), app.limits))
    const header = request.headers.traceparent
    const span = app.tracing?.publish(messages, typeof header === 'string' ? header : messages[0].traceparent, 'http') ?? null
    let ids: string[]
    try {
      // One bus call: the whole request is published atomically or not at all.
      ids = await app.bus.publish(messages)
    } catch (err) {
      span?.fail(err)
      if (err instanceof Refused) throw problemError(err.problem)
      request.log.warn({ err }, 'publish failed')
      throw errors.busUnavailable()
    }
    span?.end(ids)
    published.inc(ids.length)
    reply.code(202)
    return { ids }
  })
}
