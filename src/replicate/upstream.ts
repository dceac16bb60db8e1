// Calls to Replicate through the official client, with our own retry policy.
//
// The client's withAutomaticRetries ignores Retry-After (it reads it only from a thrown
// ApiError, which fetch never throws), sleeps ~0 ms between tries, and swallows *every*
// exception from fetch, retrying even a POST that may already have created a prediction.
// So each call gets a client whose fetch runs our whole retry loop and then settles: every
// later re-call by the client's loop replays the settled outcome without touching the network.
import Replicate from 'replicate'
import type { CreatePredictionRequest, Prediction } from './types'

export type UpstreamOp = 'create' | 'get' | 'cancel'
export type RetryReason = 'rate_limited' | 'server_error' | 'network_error'

export interface RetryInfo {
  op: UpstreamOp
  /** the attempt that just failed, from 1 */
  attempt: number
  delayMs: number
  reason: RetryReason
  /** Replicate's status; absent for network errors */
  status?: number
}

export type UpstreamErrorCode =
  | 'replicate_unauthorized' | 'replicate_payment_required' | 'replicate_forbidden'
  | 'replicate_not_found' | 'replicate_invalid_input' | 'replicate_rate_limited'
  | 'replicate_unavailable' | 'replicate_unreachable' | 'replicate_error'

export class UpstreamError extends Error {
  /** Replicate's HTTP status; 0 when no response came back */
  readonly status: number
  readonly code: UpstreamErrorCode
  readonly detail: string
  /** what to answer our own caller: Replicate refusing the gateway's token is not their 401 */
  readonly httpStatus: number
  readonly retryAfterMs?: number
  constructor (status: number, code: UpstreamErrorCode, detail: string, httpStatus: number, retryAfterMs?: number) {
    super(`replicate: ${detail}`)
    this.name = 'UpstreamError'
    this.status = status
    this.code = code
    this.detail = detail
    this.httpStatus = httpStatus
    this.retryAfterMs = retryAfterMs
  }
}

type Sleep = (ms: number, signal?: AbortSignal) => Promise<void>

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
  onRetry?: (info: RetryInfo) => void
  userAgent?: string
}

export interface CallOptions { signal?: AbortSignal }

export interface Upstream {
  create (req: CreatePredictionRequest, opts?: CallOptions): Promise<Prediction>
  get (id: string, opts?: CallOptions): Promise<Prediction>
  cancel (id: string, opts?: CallOptions): Promise<Prediction>
}

export const defaultSleep: Sleep = (ms, signal) => new Promise((resolve, reject) => {
  if (signal?.aborted) return reject(signal.reason)
  const done = (): void => { signal?.removeEventListener('abort', abort); resolve() }
  const abort = (): void => { clearTimeout(timer); reject(signal?.reason) }
  const timer = setTimeout(done, ms)
  signal?.addEventListener('abort', abort, { once: true })
})

/** Exponential with "equal jitter": half the step is fixed so a storm never retries at once. */
export function backoffDelay (attempt: number, o: { baseMs: number, maxMs: number, random: () => number }): number {
  const step = Math.min(o.maxMs, o.baseMs * 2 ** (attempt - 1))
  return Math.round(step / 2 + o.random() * step / 2)
}

/** Retry-After as seconds or an HTTP date; undefined when absent or unreadable. */
export function parseRetryAfter (value: string | null | undefined, nowMs: number): number | undefined {
  if (!value) return undefined
  const v = value.trim()
  if (/^\d+(\.\d+)?$/.test(v)) return Math.round(Number(v) * 1000)
  const at = Date.parse(v)
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs)
}

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

const ID = /^[a-z0-9]+$/i
const MODEL = /^[a-z0-9][\w.-]*\/[a-z0-9][\w.-]*$/i

function causeCode (err: any): string | undefined {
  return err?.cause?.code ?? err?.cause?.errors?.[0]?.code ?? err?.code
}

function isAbort (err: any): boolean {
  return err?.name === 'AbortError' || err?.name === 'TimeoutError'
}

export function createUpstream (opts: UpstreamOptions): Upstream {
  const {
    baseUrl, token, sleep = defaultSleep, random = Math.random, now = Date.now, onRetry,
    maxAttempts = 6, baseDelayMs = 1000, maxDelayMs = 30_000, maxRetryAfterMs = 60_000,
    userAgent = 'sse-gateway'
  } = opts
  const realFetch = opts.fetch ?? globalThis.fetch

  function retryingFetch (op: UpstreamOp): typeof fetch {
    let settled: unknown
    const settle: (err: unknown) => never = err => { settled = err; throw err }

    return async (input, init) => {
      if (settled) throw settled
      const signal = init?.signal ?? undefined
      for (let attempt = 1; ; attempt++) {
        let reason: RetryReason
        let status: number | undefined
        let detail: string
        let retryAfterMs: number | undefined
        try {
          const res = await realFetch(input, init)
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
          if (isAbort(err) || signal?.aborted) settle(err)
          if (op === 'create' && !NOT_SENT.has(causeCode(err) ?? '')) {
            settle(new UpstreamError(0, 'replicate_unreachable', `create failed in flight (${causeCode(err) ?? String(err)}); not retried`, 502))
          }
          reason = 'network_error'
          detail = causeCode(err) ?? String(err)
        }

        const delayMs = retryAfterMs ?? backoffDelay(attempt, { baseMs: baseDelayMs, maxMs: maxDelayMs, random })
        if (attempt >= maxAttempts || (retryAfterMs ?? 0) > maxRetryAfterMs) {
          settle(status === undefined
            ? new UpstreamError(0, 'replicate_unreachable', `unreachable after ${attempt} attempts: ${detail}`, 502)
            : upstreamErrorFor(status, detail, retryAfterMs))
        }
        onRetry?.({ op, attempt, delayMs, reason, status })
        try {
          await sleep(delayMs, signal)
        } catch (err) {
          settle(err)
        }
      }
    }
  }

  async function call (op: UpstreamOp, fn: (client: Replicate) => Promise<unknown>): Promise<Prediction> {
    // A client per call, because the retry state lives in its fetch; construction is cheap.
    const client = new Replicate({ auth: token, baseUrl, userAgent, useFileOutput: false, fetch: retryingFetch(op) })
    try {
      return await fn(client) as Prediction
    } catch (err) {
      throw fromApiError(err) ?? err
    }
  }

  // Ids and model names go into the URL path: `..` there would aim our token at another route.
  const checkId = (id: string): void => {
    if (!ID.test(id)) throw new UpstreamError(0, 'replicate_not_found', `no prediction "${id}"`, 404)
  }

  return {
    async create (req, { signal } = {}) {
      const { version, model, ...rest } = req
      if (!version === !model) throw new UpstreamError(0, 'replicate_invalid_input', 'give exactly one of version or model', 400)
      // `owner/name:version` (the format of the client's run()) means that version.
      const ref = (version ?? model) as string
      const colon = ref.indexOf(':')
      if (colon >= 0 || version) {
        const v = colon >= 0 ? ref.slice(colon + 1) : ref
        return call('create', c => c.predictions.create({ ...rest, version: v, signal }))
      }
      if (!MODEL.test(ref)) throw new UpstreamError(0, 'replicate_invalid_input', `model must be owner/name, not "${ref}"`, 400)
      return call('create', c => c.predictions.create({ ...rest, model: ref, signal }))
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
