import { Readable } from 'node:stream'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { Claims } from '../auth/plugin'
import type { StreamStart } from '../delivery/hub'
import { controlFrame } from '../delivery/sse'
import { lastEventId, openStream, parseEvents } from './stream'
import { GatewayError, errors } from '../errors'
import { isPredictionId, keys, publicView, statusPayload, type PredictionRecord } from '../replicate/state'
import { WEBHOOK_EVENTS, isTerminal, type CreatePredictionRequest, type WebhookEvent } from '../replicate/types'
import { UpstreamError } from '../replicate/upstream'

/** Replicate's refusals and outages as our own error body, with the status meant for our caller. */
export function asGatewayError (err: unknown): unknown {
  if (!(err instanceof UpstreamError)) return err
  const headers = err.retryAfterMs !== undefined ? { 'retry-after': String(Math.max(1, Math.ceil(err.retryAfterMs / 1000))) } : undefined
  return new GatewayError(err.httpStatus, err.code, err.detail, headers)
}

function isObject (v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

const nonEmpty = (v: unknown): v is string => typeof v === 'string' && v.trim().length > 0

export function parseCreateBody (body: unknown): CreatePredictionRequest {
  if (!isObject(body)) throw errors.invalidRequest('body must be a JSON object')
  const { version, model, input, webhook_events: events, stream } = body
  if (version !== undefined && !nonEmpty(version)) throw errors.invalidRequest('"version" must be a non-empty string')
  if (model !== undefined && !nonEmpty(model)) throw errors.invalidRequest('"model" must be a non-empty string')
  if ((version === undefined) === (model === undefined)) throw errors.invalidRequest('give exactly one of "version" or "model"')
  if (!isObject(input)) throw errors.invalidRequest('"input" must be an object')
  if (events !== undefined && !(Array.isArray(events) && events.every(e => WEBHOOK_EVENTS.includes(e as WebhookEvent)))) {
    throw errors.invalidRequest(`"webhook_events" must be a list of ${WEBHOOK_EVENTS.join(', ')}`)
  }
  if (stream !== undefined && typeof stream !== 'boolean') throw errors.invalidRequest('"stream" must be a boolean')
  return {
    ...(version !== undefined ? { version: version as string } : { model: model as string }),
    input,
    ...(events !== undefined ? { webhook_events_filter: events as WebhookEvent[] } : {}),
    ...(stream !== undefined ? { stream } : {})
  }
}

/** REPLICATE_MODELS names `owner/name` (any version of it) or exact versions. */
export function modelAllowed (allowed: readonly string[] | undefined, req: CreatePredictionRequest): boolean {
  if (allowed === undefined) return true
  const ref = (req.model ?? req.version) as string
  const colon = ref.indexOf(':')
  return allowed.includes(ref) || (colon > 0 && (allowed.includes(ref.slice(0, colon)) || allowed.includes(ref.slice(colon + 1))))
}

export default async function predictionRoutes (app: FastifyInstance): Promise<void> {
  const svc = app.predictions
  const base = (): string => (app.config.replicate.publicUrl ?? '').replace(/\/+$/, '')
  const eventsUrl = (id: string): string => `${base()}/predictions/${id}/events`

  const requireConfigured = (): void => {
    if (!svc.configured) throw errors.notConfigured('the Replicate proxy (REPLICATE_API_TOKEN)')
  }

  // One answer for "not yours" and "does not exist", so ids cannot be probed.
  async function owned (request: FastifyRequest, o?: { ticket?: boolean, query?: boolean }): Promise<{ claims: Claims, id: string }> {
    const claims = await app.auth.claims(request, o)
    requireConfigured()
    const id = (request.params as { id: string }).id
    if (!isPredictionId(id) || (await svc.owner(id)) !== claims.sub) throw errors.notFound('prediction')
    return { claims, id }
  }

  app.post('/predictions', async (request, reply) => {
    const claims = await app.auth.claims(request)
    requireConfigured()
    const req = parseCreateBody(request.body)
    if (!modelAllowed(app.config.replicate.models, req)) throw errors.forbiddenModel((req.model ?? req.version) as string)
    const { publicUrl, webhookSecret } = app.config.replicate
    if (publicUrl !== undefined && webhookSecret !== undefined) req.webhook = `${base()}/webhooks/replicate`
    else delete req.webhook_events_filter
    let rec: PredictionRecord
    try {
      rec = await svc.create(claims.sub, req)
    } catch (err) {
      throw asGatewayError(err)
    }
    reply.code(201)
    return { id: rec.id, status: rec.status, events_url: eventsUrl(rec.id) }
  })

  app.get('/predictions/:id', async (request) => {
    const { id } = await owned(request)
    let rec: PredictionRecord | null
    try {
      rec = await svc.fresh(id)
    } catch (err) {
      throw asGatewayError(err)
    }
    if (rec === null) throw errors.notFound('prediction')
    return publicView(rec, eventsUrl(id))
  })

  app.post('/predictions/:id/cancel', async (request) => {
    const { id } = await owned(request)
    let rec: PredictionRecord
    try {
      rec = await svc.cancel(id)
    } catch (err) {
      throw asGatewayError(err)
    }
    return publicView(rec, eventsUrl(id))
  })

  app.get('/predictions/:id/events', async (request, reply) => {
    const { claims, id } = await owned(request, { ticket: true, query: true })
    const channel = keys.channel(id)
    const q = request.query as Record<string, unknown>
    const given = lastEventId(request)
    // Without a cursor, resume from the bus head as it was BEFORE the record is read: whatever
    // is published in between is replayed after the prelude, so a joiner never misses a change.
    const start: StreamStart = given !== null ? { from: 'cursor', cursor: given } : { from: 'ids', ids: [await app.bus.head(channel)] }
    const rec = await svc.record(id)
    const prelude = rec === null ? '' : controlFrame('status', statusPayload(rec))
    if (rec !== null && isTerminal(rec.status)) {
      // Nothing more will come: the final state and the end, without holding a stream open.
      // Sent as a stream (chunked) like every other SSE answer, not as a sized body.
      reply.header('cache-control', 'no-cache').type('text/event-stream; charset=utf-8')
      return await reply.send(Readable.from([prelude + controlFrame('done', { id, status: rec.status })]))
    }
    await openStream(app, request, reply, { claims, channels: [channel], events: parseEvents(q.events), start, prelude })
    svc.watch(id)
    try {
      // `done` published while this stream attached came with the replay: end it here too.
      const doneId = await svc.doneId(id)
      if (doneId !== null) svc.endLocalAfter(id, doneId)
    } catch (err) {
      request.log.warn({ err, prediction: id }, 'prediction done check failed')
    }
  })
}
