import type { BusMessage } from '../bus/bus'

/**
 * What the hub tells a tracer, and all it knows of tracing: the OpenTelemetry SDK lives at the
 * edge (src/otel.ts), loaded only when traces are exported. With no tracer the hub pays one null
 * check per message. Times are `performance.now()` milliseconds.
 */
export interface DeliveryTracer {
  /**
   * `msg` reached this instance: received at `receivedAt`, framed by `framedAt`, queued for
   * `connections` local streams. Null when not sampled.
   */
  delivery (msg: BusMessage, receivedAt: number, framedAt: number, connections: number): DeliverySpan | null
}

export interface DeliverySpan {
  /** The flush that wrote the message ran from `start` to `end`; this ends the span. */
  written (start: number, end: number): void
}
