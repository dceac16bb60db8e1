// The one spec SSE parser lives in src/shared/ so the gateway's Replicate stream follower reads
// upstream streams with the same rules the browser client uses.
export { SseParser, type SseMessage, type SseParserHandlers } from '../src/shared/sse-parser'
