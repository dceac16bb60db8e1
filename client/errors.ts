import { parseRetryAfter } from './backoff'

/**
 * Every error the client reports. `code` is the gateway's `error` field when the gateway
 * answered one (`unauthorized`, `forbidden_channel`, `too_many_connections`, ...), otherwise one
 * of the client's own codes:
 * - `network`: the request failed or the stream broke
 * - `stream_ended`: the server ended the stream (the client resumes)
 * - `idle_timeout`: no bytes, not even a heartbeat, within `idleTimeoutMs`
 * - `http_<status>`: an HTTP error without a JSON body
 * - `bad_content_type`: a 200 that is not text/event-stream (a proxy's login page, say)
 * - `malformed_json`: an event's data looked like JSON but did not parse
 * - `token`: `getToken()` threw or returned nothing
 * - `callback`: one of your callbacks threw (the stream carries on)
 */
export class GatewayClientError extends Error {
  readonly code: string
  /** HTTP status, when the error is an HTTP answer. */
  readonly status?: number
  /** From `Retry-After`, when the gateway sent one. */
  readonly retryAfterMs?: number
  /** The offending text of a `malformed_json` error. */
  readonly raw?: string

  constructor (code: string, message: string, extra: { status?: number, retryAfterMs?: number, raw?: string, cause?: unknown } = {}) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause })
    this.name = 'GatewayClientError'
    this.code = code
    if (extra.status !== undefined) this.status = extra.status
    if (extra.retryAfterMs !== undefined) this.retryAfterMs = extra.retryAfterMs
    if (extra.raw !== undefined) this.raw = extra.raw
  }

  /** A structured-clone-safe copy (BroadcastChannel drops the fields of Error subclasses). */
  toJSON (): SerializedError {
    return { code: this.code, message: this.message, status: this.status, retryAfterMs: this.retryAfterMs, raw: this.raw }
  }

  static from (s: SerializedError): GatewayClientError {
    return new GatewayClientError(s.code, s.message, { status: s.status, retryAfterMs: s.retryAfterMs, raw: s.raw })
  }
}

export interface SerializedError {
  code: string
  message: string
  status?: number
  retryAfterMs?: number
  raw?: string
}

export function asClientError (err: unknown, code = 'network'): GatewayClientError {
  if (err instanceof GatewayClientError) return err
  const message = err instanceof Error ? err.message : String(err)
  return new GatewayClientError(code, message, { cause: err })
}

/** The `{ error, message }` body the gateway sends with every HTTP error. */
export async function errorFromResponse (res: Response): Promise<GatewayClientError> {
  let code = `http_${res.status}`
  let message = `HTTP ${res.status}`
  try {
    const body = JSON.parse(await res.text()) as { error?: unknown, message?: unknown }
    if (typeof body.error === 'string') code = body.error
    if (typeof body.message === 'string') message = body.message
  } catch {
    // not the gateway's JSON (a proxy's page, an empty body): keep the generic code
  }
  const retryAfterMs = parseRetryAfter(res.headers.get('retry-after'))
  return new GatewayClientError(code, message, { status: res.status, retryAfterMs })
}
