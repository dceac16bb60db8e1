// The HTTP side of a stream: admission as a status code, taking the reply over, the SSE
// response head. What flows on it afterwards is the hub's (src/delivery/).
import type { ServerResponse } from 'node:http'
import type { Http2ServerResponse } from 'node:http2'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Claims } from '../auth/plugin'
import { Connection, type ResponseSink } from '../delivery/connection'
import { channelSetHash } from '../delivery/cursor'
import { startFrom, type StreamStart } from '../delivery/hub'
import { retryFrame } from '../delivery/sse'
import { errors, problemError, sendError } from '../errors'

export interface StreamSpec {
  claims: Claims
  channels: string[]
  events: Set<string> | null
  /** Where the stream starts; default: the client's Last-Event-ID (header or `lastEventId`). */
  start?: StreamStart
  /** Frames written before history and live (e.g. a prediction's latest state); they carry no id. */
  prelude?: string
}

/**
 * A stream request as the stream code reads it: fastify's request, or the head the front
 * door parsed off the socket itself (src/http1/front-door.ts).
 */
export interface StreamRequest {
  id: string
  method: string
  url: string
  headers: Record<string, string | string[] | undefined>
  query: unknown
  cookies?: Record<string, string | undefined>
  log: StreamLog
}

/** The request logger's lines a stream writes (fastify's request.log, or the front door's). */
export interface StreamLog {
  info (o: object, msg: string): void
  warn (o: object, msg: string): void
  error (o: object, msg: string): void
}

/** The client's cursor: the Last-Event-ID header, else the `lastEventId` query parameter. */
export function lastEventId (request: StreamRequest): string | null {
  const q = request.query as Record<string, unknown>
  const header = request.headers['last-event-id']
  return typeof header === 'string' && header.length > 0
    ? header
    : typeof q.lastEventId === 'string' && q.lastEventId.length > 0 ? q.lastEventId : null
}

/** The SSE head, beside whatever the edge adds (CORS). */
export const SSE_HEADERS: Readonly<Record<string, string>> = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache',
  'x-accel-buffering': 'no'
}

/** The response a stream takes over once admitted, and how its 200 head is written. */
export interface TakenResponse {
  res: ServerResponse | Http2ServerResponse | ResponseSink
  /** Writes the 200 head (node sends it with the first write). */
  writeHead: () => void
}

/** Turns an authorised fastify request into an SSE stream (see startStream). */
export async function openStream (app: FastifyInstance, request: FastifyRequest, reply: FastifyReply, spec: StreamSpec): Promise<void> {
  await startStream(app, request, spec, () => {
    reply.hijack()
    const res = reply.raw
    const headers: Record<string, string> = { ...(reply.getHeaders() as Record<string, string>), ...SSE_HEADERS }
    // HTTP/2 forbids connection-specific headers (RFC 9113 8.2.2); its streams persist anyway.
    if (request.raw.httpVersionMajor < 2) headers.connection = 'keep-alive'
    return {
      res,
      writeHead: () => {
        res.writeHead(200, headers)
        // The gateway batches by itself; Nagle would only add delay on top of the window.
        request.raw.socket.setNoDelay(true)
      }
    }
  })
}

/**
 * Admits a stream and runs it. Everything that can fail with a status code (auth, channels,
 * limits) must have been checked before `take`: once it is called the answer is 200.
 */
export async function startStream (app: FastifyInstance, request: StreamRequest, spec: StreamSpec, take: () => TakenResponse): Promise<void> {
  const { hub, config } = app
  const refusal = await hub.admit(spec.claims.sub)
  if (refusal !== null) throw problemError(refusal)
  const start = spec.start ?? startFrom(lastEventId(request))
  const { res, writeHead } = take()
  // The 200 goes out only once the subscriptions are live: a client that sees the stream
  // open may rely on every later publish reaching it.
  // Node sends the head with the first write: the hub writes these frames with the stream's
  // first output, so a new stream costs one socket write.
  const begin = (): string => {
    writeHead()
    return retryFrame(config.retryMs) + ': connected\n\n' + (spec.prelude ?? '')
  }

  const conn = new Connection({
    res,
    user: spec.claims.sub,
    jti: spec.claims.jti,
    channels: spec.channels,
    hash: channelSetHash(spec.channels),
    events: spec.events,
    maxBufferedBytes: config.maxBufferedBytes,
    immediate: hub.immediate,
    metrics: app.metrics,
    onClose: hub.onClose,
    reqId: request.id
  })
  if (spec.claims.exp !== undefined) hub.expireAt(conn, spec.claims.exp * 1000)
  request.log.info({ user: spec.claims.sub, channels: spec.channels.length, resume: start.from === 'cursor' }, 'stream opened')
  try {
    await hub.attach(conn, start, begin)
  } catch (err) {
    request.log.warn({ err }, 'stream sync failed')
    sendError(res as ServerResponse, errors.busUnavailable('could not subscribe the stream; retry'))
    conn.close('error')
  }
}

export function parseEvents (raw: unknown): Set<string> | null {
  if (typeof raw !== 'string' && !Array.isArray(raw)) return null
  const names = (Array.isArray(raw) ? raw.join(',') : raw).split(',').map(s => s.trim()).filter(Boolean)
  return names.length > 0 ? new Set(names) : null
}

export function asList (raw: unknown): string[] {
  if (raw === undefined) return []
  return Array.isArray(raw) ? raw.map(String) : [String(raw)]
}
