import t, { type Test } from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { randomBytes } from 'node:crypto'
import { loadConfig } from '../src/config'
import { build, publisherToken, RawStream, REDIS_URL, sign, uniquePrefix, waitFor, type Gateway } from './helper'

// Traces from publish to socket write, received by an OTLP collector inside the test (an HTTP
// server that decodes the export). Two gateway instances on one Redis: a publish on A,
// delivered on B, is one trace.

interface Span {
  traceId: string
  spanId: string
  parentSpanId: string
  name: string
  kind: number
  start: bigint
  end: bigint
  attrs: Record<string, unknown>
  instance: string
}

function attrValue (v: any): unknown {
  if (v === undefined || v === null) return undefined
  if ('stringValue' in v) return v.stringValue
  if ('intValue' in v) return Number(v.intValue)
  if ('doubleValue' in v) return v.doubleValue
  if ('boolValue' in v) return v.boolValue
  if ('arrayValue' in v) return (v.arrayValue.values ?? []).map(attrValue)
  return undefined
}

function attrs (list: any[] | undefined): Record<string, unknown> {
  return Object.fromEntries((list ?? []).map(a => [a.key, attrValue(a.value)]))
}

/** An OTLP/HTTP traces endpoint: keeps every request, decodes http/json exports. */
class Collector {
  readonly server: http.Server
  readonly requests: Array<{ path: string, contentType: string, body: Buffer }> = []
  readonly spans: Span[] = []

  constructor () {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        const body = Buffer.concat(chunks)
        const contentType = req.headers['content-type'] ?? ''
        this.requests.push({ path: req.url ?? '', contentType, body })
        if (contentType.startsWith('application/json')) this.decode(JSON.parse(body.toString('utf8')))
        res.writeHead(200, { 'content-type': contentType.startsWith('application/json') ? 'application/json' : 'application/x-protobuf' })
        res.end(contentType.startsWith('application/json') ? '{}' : '')
      })
    })
  }

  private decode (doc: any): void {
    for (const rs of doc.resourceSpans ?? []) {
      const instance = String(attrs(rs.resource?.attributes)['service.instance.id'])
      for (const ss of rs.scopeSpans ?? []) {
        for (const s of ss.spans ?? []) {
          this.spans.push({
            traceId: s.traceId,
            spanId: s.spanId,
            parentSpanId: s.parentSpanId ?? '',
            name: s.name,
            kind: s.kind,
            start: BigInt(s.startTimeUnixNano),
            end: BigInt(s.endTimeUnixNano),
            attrs: attrs(s.attributes),
            instance
          })
        }
      }
    }
  }

  async listen (): Promise<string> {
    await new Promise<void>(resolve => this.server.listen(0, '127.0.0.1', resolve))
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`
  }

  trace (traceId: string): Span[] {
    return this.spans.filter(s => s.traceId === traceId)
  }
}

const hex = (bytes: number): string => randomBytes(bytes).toString('hex')
const userToken = (): string => sign({ sub: 'reader', channels: ['topic:*'] })

async function collector (t: Test): Promise<{ c: Collector, url: string }> {
  const c = new Collector()
  const url = await c.listen()
  t.teardown(() => new Promise(resolve => c.server.close(resolve)))
  return { c, url }
}

async function openStream (gw: Gateway, channel: string): Promise<RawStream> {
  const s = new RawStream(gw.port, `/events?channel=${channel}`, { Authorization: `Bearer ${userToken()}` })
  await waitFor(() => s.frames().some(f => f.id !== undefined), 10000, 'stream head')
  return s
}

async function publishOn (gw: Gateway, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number, body: any }> {
  const res = await fetch(`${gw.url}/publish`, {
    method: 'POST',
    headers: { authorization: `Bearer ${publisherToken()}`, 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body)
  })
  return { status: res.status, body: await res.json() }
}

// The SDK, exporters and resources; not @opentelemetry/api, which prom-client loads anyway
// (exemplars) and which is only interfaces and no-ops.
const otelLoaded = (): string[] => Object.keys(require.cache).filter(k => k.includes('@opentelemetry/') && !k.includes('@opentelemetry/api/'))

t.test('off by default: no OpenTelemetry module is loaded, a traceparent in the envelope passes through', async t => {
  const gw = await build(t, { REDIS_URL: '' })
  t.equal(gw.app.tracing, null)
  const s = await openStream(gw, 'topic:off')
  const seen: Array<string | undefined> = []
  await gw.app.bus.subscribe('topic:off', { onMessage: m => seen.push(m.traceparent) })
  const tp = `00-${hex(16)}-${hex(8)}-01`
  t.equal((await publishOn(gw, { channel: 'topic:off', data: 1, traceparent: tp })).status, 202)
  await s.waitMessages(1)
  t.same(seen, [tp], 'the bus carries the envelope traceparent unchanged')
  t.notMatch(s.text(), /traceparent|00-/, 'the SSE frame does not carry it')
  t.same(otelLoaded(), [], 'no OpenTelemetry SDK module required')
  s.close()
})

t.test('a publish on A delivered on B is one trace: backend span -> publish (A) -> deliver (B) -> frame, batch wait, write', async t => {
  const { c, url } = await collector(t)
  const prefix = uniquePrefix()
  const env = { CHANNEL_PREFIX: prefix, OTEL_EXPORTER_OTLP_ENDPOINT: url, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_BSP_SCHEDULE_DELAY: '50' }
  const a = await build(t, env)
  const b = await build(t, env)
  t.ok(otelLoaded().some(k => k.includes('sdk-trace-base')), 'the SDK is loaded once tracing is configured')
  const s1 = await openStream(b, 'topic:traced')
  const s2 = await openStream(b, 'topic:traced')

  // Not sampled by the backend (flags 00): the parent-based sampler follows it on A and B.
  const quiet = hex(16)
  t.equal((await publishOn(a, { channel: 'topic:traced', event: 'e', data: 'quiet' }, { traceparent: `00-${quiet}-${hex(8)}-00` })).status, 202)
  // Sampled.
  const traceId = hex(16)
  const backendSpan = hex(8)
  const pub = await publishOn(a, { channel: 'topic:traced', event: 'e', data: { n: 1 } }, { traceparent: `00-${traceId}-${backendSpan}-01` })
  t.equal(pub.status, 202)
  const id = pub.body.ids[0]
  await s1.waitMessages(2)
  await s2.waitMessages(2)

  await waitFor(() => c.trace(traceId).filter(s => s.name === 'write').length === 1 && c.trace(traceId).some(s => s.name === 'publish'), 15000, 'the spans of the sampled publish')
  const spans = c.trace(traceId)
  const publish = spans.find(s => s.name === 'publish') as Span
  const deliver = spans.filter(s => s.name === 'deliver')
  t.equal(publish.parentSpanId, backendSpan, 'publish continues the backend span from the traceparent header')
  t.equal(publish.kind, 4, 'publish is a PRODUCER span')
  t.equal(publish.attrs['messaging.message.id'], id, 'publish carries the message id')
  t.equal(publish.attrs['sse.source'], 'http')
  t.equal(publish.attrs['messaging.destination.name'], 'topic:traced')
  t.equal(deliver.length, 1, 'one delivery span on B for two connections (not one per connection)')
  const d = deliver[0]
  t.equal(d.kind, 5, 'deliver is a CONSUMER span')
  t.equal(d.parentSpanId, publish.spanId, 'delivery is a child of the publish span')
  t.not(d.instance, publish.instance, 'publish and delivery come from different instances')
  t.equal(d.attrs['messaging.message.id'], id)
  t.equal(d.attrs['sse.connections'], 2, 'the connection count is an attribute')
  const phases = spans.filter(s => s.parentSpanId === d.spanId)
  t.same(phases.map(s => s.name).sort(), ['batch wait', 'frame', 'write'])
  const phase = (name: string): Span => phases.find(s => s.name === name) as Span
  t.ok(phase('frame').end <= phase('batch wait').start && phase('batch wait').end <= phase('write').start, 'frame, then batch wait, then write')
  t.ok(d.start <= phase('frame').start && phase('write').end <= d.end, 'the phases lie within the delivery span')
  t.equal(new Set(spans.map(s => s.instance)).size, 2, 'the trace spans both instances')
  t.same(c.trace(quiet), [], 'the unsampled publish exported nothing on either instance')
  t.ok(c.requests.every(r => r.path === '/v1/traces' && r.contentType.startsWith('application/json')), 'http/json to <endpoint>/v1/traces')
  s1.close()
  s2.close()
})

t.test('the envelope traceparent continues a trace through an instance with tracing off; bad ones are a 400', async t => {
  const { c, url } = await collector(t)
  const prefix = uniquePrefix()
  const plain = await build(t, { CHANNEL_PREFIX: prefix })
  const traced = await build(t, { CHANNEL_PREFIX: prefix, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${url}/custom/traces`, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_BSP_SCHEDULE_DELAY: '50' })
  const s = await openStream(traced, 'topic:mixed')

  for (const bad of ['00-abc-def-01', `01-${hex(16)}-${hex(8)}-01`, `00-${'0'.repeat(32)}-${hex(8)}-01`, 42]) {
    const r = await publishOn(plain, { channel: 'topic:mixed', data: 1, traceparent: bad })
    t.equal(r.status, 400, `traceparent ${JSON.stringify(bad)} refused`)
    t.equal(r.body.error, 'invalid_message')
    t.match(r.body.message, /body\.traceparent/)
  }
  const traceId = hex(16)
  const parent = hex(8)
  const r = await publishOn(plain, [{ channel: 'topic:mixed', data: 'a', traceparent: `00-${traceId}-${parent}-01` }])
  t.equal(r.status, 202)
  await s.waitMessages(1)
  await waitFor(() => c.trace(traceId).some(x => x.name === 'deliver'), 15000, 'the delivery span')
  const d = c.trace(traceId).find(x => x.name === 'deliver') as Span
  t.equal(d.parentSpanId, parent, 'delivery continues the envelope traceparent')
  t.ok(c.requests.every(x => x.path === '/custom/traces'), 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used as given')
  s.close()
})

t.test('http/protobuf: the export arrives as application/x-protobuf with the trace in it', async t => {
  const { c, url } = await collector(t)
  const gw = await build(t, { OTEL_EXPORTER_OTLP_ENDPOINT: `${url}/`, OTEL_BSP_SCHEDULE_DELAY: '50', OTEL_EXPORTER_OTLP_HEADERS: 'x-tenant=acme%20corp' })
  const traceId = hex(16)
  t.equal((await publishOn(gw, { channel: 'topic:proto', data: 1 }, { traceparent: `00-${traceId}-${hex(8)}-01` })).status, 202)
  const raw = Buffer.from(traceId, 'hex')
  await waitFor(() => c.requests.some(r => r.body.includes(raw)), 15000, 'a protobuf export with the trace id')
  const req = c.requests.find(r => r.body.includes(raw))
  t.equal(req?.contentType, 'application/x-protobuf', 'http/protobuf is the default protocol')
  t.equal(req?.path, '/v1/traces')
})

t.test('createPublisher under a backend span: the delivery continues the backend trace', async t => {
  const { c, url } = await collector(t)
  const prefix = uniquePrefix()
  const gw = await build(t, { CHANNEL_PREFIX: prefix, OTEL_EXPORTER_OTLP_ENDPOINT: url, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_BSP_SCHEDULE_DELAY: '50' })
  const s = await openStream(gw, 'topic:backend')
  // The backend's own SDK, registered globally as a backend would.
  const { NodeTracerProvider } = await import('@opentelemetry/sdk-trace-node')
  const { InMemorySpanExporter, SimpleSpanProcessor } = await import('@opentelemetry/sdk-trace-base')
  const { trace } = await import('@opentelemetry/api')
  const mem = new InMemorySpanExporter()
  const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(mem)] })
  provider.register()
  t.teardown(() => provider.shutdown())
  // Required here, not imported at the top: the first test checks what is loaded without tracing.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { createPublisher } = require('../src/publisher') as typeof import('../src/publisher')
  const pub = createPublisher({ redis: REDIS_URL, prefix })
  t.teardown(() => pub.close())
  const ids = await trace.getTracer('backend').startActiveSpan('POST /articles', async span => {
    try {
      return await pub.publish({ channel: 'topic:backend', event: 'article', data: { id: 7 } })
    } finally {
      span.end()
    }
  })
  await s.waitMessages(1)
  const backend = mem.getFinishedSpans()
  const request = backend.find(x => x.name === 'POST /articles')
  const publish = backend.find(x => x.name === 'publish')
  t.ok(request !== undefined && publish !== undefined, 'the backend recorded its request and the publish')
  t.equal(publish?.parentSpanContext?.spanId, request?.spanContext().spanId, 'publish is a child of the backend request')
  t.equal(publish?.attributes['messaging.message.id'], ids[0])
  const traceId = request?.spanContext().traceId as string
  await waitFor(() => c.trace(traceId).some(x => x.name === 'deliver'), 15000, 'the gateway delivery span')
  const d = c.trace(traceId).find(x => x.name === 'deliver') as Span
  t.equal(d.parentSpanId, publish?.spanContext().spanId, 'the gateway delivery is a child of the publisher span')
  t.equal(d.attrs['messaging.message.id'], ids[0])
  s.close()
})

t.test('window 0: a delivery span ends even when no stream wanted the frame', async t => {
  const { c, url } = await collector(t)
  const gw = await build(t, { REDIS_URL: '', BATCH_WINDOW_MS: '0', OTEL_EXPORTER_OTLP_ENDPOINT: url, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_BSP_SCHEDULE_DELAY: '50' })
  const s = new RawStream(gw.port, '/events?channel=topic:w0&events=wanted', { Authorization: `Bearer ${userToken()}` })
  await waitFor(() => s.frames().some(f => f.id !== undefined), 10000, 'stream head')
  const [skipped, wanted] = [hex(16), hex(16)]
  t.equal((await publishOn(gw, { channel: 'topic:w0', event: 'other', data: 1 }, { traceparent: `00-${skipped}-${hex(8)}-01` })).status, 202)
  t.equal((await publishOn(gw, { channel: 'topic:w0', event: 'wanted', data: 2 }, { traceparent: `00-${wanted}-${hex(8)}-01` })).status, 202)
  await s.waitMessages(1)
  await waitFor(() => c.trace(skipped).some(x => x.name === 'write') && c.trace(wanted).some(x => x.name === 'write'), 15000, 'both delivery spans ended')
  t.equal(c.trace(wanted).find(x => x.name === 'deliver')?.attrs['sse.connections'], 1)
  s.close()
})

t.test('OTEL_* configuration', async t => {
  t.equal(loadConfig({}).otel, undefined, 'off without an endpoint')
  t.equal(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_SDK_DISABLED: 'true' }).otel, undefined, 'OTEL_SDK_DISABLED wins')
  t.match(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318/' }).otel, {
    url: 'http://c:4318/v1/traces', protocol: 'http/protobuf', sampler: 'parentbased_always_on', serviceName: 'sse-gateway', headers: {}
  })
  t.match(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf', OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.25', OTEL_EXPORTER_OTLP_HEADERS: 'a=1, b=x%3Dy' }).otel,
    { protocol: 'http/json', sampler: 'parentbased_traceidratio', samplerArg: 0.25, headers: { a: '1', b: 'x=y' } })
  t.throws(() => loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4317', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }), /OTEL_EXPORTER_OTLP_PROTOCOL/)
  t.throws(() => loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'c:4318' }), /OTEL_EXPORTER_OTLP_ENDPOINT/)
  t.throws(() => loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_TRACES_SAMPLER: 'traceidratio' }), /OTEL_TRACES_SAMPLER_ARG .* is required/)
  t.throws(() => loadConfig({ OTEL_TRACES_SAMPLER_ARG: '2' }), /OTEL_TRACES_SAMPLER_ARG/)
  t.throws(() => loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_EXPORTER_OTLP_HEADERS: 'novalue' }), /OTEL_EXPORTER_OTLP_HEADERS must be a list of key=value pairs/)
})
