// sse-gateway/client: a dependency-free client for the gateway's SSE streams, for browsers and
// Node 20. See client/README.md.
export { connect } from './connect'
export { SseParser, type SseMessage, type SseParserHandlers } from './parser'
export { backoffDelay, parseRetryAfter, type BackoffOptions, type Jitter } from './backoff'
export { GatewayClientError, type SerializedError } from './errors'
export { parseData } from './stream'
export { defaultShareKey } from './share'
export {
  watchPrediction, createPrediction, cancelPrediction, appendLogs, TERMINAL_STATUSES,
  type PredictionStatus, type PredictionProgress, type PredictionState, type PredictionUpdate,
  type PredictionWatch, type WatchPredictionOptions, type GatewayRequestOptions,
  type CreatePredictionInput, type CreatedPrediction
} from './prediction'
export type {
  ConnectOptions, Connection, ConnectionStatus, CloseReason, StatusInfo, GatewayEvent,
  LockManagerLike, BroadcastChannelLike, EventSourceLike, EventSourceConstructor
} from './types'
