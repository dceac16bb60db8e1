// sse-gateway/react: React (>= 18) hooks over the client library. See client/README.md.
//
// Everything from the core comes through '../index' so the build can keep it external: the
// published react.js / react.mjs then reuse index.js / index.mjs (one copy of the code, one
// GatewayClientError class for `instanceof`), and the core never imports React.
export { useEventStream, type EventStreamState, type EventStreamStatus, type UseEventStreamOptions } from './event-stream'
export {
  usePrediction, type PredictionHookStatus, type PredictionSnapshot, type UsePredictionOptions, type UsePredictionResult
} from './prediction'
