import type { ServerResponse } from 'node:http'
import { Refused, type Problem } from './outcome'

// Every error the gateway answers, and the one place that maps core's refusals (outcome.ts) to
// HTTP. Routes throw these; the error handler in app.ts turns them into `{ error: code,
// message }` with the status, so clients can switch on `error`; a stream that has already taken
// over its socket answers through `sendError`. docs/errors.md lists every code (a test checks).
export class GatewayError extends Error {
  readonly statusCode: number
  readonly code: string
  readonly headers?: Record<string, string>
  constructor (statusCode: number, code: string, message: string, headers?: Record<string, string>) {
    super(message)
    this.statusCode = statusCode
    this.code = code
    this.headers = headers
  }
}

export const errors = {
  unauthorized: (why: string) => new GatewayError(401, 'unauthorized', why),
  forbiddenChannel: (channel: string) =>
    new GatewayError(403, 'forbidden_channel', `the token does not allow channel "${channel}"`),
  publisherRequired: () => new GatewayError(403, 'forbidden', 'publishing needs a token with role "publisher"'),
  invalidChannel: (where: string, why: string) => new GatewayError(400, 'invalid_channel', `${where}: ${why}`),
  invalidMessage: (where: string, why: string) => new GatewayError(400, 'invalid_message', `${where}: ${why}`),
  messageTooLarge: (where: string, why: string) => new GatewayError(413, 'message_too_large', `${where}: ${why}`),
  invalidRequest: (why: string) => new GatewayError(400, 'invalid_request', why),
  tooManyChannels: (max: number) => new GatewayError(400, 'too_many_channels', `a stream may ask for at most ${max} channels`),
  userLimit: (max: number, retryAfterS: number) =>
    new GatewayError(429, 'too_many_connections', `at most ${max} streams per user on this instance`, { 'retry-after': String(retryAfterS) }),
  instanceFull: (retryAfterS: number) =>
    new GatewayError(503, 'instance_full', 'this instance holds its maximum number of streams', { 'retry-after': String(retryAfterS) }),
  draining: (retryAfterS: number) =>
    new GatewayError(503, 'draining', 'this instance is shutting down; reconnect', { 'retry-after': String(retryAfterS) }),
  busUnavailable: (why = 'the message bus is not connected') => new GatewayError(503, 'bus_unavailable', why, { 'retry-after': '2' }),
  notFound: (what: string) => new GatewayError(404, 'not_found', `${what} not found`),
  forbiddenModel: (model: string) => new GatewayError(403, 'forbidden_model', `model "${model}" is not allowed on this gateway`),
  notConfigured: (what: string) => new GatewayError(501, 'not_configured', `${what} is not configured on this gateway`),
  upstream: (status: number, code: string, message: string) => new GatewayError(status, code, message),
  noRoute: (method: string, path: string) => new GatewayError(404, 'not_found', `no route ${method} ${path}`),
  internal: (status = 500) => new GatewayError(status, 'internal_error', 'internal error'),
  payloadTooLarge: (message: string) => new GatewayError(413, 'payload_too_large', message),
  unsupportedMediaType: (status: number, message: string) => new GatewayError(status, 'unsupported_media_type', message),
  invalidJson: (status: number, message: string) => new GatewayError(status, 'invalid_json', message),
  badRequest: (status: number, message: string) => new GatewayError(status, 'bad_request', message)
}

/**
 * Fastify's own errors (body parsing, limits, anything thrown that is not a GatewayError) in the
 * same shape; a 5xx never shows its message, which may carry internals.
 */
export function frameworkError (err: { statusCode?: unknown, code?: unknown, message?: unknown }): GatewayError {
  const status = typeof err.statusCode === 'number' ? err.statusCode : 500
  const message = String(err.message)
  if (status >= 500) return errors.internal(status)
  if (status === 413) return errors.payloadTooLarge(message)
  if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return errors.unsupportedMediaType(status, message)
  if (/JSON/i.test(message) || err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY') return errors.invalidJson(status, message)
  return errors.badRequest(status, message)
}

/** Any error a route throws, as the gateway answers it (app.ts's error handler, the front door). */
export function toGatewayError (err: unknown): GatewayError {
  if (err instanceof Refused) return problemError(err.problem)
  if (err instanceof GatewayError) return err
  return frameworkError(err !== null && typeof err === 'object' ? err : {})
}

/** A failure that is not one of the gateway's own answers (a bug): worth an error line. */
export function isUnexpected (err: unknown, e: GatewayError): boolean {
  return e.statusCode >= 500 && !(err instanceof GatewayError || err instanceof Refused)
}

/** A stream refused with a status (counted in gateway_connections_rejected_total by code). */
export function isRejection (e: GatewayError): boolean {
  return (e.statusCode >= 400 && e.statusCode < 500) || e.statusCode === 503
}

/** The HTTP answer to a refusal of core. */
export function problemError (p: Problem): GatewayError {
  switch (p.code) {
    case 'invalid_message': return errors.invalidMessage(p.where, p.why)
    case 'invalid_channel': return errors.invalidChannel(p.where, p.why)
    case 'message_too_large': return errors.messageTooLarge(p.where, p.why)
    case 'forbidden_channel': return errors.forbiddenChannel(p.channel)
    case 'too_many_channels': return errors.tooManyChannels(p.max)
    case 'too_many_connections': return errors.userLimit(p.max, p.retryAfterS)
    case 'instance_full': return errors.instanceFull(p.retryAfterS)
    case 'draining': return errors.draining(p.retryAfterS)
    case 'bus_unavailable': return errors.busUnavailable(p.why)
  }
}

/** The value of an outcome, or its refusal thrown as the matching GatewayError. */
export function orThrow<T> (o: { ok: true, value: T } | { ok: false, problem: Problem }): T {
  if (!o.ok) throw problemError(o.problem)
  return o.value
}

/** What sendError writes to: node's response, or the front door's (src/http1/). */
export type ErrorSink = Pick<ServerResponse, 'headersSent'> & {
  writeHead (status: number, headers: Record<string, string>): unknown
  end (body: string): unknown
}

/**
 * Writes an error to a response the route has taken over (a hijacked SSE reply) when nothing
 * has been sent yet: the same status, headers and body as the error handler's.
 */
export function sendError (res: ErrorSink, err: GatewayError, extra?: Record<string, string>): void {
  if (res.headersSent) return
  res.writeHead(err.statusCode, { ...extra, ...err.headers, 'content-type': 'application/json; charset=utf-8' })
  res.end(JSON.stringify({ error: err.code, message: err.message }))
}
