// A prediction's state as the gateway keeps it, and the rule that it never goes back.
// Webhooks arrive duplicated and out of order, polls race webhooks on other instances: every
// snapshot, whatever its source, passes through order() before it may replace the record.
import { parseProgress, type Progress } from './progress'
import { isTerminal, type Prediction, type PredictionStatus } from './types'

/** The record keeps only the end of long logs; progress and watchers need only the newest lines. */
export const LOG_TAIL = 64 * 1024

export const STATUSES: readonly PredictionStatus[] = ['starting', 'processing', 'succeeded', 'failed', 'canceled', 'aborted']

const ID = /^[a-z0-9]{1,64}$/i

export function isPredictionId (id: unknown): id is string {
  return typeof id === 'string' && ID.test(id)
}

export interface PredictionRecord {
  id: string
  status: PredictionStatus
  logs: string | null
  /** Length of the full logs, not of the kept tail: what ordering compares. */
  logsLength: number
  output: unknown
  error: unknown
  metrics?: Prediction['metrics']
  createdAt?: string
  completedAt?: string | null
  /** When this state was last confirmed by any source (ms): GET refreshes a stale one. */
  updatedAt: number
}

export interface StatusPayload {
  id: string
  status: PredictionStatus
  progress: Progress | null
  logs?: string
  output?: unknown
  error?: unknown
  metrics?: Prediction['metrics']
}

export const keys = {
  channel: (id: string) => `prediction:${id}`,
  statusKey: (id: string) => `prediction:${id}:status`,
  owner: (id: string) => `prediction:${id}:owner`,
  state: (id: string) => `prediction:${id}:state`,
  /** the upstream stream URL, present only when the creator asked for streaming */
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
  done: (id: string) => `prediction:${id}:done`
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
 * and the first terminal status wins. Within `processing` (and `starting`), logs and output
 * only grow, so a shorter one is an older snapshot.
 */
export function order (rec: PredictionRecord | null, p: Prediction): Ordering {
  if (rec === null) return 'newer'
  const a = rank(rec.status)
  const b = rank(p.status)
  if (a !== b) return b > a ? 'newer' : 'older'
  if (isTerminal(rec.status)) return p.status === rec.status ? 'same' : 'older'
  const logs = p.logs?.length ?? 0
  if (logs !== rec.logsLength) return logs > rec.logsLength ? 'newer' : 'older'
  const out = size(p.output)
  const had = size(rec.output)
  if (out !== had) return out > had ? 'newer' : 'older'
  const same = JSON.stringify(p.output ?? null) === JSON.stringify(rec.output ?? null) &&
    JSON.stringify(p.error ?? null) === JSON.stringify(rec.error ?? null)
  return same ? 'same' : 'newer'
}

export function toRecord (p: Prediction, now: number): PredictionRecord {
  const logs = typeof p.logs === 'string' ? p.logs : null
  return {
    id: p.id,
    status: p.status,
    logs: logs !== null && logs.length > LOG_TAIL ? logs.slice(-LOG_TAIL) : logs,
    logsLength: logs?.length ?? 0,
    output: p.output ?? null,
    error: p.error ?? null,
    ...(p.metrics !== undefined ? { metrics: p.metrics } : {}),
    createdAt: p.created_at,
    completedAt: p.completed_at ?? null,
    updatedAt: now
  }
}

export function statusPayload (rec: PredictionRecord): StatusPayload {
  const out: StatusPayload = { id: rec.id, status: rec.status, progress: parseProgress(rec.logs) }
  if (rec.logs !== null && rec.logs !== '') out.logs = rec.logs
  if (rec.output !== null && rec.output !== undefined) out.output = rec.output
  if (rec.error !== null && rec.error !== undefined) out.error = rec.error
  if (rec.metrics !== undefined) out.metrics = rec.metrics
  return out
}

/** What GET /predictions/:id answers. */
export function publicView (rec: PredictionRecord, eventsUrl: string): Record<string, unknown> {
  return { ...statusPayload(rec), created_at: rec.createdAt, completed_at: rec.completedAt, events_url: eventsUrl }
}
