import { connect } from './connect'
import { asClientError, errorFromResponse, GatewayClientError } from './errors'
import { reportUncaught } from './callbacks'
import { resolveUrl } from './stream'
import type { Connection, ConnectOptions, GatewayEvent } from './types'

export type PredictionStatus = 'starting' | 'processing' | 'succeeded' | 'failed' | 'canceled' | 'aborted'

export const TERMINAL_STATUSES: readonly string[] = ['succeeded', 'failed', 'canceled', 'aborted']

export interface PredictionProgress {
  percentage: number
  current: number
  total: number
}

export interface PredictionState {
  id: string
  /** Undefined until the first `status` event. */
  status?: PredictionStatus
  progress?: PredictionProgress
  logs?: string
  output?: unknown
  error?: unknown
  metrics?: Record<string, unknown>
  /** The `data` of every `event: output` (streamed model output), in arrival order. */
  streamed: unknown[]
  /** True once `event: done` arrived. */
  done: boolean
}

export interface PredictionUpdate {
  type: 'status' | 'output' | 'done'
  /** The event's parsed payload. */
  data: unknown
  /** The prediction after this update (a new object each time). */
  state: PredictionState
}

/** Options shared by the prediction helpers' plain HTTP calls. */
export interface GatewayRequestOptions {
  /** The gateway's base URL, e.g. `https://gw.example.com` (default: the page's origin). */
  baseUrl?: string
  token?: string
  getToken?: () => string | Promise<string>
  fetch?: typeof fetch
  credentials?: RequestCredentials
  headers?: Record<string, string>
  signal?: AbortSignal
}

export type WatchPredictionOptions =
  Omit<ConnectOptions, 'url' | 'channels' | 'events' | 'onEvent' | 'shareAcrossTabs' | 'shareKey' | 'eventTypes' | 'json'> & {
    /** The gateway's base URL (default: the page's origin). */
    baseUrl?: string
    /** The stream URL, e.g. `events_url` from `createPrediction`; overrides the one built from `baseUrl`. */
    url?: string
    onUpdate?: (update: PredictionUpdate) => void
    /** Aborting it is `close()`. */
    signal?: AbortSignal
  }

export interface PredictionWatch extends AsyncIterableIterator<PredictionUpdate> {
  /** Stops watching (does not cancel the prediction). */
  close: () => void
  /** The latest state. */
  readonly state: PredictionState
  readonly connection: Connection
  /** Resolves with the final state at `done`; rejects if the stream closes first. */
  readonly finished: Promise<PredictionState>
}

function endpoint (baseUrl: string | undefined, path: string): string {
  const base = resolveUrl(baseUrl ?? '/')
  if (!base.pathname.endsWith('/')) base.pathname += '/'
  return new URL(path, base).toString()
}

/**
 * Streams a prediction's updates: iterate it (`for await`) or pass `onUpdate`. The stream ends
 * after `event: done`; a stream that closes for good before that (404: not yours, 401, retries
 * exhausted) makes the iterator throw.
 */
export function watchPrediction (id: string, options: WatchPredictionOptions = {}): PredictionWatch {
  const { baseUrl, url, onUpdate, signal, ...rest } = options
  const eventsUrl = url !== undefined
    ? (baseUrl !== undefined ? new URL(url, resolveUrl(baseUrl)).toString() : url)
    : endpoint(baseUrl, `predictions/${encodeURIComponent(id)}/events`)

  let state: PredictionState = { id, streamed: [], done: false }
  const queue: PredictionUpdate[] = []
  const waiters: Array<{ resolve: (r: IteratorResult<PredictionUpdate>) => void, reject: (e: unknown) => void }> = []
  let ended = false
  let failure: GatewayClientError | null = null
  let resolveFinished!: (s: PredictionState) => void
  let rejectFinished!: (e: unknown) => void
  const finished = new Promise<PredictionState>((resolve, reject) => { resolveFinished = resolve; rejectFinished = reject })
  // Callers that only iterate must not get an unhandled rejection from a promise they ignore.
  finished.catch(() => {})

  const flush = (): void => {
    while (waiters.length > 0) {
      const w = waiters[0]
      if (queue.length > 0) {
        waiters.shift()
        w.resolve({ value: queue.shift() as PredictionUpdate, done: false })
      } else if (failure !== null) {
        waiters.shift()
        w.reject(failure)
      } else if (ended) {
        waiters.shift()
        w.resolve({ value: undefined, done: true })
      } else {
        return
      }
    }
  }

  const finish = (err: GatewayClientError | null): void => {
    if (ended) return
    ended = true
    if (err !== null) {
      failure = err
      rejectFinished(err)
    } else if (state.done) {
      resolveFinished(state)
    } else {
      rejectFinished(new GatewayClientError('closed', 'stopped watching before the prediction finished'))
    }
    signal?.removeEventListener('abort', onAbort)
    flush()
  }

  const push = (type: PredictionUpdate['type'], data: unknown): void => {
    const update: PredictionUpdate = { type, data, state }
    queue.push(update)
    if (onUpdate !== undefined) {
      try {
        onUpdate(update)
      } catch (err) {
        if (options.onError === undefined) {
          reportUncaught(err)
        } else {
          try {
            options.onError(asClientError(err, 'callback'))
          } catch (e) {
            reportUncaught(e)
          }
        }
      }
    }
    flush()
  }

  const onEvent = (event: GatewayEvent): void => {
    if (ended || event.error !== undefined) return // malformed: reported by connect(), state kept
    const d = event.data
    if (event.type === 'status' && d !== null && typeof d === 'object') {
      const s = d as Partial<PredictionState> & { status?: PredictionStatus }
      state = { ...state }
      for (const k of ['status', 'progress', 'logs', 'output', 'error', 'metrics'] as const) {
        if (s[k] !== undefined) (state as unknown as Record<string, unknown>)[k] = s[k]
      }
      push('status', d)
    } else if (event.type === 'output') {
      state = { ...state, streamed: [...state.streamed, d] }
      push('output', d)
    } else if (event.type === 'done') {
      state = { ...state, done: true }
      push('done', d)
      connection.close()
    }
  }

  const connection = connect({
    ...rest,
    url: eventsUrl,
    eventTypes: ['status', 'output', 'done'],
    onEvent,
    onStatus: (status, info) => {
      options.onStatus?.(status, info)
      if (status !== 'closed') return
      if (info.reason === 'client' || state.done) finish(null)
      else finish(info.error ?? new GatewayClientError(info.reason ?? 'closed', `prediction stream closed: ${info.reason ?? 'unknown'}`))
    }
  })

  const onAbort = (): void => connection.close()
  if (signal !== undefined) {
    if (signal.aborted) connection.close()
    else signal.addEventListener('abort', onAbort)
  }

  const watch: PredictionWatch = {
    close: () => connection.close(),
    get state () { return state },
    connection,
    finished,
    next: () => new Promise<IteratorResult<PredictionUpdate>>((resolve, reject) => {
      waiters.push({ resolve, reject })
      flush()
    }),
    return: (value?: unknown) => {
      connection.close()
      queue.length = 0
      return Promise.resolve({ value: value as PredictionUpdate, done: true })
    },
    [Symbol.asyncIterator] () { return watch }
  }
  return watch
}

async function request (method: string, path: string, body: unknown, o: GatewayRequestOptions): Promise<unknown> {
  const headers: Record<string, string> = { ...o.headers, accept: 'application/json' }
  const token = o.getToken !== undefined ? await o.getToken() : o.token
  if (token !== undefined) headers.authorization = `Bearer ${token}`
  if (body !== undefined) headers['content-type'] = 'application/json'
  const init: RequestInit = { method, headers }
  if (body !== undefined) init.body = JSON.stringify(body)
  if (o.credentials !== undefined) init.credentials = o.credentials
  if (o.signal !== undefined) init.signal = o.signal
  let res: Response
  try {
    res = await (o.fetch ?? globalThis.fetch)(endpoint(o.baseUrl, path), init)
  } catch (err) {
    throw asClientError(err)
  }
  if (!res.ok) throw await errorFromResponse(res)
  const text = await res.text()
  return text === '' ? undefined : JSON.parse(text)
}

export interface CreatePredictionInput {
  /** A model version id, or `model` (`owner/name`): one of the two. */
  version?: string
  model?: string
  input: Record<string, unknown>
  /** Ask for streamed output (`event: output`). */
  stream?: boolean
}

export interface CreatedPrediction {
  id: string
  status: PredictionStatus
  /** The SSE URL to pass to `watchPrediction` as `url`. */
  events_url: string
  [key: string]: unknown
}

/** `POST /predictions`; throws `GatewayClientError` with the gateway's code on refusal. */
export async function createPrediction (body: CreatePredictionInput, options: GatewayRequestOptions = {}): Promise<CreatedPrediction> {
  return await request('POST', 'predictions', body, options) as CreatedPrediction
}

/** `POST /predictions/:id/cancel`. */
export async function cancelPrediction (id: string, options: GatewayRequestOptions = {}): Promise<unknown> {
  return await request('POST', `predictions/${encodeURIComponent(id)}/cancel`, undefined, options)
}
