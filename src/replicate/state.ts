// A prediction's state as the gateway keeps it, the rule that it never goes back, and the
// frames built from it. Webhooks arrive duplicated and out of order, polls race webhooks on
// other instances: every snapshot, whatever its source, passes through order() before it may
// replace the record.
import { parseProgress, type Progress } from './progress'
import { isPredictionId, isTerminal, STATUSES, type Prediction, type PredictionStatus } from './types'

/** The record keeps the logs up to this size (their end when longer); frames carry only what is new. */
export const LOG_KEEP = 1024 * 1024

export interface PredictionRecord {
  id: string
  status: PredictionStatus
  logs: string | null
  /** Length of the full logs, not of the kept part: what ordering compares and offsets count. */
  logsLength: number
  output: unknown
  error: unknown
  metrics?: Prediction['metrics']
  model?: string
  version?: string
  deployment?: string
  createdAt?: string
  startedAt?: string | null
  completedAt?: string | null
  dataRemoved?: boolean
  /** When this state was last confirmed by any source (ms): GET refreshes a stale one. */
  updatedAt: number
}

export interface StatusPayload {
  id: string
  status: PredictionStatus
  progress: Progress | null
  /** Log text appended since the previous frame, or (a prelude) the kept end of the logs. */
  logs?: string
  /** Where `logs` starts in the prediction's full logs. */
  logs_offset?: number
  output?: unknown
  /** Indexes of output items too large for a frame, replaced by the URL the gateway serves them at. */
  output_refs?: number[]
  error?: unknown
  metrics?: Prediction['metrics']
  model?: string
  version?: string
  created_at?: string
  started_at?: string | null
  completed_at?: string | null
  data_removed?: boolean
}

/** Store keys of one prediction; everything that must hold across instances lives under them. */
export const keys = {
  channel: (id: string) => `prediction:${id}`,
  owner: (id: string) => `prediction:${id}:owner`,
  state: (id: string) => `prediction:${id}:state`,
  /** the upstream stream URL, when Replicate gave one */
  stream: (id: string) => `prediction:${id}:stream`,
  /** the last upstream stream event forwarded, for a follower that takes over */
  streamCursor: (id: string) => `prediction:${id}:stream-cursor`,
  /** set once the upstream stream sent `done` */
  streamed: (id: string) => `prediction:${id}:streamed`,
  poller: (id: string) => `prediction:${id}:poller`,
  watched: (id: string) => `prediction:${id}:watched`,
  mutex: (id: string) => `prediction:${id}:mutex`,
  doneClaim: (id: string) => `prediction:${id}:done-claim`,
  /** the bus id of the published `done` */
  done: (id: string) => `prediction:${id}:done`,
  /** epoch ms of the last verified webhook: polling slows down while they arrive */
  webhookAt: (id: string) => `prediction:${id}:webhook-at`,
  /** epoch ms before which Replicate asked not to be called again (a long Retry-After) */
  retryAt: (id: string) => `prediction:${id}:retry-at`,
  /** the owner's predictions, newest first (JSON list of ids) */
  ownerIndex: (owner: string) => `predictions-of:${owner}`,
  ownerMutex: (owner: string) => `predictions-of:${owner}:mutex`
}

export function isSnapshot (x: unknown): x is Prediction {
  if (x === null || typeof x !== 'object') return false
  const p = x as Record<string, unknown>
  return isPredictionId(p.id) && STATUSES.includes(p.status as PredictionStatus) &&
    (p.logs === undefined || p.logs === null || typeof p.logs === 'string')
}

function rank (status: PredictionStatus): number {
  return isTerminal(status) ? 2 : status === 'processing' ? 1 : 0
}

function size (v: unknown): number {
  if (v === null || v === undefined) return 0
  if (Array.isArray(v)) return v.length
  return JSON.stringify(v)?.length ?? 0
}

export type Ordering = 'newer' | 'same' | 'older'

/**
 * Where a snapshot stands against the record. Status ranks starting < processing < terminal
 * and the first terminal status wins; a final record moves only to `data_removed`. Within
 * `processing` (and `starting`), logs and output only grow, so a shorter one is older.
 */
export function order (rec: PredictionRecord | null, p: Prediction): Ordering {
  if (rec === null) return 'newer'
  const a = rank(rec.status)
  const b = rank(p.status)
  if (a !== b) return b > a ? 'newer' : 'older'
  if (isTerminal(rec.status)) {
    if (p.status !== rec.status) return 'older'
    return p.data_removed === true && rec.dataRemoved !== true ? 'newer' : 'same'
  }
  const logs = p.logs?.length ?? 0
  if (logs !== rec.logsLength) return logs > rec.logsLength ? 'newer' : 'older'
  const out = size(p.output)
  const had = size(rec.output)
  if (out !== had) return out > had ? 'newer' : 'older'
  const same = JSON.stringify(p.output ?? null) === JSON.stringify(rec.output ?? null) &&
    JSON.stringify(p.error ?? null) === JSON.stringify(rec.error ?? null)
  return same ? 'same' : 'newer'
}

export function toRecord (p: Prediction, now: number, old: PredictionRecord | null = null): PredictionRecord {
  const logs = typeof p.logs === 'string' ? p.logs : null
  const removed = p.data_removed === true
  return {
    id: p.id,
    status: p.status,
    logs: logs !== null && logs.length > LOG_KEEP ? logs.slice(-LOG_KEEP) : logs,
    logsLength: logs?.length ?? 0,
    // Replicate nulls the output when it removes the data; a record keeps what it had only
    // as long as Replicate still serves it.
    output: removed ? null : (p.output ?? null),
    error: p.error ?? null,
    ...(p.metrics !== undefined ? { metrics: p.metrics } : {}),
    ...(p.model !== undefined ? { model: p.model } : {}),
    ...(p.version !== undefined ? { version: p.version } : {}),
    ...(old?.deployment !== undefined ? { deployment: old.deployment } : {}),
    createdAt: p.created_at,
    startedAt: p.started_at ?? null,
    completedAt: p.completed_at ?? null,
    ...(removed ? { dataRemoved: true } : {}),
    updatedAt: now
  }
}

/** Output items past this many bytes of JSON are served by the gateway instead of inlined. */
function leanOutput (output: unknown, budget: number, url: (index: number) => string): { output: unknown, refs?: number[] } {
  if (output === null || output === undefined) return { output }
  const whole = JSON.stringify(output).length
  if (whole <= budget) return { output }
  if (!Array.isArray(output)) return { output: url(0), refs: [0] }
  // Largest first, until the rest fits: small items (text, URLs) stay inline.
  const sizes = output.map((v, i) => ({ i, n: JSON.stringify(v ?? null).length }))
  const out = [...output]
  const refs: number[] = []
  let total = whole
  for (const { i, n } of sizes.sort((a, b) => b.n - a.n)) {
    if (total <= budget) break
    out[i] = url(i)
    total += JSON.stringify(out[i]).length - n
    refs.push(i)
  }
  return { output: out, refs: refs.sort((a, b) => a - b) }
}

export interface FrameOptions {
  /** the largest payload a frame may carry, in bytes of JSON */
  budget: number
  /** where the gateway serves output item `index` */
  outputUrl: (id: string, index: number) => string
}

function base (rec: PredictionRecord, o: FrameOptions): StatusPayload {
  const out: StatusPayload = { id: rec.id, status: rec.status, progress: parseProgress(rec.logs) }
  if (rec.output !== null && rec.output !== undefined) {
    // A quarter of the frame for the output leaves room for the logs and the rest.
    const lean = leanOutput(rec.output, Math.floor(o.budget / 4), i => o.outputUrl(rec.id, i))
    out.output = lean.output
    if (lean.refs !== undefined) out.output_refs = lean.refs
  }
  if (rec.error !== null && rec.error !== undefined) out.error = rec.error
  if (rec.metrics !== undefined) out.metrics = rec.metrics
  if (rec.model !== undefined) out.model = rec.model
  if (rec.version !== undefined) out.version = rec.version
  if (rec.createdAt !== undefined) out.created_at = rec.createdAt
  if (rec.startedAt !== undefined && rec.startedAt !== null) out.started_at = rec.startedAt
  if (rec.completedAt !== undefined && rec.completedAt !== null) out.completed_at = rec.completedAt
  if (rec.dataRemoved === true) out.data_removed = true
  return out
}

function withLogs (out: StatusPayload, text: string, offset: number, room: number): StatusPayload {
  if (text === '') return out
  // Too much new text for one frame: its end, at the offset where that end starts.
  const cut = text.length > room ? text.slice(-room) : text
  out.logs = cut
  out.logs_offset = offset + (text.length - cut.length)
  return out
}

/** The frame for a change from `old` to `rec`: the logs appended since `old`, with their offset. */
export function changePayload (rec: PredictionRecord, old: PredictionRecord | null, o: FrameOptions): StatusPayload {
  const out = base(rec, o)
  const from = old?.logsLength ?? 0
  const logs = rec.logs ?? ''
  const keptFrom = rec.logsLength - logs.length
  if (rec.logsLength <= from) return out
  const start = Math.max(from, keptFrom)
  return withLogs(out, logs.slice(start - keptFrom), start, Math.floor(o.budget / 2))
}

/** The frame a joiner starts from: the record with the end of its logs. */
export function snapshotPayload (rec: PredictionRecord, o: FrameOptions): StatusPayload {
  const logs = rec.logs ?? ''
  return withLogs(base(rec, o), logs, rec.logsLength - logs.length, Math.floor(o.budget / 2))
}

/** What GET /predictions/:id answers: the whole kept logs, outputs as in frames. */
export function publicView (rec: PredictionRecord, o: FrameOptions & { eventsUrl: string }): Record<string, unknown> {
  const view: Record<string, unknown> = { ...base(rec, o), logs: rec.logs ?? '', events_url: o.eventsUrl }
  if (rec.logs !== null && rec.logs.length < rec.logsLength) view.logs_offset = rec.logsLength - rec.logs.length
  view.created_at = rec.createdAt
  view.completed_at = rec.completedAt ?? null
  view.started_at = rec.startedAt ?? null
  if (rec.deployment !== undefined) view.deployment = rec.deployment
  return view
}
