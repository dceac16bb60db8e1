// Replicate's wire shapes, as the HTTP API sends them. Our own rather than the `replicate`
// package's: its typings say `output?: any` and miss the nulls the API actually sends.
import type { PredictionStatus } from '../shared/prediction'

export { isTerminal, isPredictionId, STATUSES, TERMINAL_STATUSES, type PredictionStatus } from '../shared/prediction'

export type WebhookEvent = 'start' | 'output' | 'logs' | 'completed'

export const WEBHOOK_EVENTS: readonly WebhookEvent[] = ['start', 'output', 'logs', 'completed']

export interface Prediction {
  id: string
  model: string
  version: string
  input: Record<string, unknown>
  status: PredictionStatus
  logs: string | null
  output: unknown
  error: unknown
  data_removed?: boolean
  source?: 'api' | 'web'
  metrics?: { predict_time?: number, total_time?: number }
  webhook?: string
  webhook_events_filter?: WebhookEvent[]
  deployment?: string
  created_at: string
  started_at?: string | null
  completed_at?: string | null
  urls: { get: string, cancel: string, stream?: string, web?: string }
}

export interface CreatePredictionRequest {
  /** a version id, or `owner/name:version` */
  version?: string
  /** `owner/name` of an official model (Replicate picks the version) */
  model?: string
  /** `owner/name` of a deployment */
  deployment?: string
  input: Record<string, unknown>
  webhook?: string
  webhook_events_filter?: WebhookEvent[]
  stream?: boolean
}

/** Request options Replicate takes as headers on a create. */
export interface CreateOptions {
  /** `Prefer: wait=<s>`: Replicate holds the answer until the prediction ends or this passes */
  waitS?: number
  /** `Cancel-After: <duration>` (e.g. `90s`, `5m`): Replicate cancels a prediction still running then */
  cancelAfter?: string
}
