// sse-gateway/react: React (>= 18) hooks over the client library. See client/README.md.
//
// Everything from the core comes through './index' so the build can keep it external: the
// published react.js / react.mjs then reuse index.js / index.mjs (one copy of the code, one
// GatewayClientError class for `instanceof`), and the core never imports React.
import { useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState, useSyncExternalStore } from 'react'
import {
  cancelPrediction, connect, createPrediction, defaultShareKey, GatewayClientError, watchPrediction,
  type Connection, type ConnectionStatus, type ConnectOptions, type CreatedPrediction, type CreatePredictionInput,
  type GatewayEvent, type GatewayRequestOptions, type PredictionProgress, type PredictionState,
  type PredictionUpdate, type PredictionWatch, type WatchPredictionOptions
} from './index'

// ---------------------------------------------------------------------------------------------
// Shared helpers

/** How long a stream whose last subscriber left stays open for a new one (StrictMode's
 * mount → unmount → mount, a route change that unmounts and remounts). */
const CLOSE_DELAY_MS = 100

// useLayoutEffect warns during server rendering; effects do not run there anyway.
const useIsomorphicLayoutEffect = typeof document !== 'undefined' ? useLayoutEffect : useEffect

function toClientError (err: unknown, code: string): GatewayClientError {
  if (err instanceof GatewayClientError) return err
  return new GatewayClientError(code, err instanceof Error ? err.message : String(err), { cause: err })
}

function reportUncaught (err: unknown): void {
  const report = (globalThis as { reportError?: (e: unknown) => void }).reportError
  if (typeof report === 'function') report(err)
  else console.error(err)
}

/**
 * useSyncExternalStore with field tracking: the returned object's getters record which fields
 * the component read, and a store change re-renders the component only when one of those
 * changed. A component that shows `status` does not re-render for every event.
 */
function useTrackedStore<S extends object> (
  subscribe: (notify: () => void) => () => void,
  read: () => S,
  readServer: () => S
): S {
  const tracked = useRef<Set<keyof S>>(new Set()).current
  const last = useRef<S | null>(null)
  const getSnapshot = useCallback((): S => {
    const next = read()
    const prev = last.current
    if (prev !== null && prev !== next) {
      let same = true
      for (const f of tracked) {
        if (!Object.is(prev[f], next[f])) { same = false; break }
      }
      if (same) return prev
    }
    last.current = next
    return next
  }, [read, tracked])
  const snap = useSyncExternalStore(subscribe, getSnapshot, readServer)
  return useMemo(() => {
    // Fields tracked when `snap` was chosen are current in it; a field read for the first time
    // may have changed since (nobody was watching it), so it comes from the store itself.
    const fresh = new Set(tracked)
    const seen = new Map<keyof S, unknown>()
    const view = {} as S
    for (const f of Object.keys(snap) as Array<keyof S>) {
      Object.defineProperty(view, f, {
        enumerable: true,
        get: () => {
          if (!seen.has(f)) {
            tracked.add(f)
            seen.set(f, fresh.has(f) ? snap[f] : read()[f])
          }
          return seen.get(f)
        }
      })
    }
    return view
  }, [snap, read, tracked])
}

// ---------------------------------------------------------------------------------------------
// useEventStream

export type EventStreamStatus = 'idle' | ConnectionStatus

export interface EventStreamState<T = unknown> {
  /** `idle` while `enabled` is false, then `connecting` → `open` → `retrying` … → `closed`. */
  status: EventStreamStatus
  /** The newest well-formed event (a malformed one goes to `error`), `null` before the first. */
  lastEvent: GatewayEvent<T> | null
  /**
   * The newest problem: a malformed payload (`malformed_json`, the stream stays open), a
   * throwing `onEvent` (`callback`), the cause of a retry, or what closed the stream for good
   * (`unauthorized`, `forbidden_channel`, ...). Cleared when the stream (re)opens.
   */
  error: GatewayClientError | null
}

export interface UseEventStreamOptions<T = unknown> extends Omit<ConnectOptions, 'onEvent' | 'onStatus' | 'onError'> {
  /** Default true. While false, nothing is opened and `status` is `idle`. */
  enabled?: boolean
  /**
   * Called for every event, malformed ones included (with `event.error`). Use it to keep a list:
   * `lastEvent` only holds the newest, and React may render once for several events.
   */
  onEvent?: (event: GatewayEvent<T>) => void
  /**
   * Who the stream belongs to when `getToken` is used: streams with different keys are never
   * shared. Default: one identity per page, the usual case of one signed-in user (with `token`,
   * the token itself is the identity).
   */
  tokenKey?: string
}

interface Subscriber {
  notify: () => void
  options: { current: UseEventStreamOptions<any> }
}

const IDLE_STREAM: EventStreamState<any> = Object.freeze({ status: 'idle', lastEvent: null, error: null })
const CONNECTING_STREAM: EventStreamState<any> = Object.freeze({ status: 'connecting', lastEvent: null, error: null })

function uniqueSorted (list: readonly string[] | undefined): string[] {
  return [...new Set(list ?? [])].sort()
}

function streamKey (o: UseEventStreamOptions<any>): string {
  let where: string
  try {
    const page = (globalThis as { location?: { href?: string } }).location?.href
    where = defaultShareKey({ url: o.url, channels: uniqueSorted(o.channels), events: uniqueSorted(o.events) }) + new URL(o.url, page).search
  } catch {
    // A URL that cannot be resolved here: connect() reports it as the stream's error.
    where = `${o.url}|${uniqueSorted(o.channels).join(',')}|${uniqueSorted(o.events).join(',')}`
  }
  const who = o.tokenKey !== undefined ? `key:${o.tokenKey}` : o.token !== undefined ? `token:${o.token}` : o.getToken !== undefined ? 'getToken' : 'anonymous'
  return [where, o.mode ?? 'fetch', o.shareAcrossTabs === true ? 'tabs' : 'tab', who].join('|')
}

/** One real stream, shared by every mounted component that asked for the same key. */
class SharedStream {
  snapshot: EventStreamState<any> = CONNECTING_STREAM
  readonly subscribers = new Set<Subscriber>()
  private conn: Connection | null = null
  private closeTimer: ReturnType<typeof setTimeout> | null = null
  // The options of the component that opened the stream; getToken follows the newest subscriber.
  private opener: { current: UseEventStreamOptions<any> } | null = null

  constructor (readonly key: string) {}

  add (sub: Subscriber): void {
    const wasEmpty = this.subscribers.size === 0
    this.subscribers.add(sub)
    if (this.closeTimer !== null) {
      clearTimeout(this.closeTimer)
      this.closeTimer = null
    }
    // A stream that ended for good (401, retries exhausted) gets a fresh try when the
    // components come back, not while some are still showing why it ended.
    if (this.conn === null || (wasEmpty && this.conn.status === 'closed')) this.open(sub.options)
  }

  remove (sub: Subscriber): void {
    if (!this.subscribers.delete(sub) || this.subscribers.size > 0 || this.closeTimer !== null) return
    this.closeTimer = setTimeout(() => {
      this.closeTimer = null
      if (this.subscribers.size > 0) return
      streams.delete(this.key)
      const conn = this.conn
      this.conn = null
      conn?.close()
    }, CLOSE_DELAY_MS)
  }

  private getToken = async (): Promise<string> => {
    let source: UseEventStreamOptions<any> | undefined
    for (const s of this.subscribers) if (s.options.current.getToken !== undefined) source = s.options.current
    source ??= this.opener?.current
    const fn = source?.getToken
    if (fn === undefined) throw new GatewayClientError('token', 'getToken is gone')
    return await fn()
  }

  private open (ref: { current: UseEventStreamOptions<any> }): void {
    this.opener = ref
    const { enabled: _enabled, onEvent: _onEvent, tokenKey: _tokenKey, getToken, ...rest } = ref.current
    const previous = this.conn
    this.conn = null
    previous?.close()
    if (this.snapshot.status === 'closed') this.set({ status: 'connecting', error: null })
    const options: ConnectOptions = {
      ...rest,
      onEvent: (event) => this.event(event),
      onStatus: (status, info) => {
        if (status === 'open') this.set({ status, error: null })
        else this.set(info.error !== undefined ? { status, error: info.error } : { status })
      },
      onError: (error) => this.set({ error })
    }
    if (getToken !== undefined) options.getToken = this.getToken
    try {
      this.conn = connect(options)
    } catch (err) { // no fetch / EventSource here: reported, never thrown into React
      this.set({ status: 'closed', error: toClientError(err, 'network') })
    }
  }

  private event (event: GatewayEvent): void {
    if (event.error === undefined) this.set({ lastEvent: event })
    // onError already reported a malformed payload; the list-keepers still see the event.
    for (const s of [...this.subscribers]) {
      const fn = s.options.current.onEvent
      if (fn === undefined) continue
      try {
        fn(event)
      } catch (err) {
        this.set({ error: toClientError(err, 'callback') })
        reportUncaught(err)
      }
    }
  }

  private set (patch: Partial<EventStreamState<any>>): void {
    const cur = this.snapshot
    const next = { ...cur, ...patch }
    if (next.status === cur.status && next.lastEvent === cur.lastEvent && next.error === cur.error) return
    this.snapshot = Object.freeze(next)
    for (const s of [...this.subscribers]) s.notify()
  }
}

const streams = new Map<string, SharedStream>()

/**
 * Subscribes the component to a gateway stream. Components asking for the same stream (url,
 * channels and events in any order, the same token or `tokenKey`) share one connection, closed
 * shortly after the last of them unmounts; StrictMode's double mount opens one. The other
 * `connect()` options (`maxRetries`, `mode`, ...) come from the component that opened it.
 * `getToken` is called before every connection attempt (the latest one rendered by the most
 * recently mounted component that passes one), so a stream ended by `auth-expired` comes back
 * with a fresh token.
 */
export function useEventStream<T = unknown> (options: UseEventStreamOptions<T>): EventStreamState<T> {
  const enabled = options.enabled ?? true
  const key = enabled ? streamKey(options) : null
  const ref = useRef<UseEventStreamOptions<any>>(options)
  useIsomorphicLayoutEffect(() => { ref.current = options })

  const subscribe = useCallback((notify: () => void): () => void => {
    if (key === null) return () => {}
    let stream = streams.get(key)
    if (stream === undefined) {
      stream = new SharedStream(key)
      streams.set(key, stream)
    }
    const sub: Subscriber = { notify, options: ref }
    const s = stream
    s.add(sub)
    return () => s.remove(sub)
  }, [key])
  const read = useCallback((): EventStreamState<any> => {
    if (key === null) return IDLE_STREAM
    return streams.get(key)?.snapshot ?? CONNECTING_STREAM
  }, [key])
  const readServer = useCallback((): EventStreamState<any> => key === null ? IDLE_STREAM : CONNECTING_STREAM, [key])
  return useTrackedStore(subscribe, read, readServer) as EventStreamState<T>
}

// ---------------------------------------------------------------------------------------------
// usePrediction

export type PredictionHookStatus = 'idle' | 'starting' | 'processing' | 'succeeded' | 'failed' | 'canceled'

export interface PredictionSnapshot {
  /** `aborted` (Replicate gave up on it) is reported as `failed` with `error.code === 'aborted'`. */
  status: PredictionHookStatus
  /** The prediction's id once `POST /predictions` answered. */
  id: string | null
  /** `percentage` is 0..1, from the model's progress bar in its logs; `null` until there is one. */
  progress: PredictionProgress | null
  logs: string
  /** The prediction's output as the gateway last reported it (partial while it runs). */
  output: unknown
  /** The `event: output` chunks of a streaming model, in order. */
  streamed: unknown[]
  /**
   * Why it failed: the gateway's refusal (`forbidden_model`, `unauthorized`, `not_configured`,
   * ...), `prediction_failed` (the model's error in `message`), `aborted`, a watch that ended
   * for good; or a refused cancel (the status is then kept).
   */
  error: GatewayClientError | null
  /** Everything the stream said, status `aborted` included; `null` before the prediction exists. */
  prediction: PredictionState | null
}

export interface UsePredictionResult extends PredictionSnapshot {
  /**
   * Creates a prediction and watches it. Resolves with its id, or `null` when it was refused
   * (then `status` is `failed` and `error` says why); it never rejects. Starting again stops
   * watching the previous prediction without canceling it.
   */
  start: (input: Record<string, unknown>, overrides?: Partial<Omit<CreatePredictionInput, 'input'>>) => Promise<string | null>
  /** Cancels the current prediction (also one still being created). Never rejects. */
  cancel: () => Promise<void>
  /** Stops watching and goes back to `idle` (does not cancel). */
  reset: () => void
}

export type UsePredictionOptions = Omit<WatchPredictionOptions, 'url' | 'signal' | 'lastEventId'> & Partial<Omit<CreatePredictionInput, 'input'>> & {
  /** Cancel a running prediction when the component unmounts. Default false: it only stops watching. */
  cancelOnUnmount?: boolean
}

const IDLE_PREDICTION: PredictionSnapshot = Object.freeze({
  status: 'idle', id: null, progress: null, logs: '', output: undefined, streamed: [], error: null, prediction: null
})

const FINAL = new Set<PredictionHookStatus>(['succeeded', 'failed', 'canceled'])
const RANK: Record<PredictionHookStatus, number> = { idle: 0, starting: 1, processing: 2, succeeded: 3, failed: 3, canceled: 3 }

function sameJson (a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false
  try {
    return JSON.stringify(a) === JSON.stringify(b)
  } catch {
    return false
  }
}

function describeError (error: unknown): string {
  if (typeof error === 'string' && error !== '') return error
  if (error !== null && typeof error === 'object') {
    const detail = (error as { detail?: unknown, message?: unknown }).detail ?? (error as { message?: unknown }).message
    if (typeof detail === 'string') return detail
    try { return JSON.stringify(error) } catch { /* fall through */ }
  }
  return 'the prediction failed'
}

class PredictionController {
  snapshot: PredictionSnapshot = IDLE_PREDICTION
  options: UsePredictionOptions
  private readonly listeners = new Set<() => void>()
  private mounted = false
  private generation = 0
  private watch: PredictionWatch | null = null
  private eventsUrl: string | undefined
  private cancelWanted = false

  constructor (options: UsePredictionOptions) {
    this.options = options
  }

  subscribe = (notify: () => void): () => void => {
    this.listeners.add(notify)
    return () => { this.listeners.delete(notify) }
  }

  read = (): PredictionSnapshot => this.snapshot
  readServer = (): PredictionSnapshot => IDLE_PREDICTION

  mount (): void {
    this.mounted = true
    // Back after an unmount (StrictMode, a remount): pick the running prediction up again.
    const { id, status } = this.snapshot
    if (id !== null && this.watch === null && !FINAL.has(status)) this.follow(id, this.generation)
  }

  unmount (): void {
    this.mounted = false
    if (this.options.cancelOnUnmount === true && this.running()) void this.cancel()
    this.stopWatching()
  }

  start = async (input: Record<string, unknown>, overrides: Partial<Omit<CreatePredictionInput, 'input'>> = {}): Promise<string | null> => {
    const gen = ++this.generation
    this.stopWatching()
    this.cancelWanted = false
    this.eventsUrl = undefined
    this.set({ ...IDLE_PREDICTION, status: 'starting' })
    const o = this.options
    const body: CreatePredictionInput = { input }
    const version = overrides.version ?? (overrides.model === undefined ? o.version : undefined)
    const model = overrides.model ?? (overrides.version === undefined ? o.model : undefined)
    if (version !== undefined) body.version = version
    if (model !== undefined) body.model = model
    const stream = overrides.stream ?? o.stream
    if (stream !== undefined) body.stream = stream
    let created: CreatedPrediction
    try {
      created = await createPrediction(body, this.requestOptions())
    } catch (err) {
      if (gen === this.generation) this.set({ status: 'failed', error: toClientError(err, 'network') })
      return null
    }
    if (gen !== this.generation) return created.id // superseded by another start() or reset()
    this.eventsUrl = created.events_url
    const prediction: PredictionState = { id: created.id, status: created.status, streamed: [], done: false }
    this.apply(prediction, gen)
    if (this.cancelWanted) void this.cancel()
    if (this.mounted && this.watch === null && !FINAL.has(this.snapshot.status)) this.follow(created.id, gen)
    return created.id
  }

  cancel = async (): Promise<void> => {
    const { id } = this.snapshot
    if (!this.running()) return
    if (id === null) { // still being created: cancel as soon as it has an id
      this.cancelWanted = true
      return
    }
    this.cancelWanted = false
    const gen = this.generation
    let answer: unknown
    try {
      answer = await cancelPrediction(id, this.requestOptions())
    } catch (err) {
      if (gen === this.generation && this.snapshot.id === id) this.set({ error: toClientError(err, 'network') })
      return
    }
    // The stream reports the end too; the answer covers a component that is not watching.
    const s = (answer as { status?: unknown } | undefined)?.status
    if (gen === this.generation && (s === 'canceled' || s === 'succeeded' || s === 'failed' || s === 'aborted') && !FINAL.has(this.snapshot.status)) {
      this.apply({ ...(this.snapshot.prediction ?? { id, streamed: [], done: false }), status: s }, gen)
    }
  }

  reset = (): void => {
    this.generation++
    this.stopWatching()
    this.cancelWanted = false
    this.eventsUrl = undefined
    this.set(IDLE_PREDICTION)
  }

  private running (): boolean {
    const s = this.snapshot.status
    return s === 'starting' || s === 'processing'
  }

  private requestOptions (): GatewayRequestOptions {
    const o = this.options
    const r: GatewayRequestOptions = {}
    if (o.baseUrl !== undefined) r.baseUrl = o.baseUrl
    if (o.token !== undefined) r.token = o.token
    if (o.getToken !== undefined) r.getToken = async () => await (this.options.getToken ?? (() => o.getToken!()))()
    if (o.fetch !== undefined) r.fetch = o.fetch
    if (o.credentials !== undefined) r.credentials = o.credentials
    if (o.headers !== undefined) r.headers = o.headers
    return r
  }

  private follow (id: string, gen: number): void {
    const {
      cancelOnUnmount: _c, model: _m, version: _v, stream: _s, input: _i, webhook_events_filter: _w,
      onUpdate: _u, getToken, ...rest
    } = this.options as UsePredictionOptions & { input?: unknown, webhook_events_filter?: unknown }
    const watchOptions: WatchPredictionOptions = {
      ...rest,
      onUpdate: (u: PredictionUpdate) => {
        if (gen !== this.generation || this.watch !== watch) return
        this.apply(u.state, gen)
        const cb = this.options.onUpdate
        if (cb !== undefined) {
          try { cb(u) } catch (err) { reportUncaught(err) }
        }
      }
    }
    if (this.eventsUrl !== undefined) watchOptions.url = this.eventsUrl
    if (getToken !== undefined) watchOptions.getToken = async () => await (this.options.getToken ?? getToken)()
    let watch: PredictionWatch
    try {
      watch = watchPrediction(id, watchOptions)
    } catch (err) { // no fetch, a bad URL: reported, never thrown into React
      this.set({ status: 'failed', error: toClientError(err, 'network') })
      return
    }
    this.watch = watch
    watch.finished.then(() => {
      if (this.watch === watch) this.watch = null
    }, (err: unknown) => {
      if (this.watch !== watch) return // we stopped watching ourselves
      this.watch = null
      if (gen === this.generation && !FINAL.has(this.snapshot.status)) this.set({ status: 'failed', error: toClientError(err, 'closed') })
    })
  }

  private stopWatching (): void {
    const w = this.watch
    this.watch = null
    w?.close()
  }

  private apply (state: PredictionState, gen: number): void {
    if (gen !== this.generation) return
    const cur = this.snapshot
    const raw = state.status
    let status: PredictionHookStatus = cur.status
    let error = cur.error
    if (raw === 'aborted') {
      status = 'failed'
      error = new GatewayClientError('aborted', state.error !== undefined && state.error !== null ? describeError(state.error) : 'the prediction was aborted')
    } else if (raw === 'failed') {
      status = 'failed'
      if (cur.status !== 'failed') error = new GatewayClientError('prediction_failed', describeError(state.error))
    } else if (raw !== undefined) {
      // A status never goes back: a late `processing` cannot undo `canceled`.
      if (RANK[raw] > RANK[cur.status]) status = raw
    }
    const progress = state.progress ?? null
    this.set({
      status,
      error,
      id: state.id,
      progress: progress !== null && cur.progress !== null && sameJson(progress, cur.progress) ? cur.progress : progress,
      logs: state.logs ?? cur.logs,
      output: sameJson(state.output, cur.output) ? cur.output : state.output,
      streamed: state.streamed.length === cur.streamed.length ? cur.streamed : state.streamed,
      prediction: state
    })
  }

  private set (patch: Partial<PredictionSnapshot>): void {
    const cur = this.snapshot
    const next = { ...cur, ...patch }
    if ((Object.keys(next) as Array<keyof PredictionSnapshot>).every((k) => Object.is(next[k], cur[k]))) return
    this.snapshot = Object.freeze(next)
    for (const l of [...this.listeners]) l()
  }
}

/**
 * Runs a prediction through the gateway: `start(input)` creates it (`POST /predictions`) and
 * watches its events; `cancel()` cancels it. Refusals and failures land in `error`, never in
 * a throw. Unmounting stops watching; the prediction runs on unless `cancelOnUnmount`.
 */
export function usePrediction (options: UsePredictionOptions = {}): UsePredictionResult {
  const [ctl] = useState(() => new PredictionController(options))
  useIsomorphicLayoutEffect(() => { ctl.options = options })
  useEffect(() => {
    ctl.mount()
    return () => ctl.unmount()
  }, [ctl])
  const view = useTrackedStore(ctl.subscribe, ctl.read, ctl.readServer)
  return useMemo(() => Object.defineProperties({ start: ctl.start, cancel: ctl.cancel, reset: ctl.reset }, Object.getOwnPropertyDescriptors(view)) as UsePredictionResult, [view, ctl])
}
