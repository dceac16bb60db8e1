import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Attributes, type Context, type HrTime } from '@opentelemetry/api'
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node'
import { AlwaysOffSampler, AlwaysOnSampler, BatchSpanProcessor, ParentBasedSampler, TraceIdRatioBasedSampler, type Sampler, type SpanExporter } from '@opentelemetry/sdk-trace-base'
import { millisToHrTime } from '@opentelemetry/core'
import { resourceFromAttributes } from '@opentelemetry/resources'
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions'
import { OTLPTraceExporter as JsonExporter } from '@opentelemetry/exporter-trace-otlp-http'
import { OTLPTraceExporter as ProtoExporter } from '@opentelemetry/exporter-trace-otlp-proto'
import { isTraceparent, type BusMessage, type Envelope } from './bus/bus'
import type { OtelConfig } from './config'
import type { DeliverySpan, DeliveryTracer } from './delivery/tracing'
import { fromTraceparent, toTraceparent } from './trace-context'

// The OpenTelemetry SDK, loaded (by a dynamic import in app.ts) only when OTEL_EXPORTER_OTLP_*
// is set. One tracer provider per app, not the global one: nothing else in the process is
// instrumented by it, and two gateways in one process (the tests) export side by side.

/** Ids recorded on a publish span; a request may carry up to 1,000 messages. */
const MAX_IDS_ON_SPAN = 100
const SYSTEM = { 'messaging.system': 'sse-gateway' }

export interface PublishSpan {
  /** The bus accepted the messages with these ids. */
  end (ids: string[]): void
  fail (err: unknown): void
}

export interface Tracing {
  delivery: DeliveryTracer
  /**
   * A publish span, child of `parent` (a traceparent: the request's header or the first
   * envelope's), stamped into every envelope's `traceparent` so each instance's delivery span
   * continues the trace.
   */
  publish (messages: Envelope[], parent: string | undefined, source: 'http'): PublishSpan
  shutdown (): Promise<void>
}

function sampler (cfg: OtelConfig): Sampler {
  const ratio = new TraceIdRatioBasedSampler(cfg.samplerArg)
  switch (cfg.sampler) {
    case 'always_on': return new AlwaysOnSampler()
    case 'always_off': return new AlwaysOffSampler()
    case 'traceidratio': return ratio
    case 'parentbased_always_off': return new ParentBasedSampler({ root: new AlwaysOffSampler() })
    case 'parentbased_traceidratio': return new ParentBasedSampler({ root: ratio })
    default: return new ParentBasedSampler({ root: new AlwaysOnSampler() })
  }
}

function exporter (cfg: OtelConfig): SpanExporter {
  const opts = { url: cfg.url, headers: cfg.headers }
  return cfg.protocol === 'http/json' ? new JsonExporter(opts) : new ProtoExporter(opts)
}

/**
 * The hub's performance.now() as an absolute time. Given as HrTime the SDK takes it as is; a
 * number would be shifted by a per-span clock offset, and the phases would not line up.
 */
const ORIGIN = performance.timeOrigin
function at (perfMs: number): HrTime {
  return millisToHrTime(ORIGIN + perfMs)
}

function parentContext (tp: string | undefined): Context {
  return tp === undefined ? ROOT_CONTEXT : trace.setSpanContext(ROOT_CONTEXT, fromTraceparent(tp))
}

function packageVersion (): string {
  try {
    // src/ and dist/ both sit beside package.json.
    return JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')).version
  } catch {
    return 'unknown'
  }
}

export function startTracing (cfg: OtelConfig): Tracing {
  const version = packageVersion()
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: cfg.serviceName, [ATTR_SERVICE_VERSION]: version, 'service.instance.id': randomUUID() }),
    sampler: sampler(cfg),
    spanProcessors: [new BatchSpanProcessor(exporter(cfg), { scheduledDelayMillis: cfg.exportDelayMs })]
  })
  const tracer = provider.getTracer('sse-gateway', version)

  const delivery: DeliveryTracer = {
    delivery (msg: BusMessage, receivedAt: number, framedAt: number, connections: number): DeliverySpan | null {
      const received = at(receivedAt)
      const span = tracer.startSpan('deliver', { kind: SpanKind.CONSUMER, startTime: received }, parentContext(msg.traceparent))
      if (!span.isRecording()) return null
      // Set after the sampling decision (the standard samplers do not read attributes): an
      // unsampled message costs no attribute object.
      span.setAttributes({
        ...SYSTEM,
        'messaging.operation.type': 'process',
        'messaging.operation.name': 'deliver',
        'messaging.destination.name': msg.channel,
        'messaging.message.id': msg.id,
        'sse.event': msg.event,
        'sse.connections': connections
      })
      return {
        written (start: number, end: number): void {
          // The three phases as child spans, timed after the fact: nothing runs per connection.
          const ctx = trace.setSpan(ROOT_CONTEXT, span)
          const framed = at(framedAt)
          const flushStart = at(start)
          const flushEnd = at(end)
          tracer.startSpan('frame', { startTime: received }, ctx).end(framed)
          tracer.startSpan('batch wait', { startTime: framed }, ctx).end(flushStart)
          tracer.startSpan('write', { startTime: flushStart, attributes: { 'sse.connections': connections } }, ctx).end(flushEnd)
          span.end(flushEnd)
        }
      }
    }
  }

  return {
    delivery,
    publish (messages, parent, source) {
      const channels = new Set(messages.map(m => m.channel))
      const attributes: Attributes = {
        ...SYSTEM,
        'messaging.operation.type': 'send',
        'messaging.operation.name': 'publish',
        'messaging.batch.message_count': messages.length,
        'sse.source': source,
        ...(channels.size === 1 ? { 'messaging.destination.name': messages[0].channel } : {})
      }
      const span = tracer.startSpan('publish', { kind: SpanKind.PRODUCER, attributes }, parentContext(isTraceparent(parent) ? parent : undefined))
      // Unsampled spans still carry a context (flags 00): the instances then skip delivery too.
      const tp = toTraceparent(span.spanContext())
      if (tp !== undefined) for (const m of messages) m.traceparent = tp
      return {
        end (ids) {
          if (ids.length === 1) span.setAttribute('messaging.message.id', ids[0])
          span.setAttribute('sse.message_ids', ids.slice(0, MAX_IDS_ON_SPAN))
          span.end()
        },
        fail (err) {
          span.recordException(err as Error)
          span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message })
          span.end()
        }
      }
    },
    async shutdown () {
      await provider.shutdown()
    }
  }
}
