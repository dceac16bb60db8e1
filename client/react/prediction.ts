// usePrediction: create, watch and cancel one prediction at a time from a component.
import { useEffect, useMemo, useState } from 'react'
import {
  cancelPrediction, createPrediction, GatewayClientError, watchPrediction,
  type CreatedPrediction, type CreatePredictionInput, type GatewayRequestOptions, type PredictionProgress,
  type PredictionState, type PredictionUpdate, type PredictionWatch, type WatchPredictionOptions
} from '../index'
import { reportUncaught, toClientError, useIsomorphicLayoutEffect, useTrackedStore } from './shared'

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
