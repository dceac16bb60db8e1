// Prediction rules shared by the gateway, its client library and the fake Replicate: one list
// of statuses, one terminal set, one id pattern.

export type PredictionStatus = 'starting' | 'processing' | 'succeeded' | 'failed' | 'canceled' | 'aborted'

export const STATUSES: readonly PredictionStatus[] = ['starting', 'processing', 'succeeded', 'failed', 'canceled', 'aborted']

// `aborted` is terminal too (the prediction was stopped before it ran), which Replicate's own
// client forgets in wait(), so every "are we done?" check goes through this list.
export const TERMINAL_STATUSES: readonly PredictionStatus[] = ['succeeded', 'failed', 'canceled', 'aborted']

export function isTerminal (status: unknown): boolean {
  return TERMINAL_STATUSES.includes(status as PredictionStatus)
}

// Replicate's ids are lowercase base32; case-insensitive and bounded so that an id is safe in
// a URL path, a Redis key and a channel name alike.
const ID = /^[a-z0-9]{1,64}$/i

export function isPredictionId (id: unknown): id is string {
  return typeof id === 'string' && ID.test(id)
}
