// Calls to Replicate through the official client, with our own retry policy and timeouts.
//
// The client's withAutomaticRetries ignores Retry-After (it reads it only from a thrown
// ApiError, which fetch never throws), sleeps ~0 ms between tries, and swallows *every*
// exception from fetch, retrying even a POST that may already have created a prediction.
// So each call gets a client whose fetch runs our whole retry loop and then settles: every
// later re-call by the client's loop replays the settled outcome without touching the network.
import Replicate from 'replicate'
import { backoffDelay as backoff, parseRetryAfter } from '../shared/backoff'
import { sleep as abortableSleep } from '../shared/sleep'
import { isPredictionId } from '../shared/prediction'
import type { CreateOptions, CreatePredictionRequest, Prediction } from './types'

export type UpstreamOp = 'create' | 'get' | 'cancel'
export type RetryReason = 'rate_limited' | 'server_error' | 'network_error' | 'timeout'

export interface RetryInfo {
  op: UpstreamOp
  /** the attempt that just failed, from 1 */
  attempt: number
  delayMs: number
  reason: RetryReason
  /** Replicate's status; absent for network errors and timeouts */
  status?: number
}

export type UpstreamErrorCode =
  | 'replicate_unauthorized' | 'replicate_payment_required' | 'replicate_forbidden'
  | 'replicate_not_found' | 'replicate_invalid_input' | 'replicate_rate_limited'
  | 'replicate_unavailable' | 'replicate_unreachable' | 'replicate_timeout' | 'replicate_error'

// What a caller of the gateway is told. Never Replicate's own text: it may name URLs, account
// details or the request as Replicate saw it (`detail` keeps that, for the logs).
const PUBLIC_MESSAGES: Record<UpstreamErrorCode, string> = {
  replicate_unauthorized: 'Replicate refused the gateway\'s credentials',
  replicate_payment_required: 'the Replicate account cannot pay for this prediction',
  replicate_forbidden: 'Replicate refused the request',
  replicate_not_found: 'Replicate has no such model, version, deployment or prediction',
  replicate_invalid_input: 'Replicate rejected the request as invalid',
  replicate_rate_limited: 'Replicate is rate limiting the gateway; retry later',
  replicate_unavailable: 'Replicate is unavailable',
  replicate_unreachable: 'Replicate could not be reached',
  replicate_timeout: 'Replicate did not answer in time',
  replicate_error: 'Replicate answered with an unexpected error'
}

/** Credentials out of a text bound for a log line: URL userinfo and bearer tokens. */
export function redactCredentials (text: string, secrets: readonly string[] = []): string {
  let out = text.replace(/\b([a-z][a-z0-9+.-]*:\/\/)[^/\s@]*@/gi, '$1[redacted]@')
    .replace(/\b(bearer|token)\s+[A-Za-z0-9._~+/=-]+/gi, '$1 [redacted]')
    .replace(/\br8_[A-Za-z0-9]+/g, '[redacted]')
  for (const s of secrets) if (s.length >= 4) out = out.split(s).join('[redacted]')
  return out
}

export class UpstreamError extends Error {
  /** Replicate's HTTP status; 0 when no response came back */
  readonly status: number
  readonly code: UpstreamErrorCode
  /** What went wrong in Replicate's or the network's words, credentials removed: for logs only. */
  readonly detail: string
  /** what to answer our own caller: Replicate refusing the gateway's token is not their 401 */
  readonly httpStatus: number
  readonly retryAfterMs?: number
  constructor (status: number, code: UpstreamErrorCode, detail: string, httpStatus: number, retryAfterMs?: number) {
    const clean = redactCredentials(detail)
    super(`replicate: ${clean}`)
    this.name = 'UpstreamError'
    this.status = status
    this.code = code
    this.detail = clean
    this.httpStatus = httpStatus
    this.retryAfterMs = retryAfterMs
  }

  /** The message for the gateway's caller: fixed per code. */
  get publicMessage (): string {
    return PUBLIC_MESSAGES[this.code]
  }
}

type Sleep = (ms: number, signal?: AbortSignal) => Promise<void>

export interface UpstreamTimeouts {
  /** until the response head arrives (connect, TLS, Replicate's queueing), per attempt */
  connectMs?: number
  /** one attempt in total, head and body, for get and cancel */
  getMs?: number
  /** one create attempt in total (a `Prefer: wait` adds its wait) */
  createMs?: number
}

export interface UpstreamOptions {
  /** defaults to https://api.replicate.com/v1 */
  baseUrl?: string
  token: string
  fetch?: typeof fetch
  sleep?: Sleep
  /** in [0, 1) */
  random?: () => number
  now?: () => number
  /** tries per call, the first included */
  maxAttempts?: number
  baseDelayMs?: number
  maxDelayMs?: number
  /** a Retry-After longer than this fails the call (with retryAfterMs) instead of holding it */
  maxRetryAfterMs?: number
  timeouts?: UpstreamTimeouts
  onRetry?: (info: RetryInfo) => void
  userAgent?: string
}

export interface CallOptions { signal?: AbortSignal }

export interface Upstream {
  create (req: CreatePredictionRequest, opts?: CallOptions & CreateOptions): Promise<Prediction>
  get (id: string, opts?: CallOptions): Promise<Prediction>
  cancel (id: string, opts?: CallOptions): Promise<Prediction>
}

export const DEFAULT_TIMEOUTS: Required<UpstreamTimeouts> = { connectMs: 5000, getMs: 10_000, createMs: 30_000 }

/** Exponential with "equal jitter" (the shared rule); `attempt` counts from 1 here. */
export function retryDelay (attempt: number, o: { baseMs: number, maxMs: number, random: () => number }): number {
  return Math.round(backoff(attempt - 1, { baseMs: o.baseMs, maxMs: o.maxMs, random: o.random, jitter: 'equal' }))
}

export { parseRetryAfter }

function parseBody (text: string): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(text)
    return v && typeof v === 'object' ? v : undefined
  } catch {
    return undefined
  }
}

/** The problem+json `detail` (or `title`) of an error body, else the body itself. */
export function problemDetail (text: string, status: number): string {
  const body = parseBody(text)
  const d = body?.detail ?? body?.title
  if (typeof d === 'string' && d) return d
  return text.trim().slice(0, 500) || `status ${status}`
}

const BY_STATUS: Record<number, [UpstreamErrorCode, number]> = {
  400: ['replicate_invalid_input', 400],
  401: ['replicate_unauthorized', 502],
  402: ['replicate_payment_required', 502],
  403: ['replicate_forbidden', 502],
  404: ['replicate_not_found', 404],
  422: ['replicate_invalid_input', 422]
}

/** The error for a Replicate answer with this status. */
export function upstreamErrorFor (status: number, detail: string, retryAfterMs?: number): UpstreamError {
  if (status === 429) return new UpstreamError(429, 'replicate_rate_limited', detail, 503, retryAfterMs)
  if (status >= 500) return new UpstreamError(status, 'replicate_unavailable', detail, 502)
  const [code, httpStatus] = BY_STATUS[status] ?? ['replicate_error', 502]
  return new UpstreamError(status, code, detail, httpStatus)
}

// The client has already read the body into its message:
//   `Request to <url> failed with status <n> <text>: <body>.`
function fromApiError (err: any): UpstreamError | undefined {
  if (err?.name !== 'ApiError') return undefined
  const m = /failed with status (\d+)[^:]*: ([\s\S]*)\.$/.exec(String(err.message))
  const status = Number(err.response?.status ?? m?.[1] ?? 0)
  return upstreamErrorFor(status, problemDetail(m?.[2] ?? '', status))
}

// Errors where the request provably never reached Replicate, so even a create may be retried.
const NOT_SENT = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'UND_ERR_CONNECT_TIMEOUT'])

const MODEL = /^[a-z0-9][\w.-]*\/[a-z0-9][\w.-]*$/i

function causeCode (err: any): string | undefined {
  return err?.cause?.code ?? err?.cause?.errors?.[0]?.code ?? err?.code
}

class AttemptTimeout extends Error {
  constructor (readonly phase: 'connect' | 'total', ms: number) {
    super(`no ${phase === 'connect' ? 'response head' : 'complete response'} within ${ms} ms`)
    this.name = 'AttemptTimeout'
  }
}

/**
 * One attempt with both deadlines: the head within `connectMs`, everything (the body read here,
 * so the client's later read cannot hang) within `totalMs`. The caller's signal still aborts it.
 */
async function timedFetch (f: typeof fetch, input: Parameters<typeof fetch>[0], init: RequestInit | undefined, connectMs: number, totalMs: number): Promise<Response> {
  const ac = new AbortController()
  const outer = init?.signal ?? undefined
  const onAbort = (): void => ac.abort(outer?.reason)
  if (outer?.aborted) throw outer.reason
  outer?.addEventListener('abort', onAbort, { once: true })
  let head = true
  const connectTimer = setTimeout(() => { if (head) ac.abort(new AttemptTimeout('connect', connectMs)) }, connectMs)
  const totalTimer = setTimeout(() => ac.abort(new AttemptTimeout('total', totalMs)), totalMs)
  try {
    const res = await f(input, { ...init, signal: ac.signal })
    head = false
    const body = await res.arrayBuffer()
    return new Response(res.status === 204 || res.status === 304 ? null : body, { status: res.status, statusText: res.statusText, headers: res.headers })
  } catch (err) {
    if (ac.signal.reason instanceof AttemptTimeout) throw ac.signal.reason
    throw err
  } finally {
    clearTimeout(connectTimer)
    clearTimeout(totalTimer)
    outer?.removeEventListener('abort', onAbort)
  }
}

export function createUpstream (opts: UpstreamOptions): Upstream {
  const {
    baseUrl, token, sleep = abortableSleep, random = Math.random, now = Date.now, onRetry,
    maxAttempts = 6, baseDelayMs = 1000, maxDelayMs = 30_000, maxRetryAfterMs = 60_000,
    userAgent = 'sse-gateway'
  } = opts
  const timeouts = { ...DEFAULT_TIMEOUTS, ...opts.timeouts }
  const realFetch = opts.fetch ?? globalThis.fetch

  function retryingFetch (op: UpstreamOp, extra: { headers?: Record<string, string>, totalMs: number }): typeof fetch {
    let settled: unknown
    const settle: (err: unknown) => never = err => { settled = err; throw err }

    return async (input, init) => {
      if (settled) throw settled
      const signal = init?.signal ?? undefined
      const sent: RequestInit = extra.headers === undefined ? { ...init } : { ...init, headers: { ...(init?.headers as Record<string, string>), ...extra.headers } }
      for (let attempt = 1; ; attempt++) {
        let reason: RetryReason
        let status: number | undefined
        let detail: string
        let retryAfterMs: number | undefined
        try {
          const res = await timedFetch(realFetch, input, sent, Math.min(timeouts.connectMs, extra.totalMs), extra.totalMs)
          // A create that hit a 5xx may have been created anyway: not ours to repeat.
          const retryable = res.status === 429 || (res.status >= 500 && op !== 'create')
          if (res.ok || !retryable) return res
          const text = await res.text()
          status = res.status
          detail = problemDetail(text, status)
          if (status === 429) {
            reason = 'rate_limited'
            const body = parseBody(text)
            retryAfterMs = parseRetryAfter(res.headers.get('retry-after'), now()) ??
              (typeof body?.retry_after === 'number' ? Math.round(body.retry_after * 1000) : undefined)
          } else {
            reason = 'server_error'
          }
        } catch (err) {
          if (signal?.aborted) settle(signal.reason ?? err)
          if (err instanceof AttemptTimeout) {
            // Like a 5xx: a create that timed out may exist, so only reads are tried again.
            if (op === 'create') settle(new UpstreamError(0, 'replicate_timeout', `create: ${err.message}; not retried`, 504))
            reason = 'timeout'
            detail = err.message
          } else {
            if (op === 'create' && !NOT_SENT.has(causeCode(err) ?? '')) {
              settle(new UpstreamError(0, 'replicate_unreachable', `create failed in flight (${causeCode(err) ?? String(err)}); not retried`, 502))
            }
            reason = 'network_error'
            detail = causeCode(err) ?? String(err)
          }
        }

        const delayMs = retryAfterMs ?? retryDelay(attempt, { baseMs: baseDelayMs, maxMs: maxDelayMs, random })
        if (attempt >= maxAttempts || (retryAfterMs ?? 0) > maxRetryAfterMs) {
          settle(status !== undefined
            ? upstreamErrorFor(status, detail, retryAfterMs)
            : reason === 'timeout'
              ? new UpstreamError(0, 'replicate_timeout', `timed out ${attempt} times: ${detail}`, 504)
              : new UpstreamError(0, 'replicate_unreachable', `unreachable after ${attempt} attempts: ${detail}`, 502))
        }
        onRetry?.({ op, attempt, delayMs, reason, status })
        await sleep(delayMs, signal)
        if (signal?.aborted) settle(signal.reason)
      }
    }
  }

  async function call (op: UpstreamOp, fn: (client: Replicate) => Promise<unknown>, extra: { headers?: Record<string, string>, totalMs?: number } = {}): Promise<Prediction> {
    // A client per call, because the retry state lives in its fetch; construction is cheap.
    const totalMs = extra.totalMs ?? (op === 'create' ? timeouts.createMs : timeouts.getMs)
    const client = new Replicate({ auth: token, baseUrl, userAgent, useFileOutput: false, fetch: retryingFetch(op, { headers: extra.headers, totalMs }) })
    try {
      return await fn(client) as Prediction
    } catch (err) {
      throw fromApiError(err) ?? err
    }
  }

  // Ids and model names go into the URL path: `..` there would aim our token at another route.
  const checkId = (id: string): void => {
    if (!isPredictionId(id)) throw new UpstreamError(0, 'replicate_not_found', `no prediction "${id}"`, 404)
  }

  return {
    async create (req, { signal, waitS, cancelAfter } = {}) {
      const { version, model, deployment, ...rest } = req
      if ([version, model, deployment].filter(v => v !== undefined && v !== '').length !== 1) {
        throw new UpstreamError(0, 'replicate_invalid_input', 'give exactly one of version, model or deployment', 400)
      }
      const headers: Record<string, string> = {}
      if (cancelAfter !== undefined) headers['cancel-after'] = cancelAfter
      const extra = {
        headers,
        // Replicate holds a `Prefer: wait` answer up to the wait: the deadline must allow it.
        totalMs: timeouts.createMs + (waitS ?? 0) * 1000
      }
      const wait = waitS !== undefined ? { wait: waitS } : {}
      if (deployment !== undefined) {
        if (!MODEL.test(deployment)) throw new UpstreamError(0, 'replicate_invalid_input', `deployment must be owner/name, not "${deployment}"`, 400)
        const [owner, name] = deployment.split('/')
        return call('create', c => c.deployments.predictions.create(owner, name, { ...rest, ...wait, signal } as any), extra)
      }
      // `owner/name:version` (the format of the client's run()) means that version.
      const ref = (version ?? model) as string
      const colon = ref.indexOf(':')
      if (colon >= 0 || version) {
        const v = colon >= 0 ? ref.slice(colon + 1) : ref
        return call('create', c => c.predictions.create({ ...rest, ...wait, version: v, signal } as any), extra)
      }
      if (!MODEL.test(ref)) throw new UpstreamError(0, 'replicate_invalid_input', `model must be owner/name, not "${ref}"`, 400)
      return call('create', c => c.predictions.create({ ...rest, ...wait, model: ref, signal } as any), extra)
    },
    async get (id, { signal } = {}) {
      checkId(id)
      return call('get', c => c.predictions.get(id, { signal }))
    },
    async cancel (id, { signal } = {}) {
      checkId(id)
      return call('cancel', c => c.predictions.cancel(id, { signal }))
    }
  }
}
