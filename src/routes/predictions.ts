import { Readable } from 'node:stream'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Claims } from '../auth/plugin'
import type { StreamStart } from '../delivery/hub'
import { controlFrame } from '../delivery/sse'
import { lastEventId, openStream, parseEvents } from './stream'
import { GatewayError, errors } from '../errors'
import { keys, publicView, snapshotPayload, type PredictionRecord } from '../replicate/state'
import { WEBHOOK_EVENTS, isPredictionId, isTerminal, type CreateOptions, type CreatePredictionRequest, type WebhookEvent } from '../replicate/types'
import { UpstreamError } from '../replicate/upstream'

/**
 * Replicate's refusals and outages as our own error body, with the status meant for our
 * caller and a fixed message: Replicate's own words may carry URLs or account details, so
 * they go to the log (credentials stripped), never into the answer.
 */
export function asGatewayError (err: unknown, log?: FastifyRequest['log']): unknown {
  if (!(err instanceof UpstreamError)) return err
  log?.warn({ code: err.code, status: err.status, detail: err.detail }, 'replicate call failed')
  const headers = err.retryAfterMs !== undefined ? { 'retry-after': String(Math.max(1, Math.ceil(err.retryAfterMs / 1000))) } : undefined
  return new GatewayError(err.httpStatus, err.code, err.publicMessage, headers)
}

function isObject (v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

const nonEmpty = (v: unknown): v is string => typeof v === 'string' && v.trim().length > 0

export function parseCreateBody (body: unknown): CreatePredictionRequest {
  if (!isObject(body)) throw errors.invalidRequest('body must be a JSON object')
  const { version, model, deployment, input, stream } = body
  // `webhook_events_filter` is Replicate's name; `webhook_events` the gateway's older one.
  const filterField = body.webhook_events_filter !== undefined ? 'webhook_events_filter' : 'webhook_events'
  const events = body[filterField]
  for (const [name, v] of [['version', version], ['model', model], ['deployment', deployment]] as const) {
    if (v !== undefined && !nonEmpty(v)) throw errors.invalidRequest(`"${name}" must be a non-empty string`)
  }
  if ([version, model, deployment].filter(v => v !== undefined).length !== 1) throw errors.invalidRequest('give exactly one of "version", "model" or "deployment"')
  if (!isObject(input)) throw errors.invalidRequest('"input" must be an object')
  if (events !== undefined && !(Array.isArray(events) && events.length > 0 && events.every(e => WEBHOOK_EVENTS.includes(e as WebhookEvent)))) {
    throw errors.invalidRequest(`"${filterField}" must be a non-empty list of ${WEBHOOK_EVENTS.join(', ')}`)
  }
  if (stream !== undefined && typeof stream !== 'boolean') throw errors.invalidRequest('"stream" must be a boolean')
  return {
    ...(version !== undefined ? { version: version as string } : model !== undefined ? { model: model as string } : { deployment: deployment as string }),
    input,
    ...(events !== undefined ? { webhook_events_filter: [...new Set(events as WebhookEvent[])] } : {}),
    ...(stream !== undefined ? { stream } : {})
  }
}

/** `Prefer: wait[=n]` (n in 1..60 s, Replicate's range) and `Cancel-After: <duration>`. */
export function parseCreateHeaders (headers: FastifyRequest['headers']): CreateOptions {
  const o: CreateOptions = {}
  const prefer = headers.prefer
  if (typeof prefer === 'string' && prefer.trim() !== '') {
    const m = /^\s*wait(?:\s*=\s*(\d{1,2}))?\s*$/i.exec(prefer)
    if (m === null || (m[1] !== undefined && (Number(m[1]) < 1 || Number(m[1]) > 60))) {
      throw errors.invalidRequest('"Prefer" must be "wait" or "wait=<1-60>"')
    }
    o.waitS = m[1] !== undefined ? Number(m[1]) : 60
  }
  const cancelAfter = headers['cancel-after']
  if (typeof cancelAfter === 'string' && cancelAfter.trim() !== '') {
    const v = cancelAfter.trim()
    if (!/^(?:\d{1,6}(?:\.\d{1,3})?(?:ms|s|m|h))+$/.test(v)) throw errors.invalidRequest('"Cancel-After" must be a duration such as 90s, 5m or 1h30m')
    o.cancelAfter = v
  }
  return o
}

/** REPLICATE_MODELS names `owner/name` (any version of it), exact versions, or deployments. */
export function modelAllowed (allowed: readonly string[] | undefined, req: CreatePredictionRequest): boolean {
  if (allowed === undefined) return true
  if (req.deployment !== undefined) return allowed.includes(req.deployment)
  const ref = (req.model ?? req.version) as string
  const colon = ref.indexOf(':')
  return allowed.includes(ref) || (colon > 0 && (allowed.includes(ref.slice(0, colon)) || allowed.includes(ref.slice(colon + 1))))
}

/** PUBLIC_URL without a trailing slash; empty (relative URLs) when unset. */
export function publicBase (app: FastifyInstance): string {
  return (app.config.replicate.publicUrl ?? '').replace(/\/+$/, '')
}

const DATA_URI = /^data:([^;,]*)((?:;[^;,]*)*),/

export default async function predictionRoutes (app: FastifyInstance): Promise<void> {
  const svc = app.predictions
  const base = (): string => publicBase(app)
  const eventsUrl = (id: string): string => `${base()}/predictions/${id}/events`
  const view = (rec: PredictionRecord): Record<string, unknown> => publicView(rec, { ...svc.deps.frames, eventsUrl: eventsUrl(rec.id) })

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

  async function upstream<T> (request: FastifyRequest, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn()
    } catch (err) {
      throw asGatewayError(err, request.log)
    }
  }

  app.post('/predictions', async (request, reply) => {
    const claims = await app.auth.claims(request)
    requireConfigured()
    const req = parseCreateBody(request.body)
    const options = parseCreateHeaders(request.headers)
    if (!modelAllowed(app.config.replicate.models, req)) throw errors.forbiddenModel((req.model ?? req.version ?? req.deployment) as string)
    const { publicUrl, webhookSecret } = app.config.replicate
    if (publicUrl !== undefined && webhookSecret !== undefined) {
      req.webhook = `${base()}/webhooks/replicate`
      // Without a filter Replicate sends only output and completed webhooks: every event,
      // unless the caller narrowed it, so that webhooks can replace polling.
      req.webhook_events_filter ??= [...WEBHOOK_EVENTS]
    } else {
      delete req.webhook_events_filter
    }
    const rec = await upstream(request, () => svc.create(claims.sub, req, options))
    reply.code(201)
    return view(rec)
  })

  app.get('/predictions', async (request) => {
    const claims = await app.auth.claims(request)
    requireConfigured()
    const q = request.query as Record<string, unknown>
    const limitRaw = q.limit ?? '20'
    const limit = Number(limitRaw)
    if (typeof limitRaw !== 'string' || !/^\d{1,3}$/.test(limitRaw) || limit < 1 || limit > 100) throw errors.invalidRequest('"limit" must be an integer from 1 to 100')
    const after = q.after
    if (after !== undefined && !isPredictionId(after)) throw errors.invalidRequest('"after" must be a prediction id')
    const page = await svc.list(claims.sub, { after: after as string | undefined, limit })
    return {
      results: page.records.map(view),
      next: page.next === null ? null : `${base()}/predictions?limit=${limit}&after=${page.next}`
    }
  })

  app.get('/predictions/:id', async (request) => {
    const { id } = await owned(request)
    const rec = await upstream(request, () => svc.read(id))
    if (rec === null) throw errors.notFound('prediction')
    return view(rec)
  })

  app.get('/predictions/:id/output/:index', async (request, reply: FastifyReply) => {
    const { id } = await owned(request)
    const raw = (request.params as { index: string }).index
    if (!/^\d{1,6}$/.test(raw)) throw errors.notFound('output')
    const index = Number(raw)
    const rec = await svc.read(id)
    if (rec === null) throw errors.notFound('prediction')
    if (rec.dataRemoved === true) throw new GatewayError(410, 'output_removed', 'Replicate has removed this prediction\'s output')
    const items = Array.isArray(rec.output) ? rec.output : rec.output === null || rec.output === undefined ? [] : [rec.output]
    if (index >= items.length) throw errors.notFound('output')
    const item = items[index]
    reply.header('cache-control', 'private, max-age=3600')
    if (typeof item === 'string') {
      const m = DATA_URI.exec(item)
      if (m !== null) {
        const payload = item.slice(m[0].length)
        const b64 = m[2].split(';').includes('base64')
        const body = b64 ? Buffer.from(payload, 'base64') : Buffer.from(decodeURIComponent(payload), 'utf8')
        return await reply.type(m[1] !== '' ? m[1] : 'text/plain;charset=US-ASCII').send(body)
      }
      // A file Replicate hosts: the browser fetches it from there.
      if (/^https?:\/\//.test(item)) return await reply.redirect(item, 302)
      return await reply.type('text/plain; charset=utf-8').send(item)
    }
    return await reply.type('application/json; charset=utf-8').send(JSON.stringify(item))
  })

  app.post('/predictions/:id/cancel', async (request) => {
    const { id } = await owned(request)
    return view(await upstream(request, () => svc.cancel(id)))
  })

  app.get('/predictions/:id/events', async (request, reply) => {
    const { claims, id } = await owned(request, { ticket: true, query: true })
    const channel = keys.channel(id)
    const q = request.query as Record<string, unknown>
    const given = lastEventId(request)
    let prelude = ''
    let start: StreamStart
    let rec: PredictionRecord | null = null
    if (given !== null) {
      // A resuming client gets no snapshot: the replay after its cursor brings every state it
      // missed in order, and a snapshot first would show a newer state before older ones.
      start = { from: 'cursor', cursor: given }
    } else {
      // Resume from the bus head as it was BEFORE the record is read: whatever is published
      // in between is replayed after the prelude, so a joiner never misses a change.
      start = { from: 'ids', ids: [await app.bus.head(channel)] }
      rec = await svc.record(id)
      if (rec !== null) prelude = controlFrame('status', snapshotPayload(rec, svc.deps.frames))
    }
    if (rec !== null && isTerminal(rec.status)) {
      // Nothing more will come: the final state and the end, without holding a stream open.
      // Sent as a stream (chunked) like every other SSE answer, not as a sized body.
      reply.header('cache-control', 'no-cache').type('text/event-stream; charset=utf-8')
      return await reply.send(Readable.from([prelude + controlFrame('done', { id, status: rec.status })]))
    }
    await openStream(app, request, reply, { claims, channels: [channel], events: parseEvents(q.events), start, prelude })
    svc.watch(id, claims.sub)
    try {
      // `done` published while this stream attached came with the replay: end it here too.
      const doneId = await svc.doneId(id)
      if (doneId !== null) svc.endLocalAfter(id, doneId)
    } catch (err) {
      request.log.warn({ err, prediction: id }, 'prediction done check failed')
    }
  })
}
