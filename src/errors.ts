import type { MessageRejected } from './bus/validate'

// Every error the gateway answers. Routes throw these; the error handler in app.ts turns them
// into `{ error: code, message }` with the status, so clients can switch on `error`.
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
  invalidRequest: (why: string) => new GatewayError(400, 'invalid_request', why),
  tooManyChannels: (max: number) => new GatewayError(400, 'too_many_channels', `a stream may ask for at most ${max} channels`),
  userLimit: (max: number, retryAfterS: number) =>
    new GatewayError(429, 'too_many_connections', `at most ${max} streams per user on this instance`, { 'retry-after': String(retryAfterS) }),
  instanceFull: (retryAfterS: number) =>
    new GatewayError(503, 'instance_full', 'this instance holds its maximum number of streams', { 'retry-after': String(retryAfterS) }),
  draining: (retryAfterS: number) =>
    new GatewayError(503, 'draining', 'this instance is shutting down; reconnect', { 'retry-after': String(retryAfterS) }),
  busUnavailable: () => new GatewayError(503, 'bus_unavailable', 'the message bus is not connected', { 'retry-after': '2' }),
  notFound: (what: string) => new GatewayError(404, 'not_found', `${what} not found`),
  forbiddenModel: (model: string) => new GatewayError(403, 'forbidden_model', `model "${model}" is not allowed on this gateway`),
  notConfigured: (what: string) => new GatewayError(501, 'not_configured', `${what} is not configured on this gateway`),
  upstream: (status: number, code: string, message: string) => new GatewayError(status, code, message),
  /** The bus refused a message (core outcome): 413 when it is too large, else 400. */
  rejected: (r: MessageRejected) => r.reason === 'too_large'
    ? new GatewayError(413, 'message_too_large', r.message)
    : new GatewayError(400, r.reason, r.message)
}
