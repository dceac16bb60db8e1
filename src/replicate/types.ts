// Replicate's wire shapes, as the HTTP API sends them. Our own rather than the `replicate`
// package's: its typings say `output?: any` and miss the nulls the API actually sends.

export type PredictionStatus = 'starting' | 'processing' | 'succeeded' | 'failed' | 'canceled' | 'aborted'

export type WebhookEvent = 'start' | 'output' | 'logs' | 'completed'

export const WEBHOOK_EVENTS: readonly WebhookEvent[] = ['start', 'output', 'logs', 'completed']

// `aborted` is terminal too (the prediction was stopped before it ran), which the client's
// wait() forgets, so every "are we done?" check goes through this.
const TERMINAL: ReadonlySet<PredictionStatus> = new Set(['succeeded', 'failed', 'canceled', 'aborted'])

export function isTerminal (status: string): boolean {
  return TERMINAL.has(status as PredictionStatus)
}

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
  input: Record<string, unknown>
  webhook?: string
  webhook_events_filter?: WebhookEvent[]
  stream?: boolean
}
