import type { SpanContext } from '@opentelemetry/api'

// W3C traceparent <-> OpenTelemetry span context, for the envelope's `traceparent` field
// (validated by isTraceparent in src/bus/bus.ts before it gets here). Types only: importing this
// loads no OpenTelemetry code.

export function toTraceparent (sc: SpanContext): string | undefined {
  if (!/^(?!0{32})[0-9a-f]{32}$/.test(sc.traceId) || !/^(?!0{16})[0-9a-f]{16}$/.test(sc.spanId)) return undefined
  return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, '0')}`
}

export function fromTraceparent (tp: string): SpanContext {
  return { traceId: tp.slice(3, 35), spanId: tp.slice(36, 52), traceFlags: parseInt(tp.slice(53, 55), 16), isRemote: true }
}
