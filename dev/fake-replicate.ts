// A fake Replicate on loopback that speaks the real HTTP API (the shapes the official client
// and Replicate's docs use), so tests and local trials never reach the internet.
//
// Time is in steps, not clocks: a prediction moves one step per GET of it (default), per
// advance(id), or per `stepMs` tick when that is set. A test therefore drives a prediction
// to any state deterministically and never sleeps. A prediction of `steps` steps at `stepMs`
// lasts (steps + 1) * stepMs; wall-clock durations Replicate takes (Cancel-After, Prefer: wait,
// the webhook throttle) are multiplied by `timeScale`, so a test can run a "30 s" prediction
// in 1.5 s with every interval scaled alike.
//
// Beside the happy path it plays what Replicate does that a proxy gets wrong: faults (status,
// reset, a request that never answers, Retry-After of any length), webhooks with Replicate's
// default filter (output and completed only) and its throttle (logs and output at most once
// per 500 ms), stream URLs for streaming models whether or not `stream: true` was sent, large
// `data:` URI outputs, `data_removed`, deployments, `Prefer: wait`, `Cancel-After` and listing.
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { createHash, randomBytes } from 'node:crypto'
import { signWebhook } from '../src/replicate/webhook'
import { WEBHOOK_EVENTS, isTerminal, type Prediction, type WebhookEvent } from '../src/replicate/types'

export type FakeRoute = 'create' | 'get' | 'cancel' | 'list' | 'stream' | 'other'

export interface Fault {
  /** which route it hits; the default `*` means create, get and cancel, not the stream */
  route?: Exclude<FakeRoute, 'other'> | '*'
  /** how many requests it hits (default 1) */
  times?: number
  /** answer with this status, as problem+json */
  status?: number
  /** destroy the socket instead of answering: a network error for the caller */
  reset?: boolean
  /** never answer (the socket stays open until the caller gives up or the fake closes) */
  hang?: boolean
  /** stream only: answer normally, then cut the connection after this many events */
  dropAfter?: number
  /** Retry-After header: seconds or an HTTP date */
  retryAfter?: number | string
  /** `retry_after` (seconds) in the problem+json body */
  retryAfterBody?: number
  detail?: string
}

export interface Plan {
  /** processing steps between `starting` and the end (default 3) */
  steps?: number
  outcome?: 'succeeded' | 'failed' | 'canceled' | 'aborted'
  /** the error of a failed prediction */
  error?: string
  /** one output chunk per processing step (streamed as `output` events) */
  tokens?: string[]
  /** final output of a success (default: the tokens, else one image URL) */
  output?: unknown
  /** a streaming model: `urls.stream` whether or not the create sent `stream: true` (default: when tokens are given) */
  stream?: boolean
}

export interface FakeReplicateOptions {
  token?: string
  /** `whsec_<base64>`; random when absent */
  webhookSecret?: string
  /** advance every live prediction on a timer (for standalone use) */
  stepMs?: number
  /** each GET of a prediction advances it one step first (default: true unless stepMs) */
  advanceOnGet?: boolean
  host?: string
  port?: number
  now?: () => number
  /** when set, creating by any other model is a 404 */
  models?: string[]
  /** the plan of predictions created without a queued plan() */
  plan?: Plan
  /** Replicate sends logs and output webhooks at most once per this many ms (default 500, times timeScale) */
  webhookThrottleMs?: number
  /** multiplies the wall-clock durations Replicate takes from a request (default 1) */
  timeScale?: number
}

export interface WebhookDelivery {
  predictionId: string
  event: WebhookEvent
  status: Prediction['status']
  webhookId: string
  timestamp: number
  signature: string
  body: string
  /** the receiver's answer; 0 when it could not be reached */
  responseStatus: number
}

export interface StreamEvent { id: string, event: 'output' | 'logs' | 'error' | 'done', data: string }

export interface FakeReplicate {
  /** base URL for the client, e.g. http://127.0.0.1:PORT/v1 */
  url: string
  origin: string
  token: string
  webhookSecret: string
  /** requests per route, faulted and unauthorized ones included */
  counts: Record<FakeRoute, number>
  requests: Array<{ route: FakeRoute, method: string, path: string, predictionId?: string, status: number, at: number, headers: Record<string, string | string[] | undefined> }>
  predictions: Map<string, Prediction>
  webhooks: WebhookDelivery[]
  /** every stream connection with the Last-Event-ID it sent */
  streamConnections: Array<{ predictionId: string, lastEventId?: string }>
  fail (fault: Fault): void
  /** the plan of the next created prediction (queued, first in first out) */
  plan (plan: Plan): void
  /** one step forward; a terminal prediction stays as it is */
  advance (id: string): Prediction
  /** steps to the end */
  finish (id: string): Prediction
  /** what Replicate does an hour after the end: the output is gone, `data_removed` is true */
  removeData (id: string): Prediction
  /** every state the prediction went through, oldest first (for out-of-order webhook tests) */
  history (id: string): Prediction[]
  streamEvents (id: string): StreamEvent[]
  /** cut the open stream connections (of one prediction, or all); returns how many */
  dropStreams (id?: string): number
  /** sign and POST a webhook now; overrides make replays, stale or badly signed ones */
  sendWebhook (id: string, o?: { snapshot?: Prediction, event?: WebhookEvent, webhookId?: string, timestamp?: number, secret?: string, url?: string }): Promise<WebhookDelivery>
  /** resolves when every queued webhook has been delivered */
  idle (): Promise<void>
  close (): Promise<void>
}

interface Sim {
  p: Prediction
  /** when the last logs/output webhook left, and the one held back by the throttle */
  lastThrottled: number
  throttled: NodeJS.Timeout | null
  waiters: Set<() => void>
  plan: Required<Pick<Plan, 'steps' | 'outcome'>> & Plan
  step: number
  events: StreamEvent[]
  history: Prediction[]
  streams: Set<http.ServerResponse>
  listeners: Set<(e: StreamEvent) => void>
  webhooks: Promise<unknown>
}

const TITLES: Record<number, string> = {
  401: 'Unauthenticated',
  402: 'Insufficient credit',
  404: 'Not found',
  422: 'Input validation failed',
  429: 'Request was throttled'
}

// Replicate's default when a create names a webhook but no filter.
const DEFAULT_FILTER: readonly WebhookEvent[] = ['output', 'completed']

const TOTAL = 50

function bar (current: number, elapsedS: number): string {
  const filled = Math.round(current / TOTAL * 10)
  const leftS = current ? Math.round(elapsedS * (TOTAL - current) / current) : 0
  const mmss = (sec: number): string => `${String(Math.floor(sec / 60)).padStart(2, '0')}:${String(sec % 60).padStart(2, '0')}`
  return `${String(Math.round(current / TOTAL * 100)).padStart(3)}%|${'█'.repeat(filled)}${' '.repeat(10 - filled)}| ` +
    `${current}/${TOTAL} [${mmss(elapsedS)}<${mmss(leftS)}, 15.0it/s]`
}

function routeOf (method: string, path: string): { route: FakeRoute, id?: string, model?: string, deployment?: string } {
  let m: RegExpExecArray | null
  if (method === 'POST' && path === '/v1/predictions') return { route: 'create' }
  if (method === 'POST' && (m = /^\/v1\/models\/([^/]+)\/([^/]+)\/predictions$/.exec(path))) return { route: 'create', model: `${m[1]}/${m[2]}` }
  if (method === 'POST' && (m = /^\/v1\/deployments\/([^/]+)\/([^/]+)\/predictions$/.exec(path))) return { route: 'create', deployment: `${m[1]}/${m[2]}` }
  if (method === 'GET' && path === '/v1/predictions') return { route: 'list' }
  if (method === 'GET' && (m = /^\/v1\/predictions\/([^/]+)$/.exec(path))) return { route: 'get', id: m[1] }
  if (method === 'POST' && (m = /^\/v1\/predictions\/([^/]+)\/cancel$/.exec(path))) return { route: 'cancel', id: m[1] }
  if (method === 'GET' && (m = /^\/stream\/v1\/predictions\/([^/]+)$/.exec(path))) return { route: 'stream', id: m[1] }
  return { route: 'other' }
}

function newId (): string {
  // Replicate ids: 26 lowercase base32 characters.
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567'
  return Array.from(randomBytes(26), b => alphabet[b & 31]).join('')
}

export async function startFakeReplicate (opts: FakeReplicateOptions = {}): Promise<FakeReplicate> {
  const token = opts.token ?? 'r8_fake_token'
  const webhookSecret = opts.webhookSecret ?? 'whsec_' + randomBytes(24).toString('base64')
  const now = opts.now ?? Date.now
  const advanceOnGet = opts.advanceOnGet ?? !opts.stepMs
  const sims = new Map<string, Sim>()
  const predictions = new Map<string, Prediction>()
  const faults: Array<Fault & { left: number }> = []
  const plans: Plan[] = []
  const counts: Record<FakeRoute, number> = { create: 0, get: 0, cancel: 0, list: 0, stream: 0, other: 0 }
  const timeScale = opts.timeScale ?? 1
  const throttleMs = (opts.webhookThrottleMs ?? 500) * timeScale
  const hung = new Set<http.ServerResponse>()
  const requests: FakeReplicate['requests'] = []
  const webhooks: WebhookDelivery[] = []
  const streamConnections: FakeReplicate['streamConnections'] = []
  let base = ''
  let origin = ''

  const iso = (): string => new Date(now()).toISOString()
  const simOf = (id: string): Sim => {
    const sim = sims.get(id)
    if (!sim) throw new Error(`fake-replicate: no prediction ${id}`)
    return sim
  }

  function emit (sim: Sim, event: StreamEvent['event'], data: string): void {
    // SSE data cannot end in a newline, so a log event is the line without its own.
    const e = { id: `${Math.floor(Date.parse(sim.p.created_at) / 1000)}:${sim.events.length}`, event, data: data.replace(/\n$/, '') }
    sim.events.push(e)
    for (const l of sim.listeners) l(e)
  }

  async function deliver (sim: Sim, event: WebhookEvent, o: Parameters<FakeReplicate['sendWebhook']>[1] = {}): Promise<WebhookDelivery> {
    const snapshot = o.snapshot ?? structuredClone(sim.p)
    const body = JSON.stringify(snapshot)
    const webhookId = o.webhookId ?? 'msg_' + randomBytes(12).toString('hex')
    const timestamp = o.timestamp ?? Math.floor(now() / 1000)
    const signature = signWebhook({ id: webhookId, timestamp, body, secret: o.secret ?? webhookSecret })
    let responseStatus = 0
    try {
      const res = await fetch(o.url ?? sim.p.webhook ?? '', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'webhook-id': webhookId, 'webhook-timestamp': String(timestamp), 'webhook-signature': signature },
        body
      })
      responseStatus = res.status
      await res.arrayBuffer()
    } catch {
      // An unreachable receiver is recorded as 0, like a delivery Replicate would retry.
    }
    const d = { predictionId: sim.p.id, event, status: snapshot.status, webhookId, timestamp, signature, body, responseStatus }
    webhooks.push(d)
    return d
  }

  // Replicate sends one webhook per change, filtered by webhook_events_filter; the queue keeps
  // a prediction's webhooks in order, so only a test that wants disorder gets it. Logs and
  // output webhooks are throttled: one within the window is held back and sent at its end
  // with the state as it is then; start and completed always go at once.
  function notify (sim: Sim, happened: WebhookEvent[]): void {
    for (const w of sim.waiters) w()
    const filter = sim.p.webhook_events_filter ?? DEFAULT_FILTER
    const event = happened.find(e => filter.includes(e))
    if (!sim.p.webhook || !event) return
    const send = (ev: WebhookEvent): void => {
      const snapshot = structuredClone(sim.p)
      sim.webhooks = sim.webhooks.then(() => deliver(sim, ev, { snapshot }))
    }
    if (event === 'start' || event === 'completed') {
      if (sim.throttled !== null) { clearTimeout(sim.throttled); sim.throttled = null }
      return send(event)
    }
    const wait = sim.lastThrottled + throttleMs - now()
    if (wait <= 0) {
      sim.lastThrottled = now()
      return send(event)
    }
    sim.throttled ??= setTimeout(() => {
      sim.throttled = null
      sim.lastThrottled = now()
      if (!isTerminal(sim.p.status)) send(event)
    }, wait)
  }

  function finishAs (sim: Sim, outcome: Sim['plan']['outcome']): void {
    const p = sim.p
    p.status = outcome
    p.completed_at = iso()
    const started = p.started_at ? Date.parse(p.started_at) : now()
    p.metrics = { predict_time: (now() - started) / 1000, total_time: (now() - Date.parse(p.created_at)) / 1000 }
    if (outcome === 'succeeded') {
      const line = bar(TOTAL, Math.round((now() - started) / 1000)) + '\n'
      p.logs = (p.logs ?? '') + line
      emit(sim, 'logs', line)
      p.output = sim.plan.output ?? p.output ?? [`https://replicate.delivery/fake/${p.id}/out-0.png`]
      emit(sim, 'done', '{}')
    } else if (outcome === 'failed') {
      p.error = sim.plan.error ?? 'CUDA out of memory'
      p.logs = (p.logs ?? '') + `Traceback (most recent call last):\nRuntimeError: ${p.error}\n`
      emit(sim, 'error', JSON.stringify({ detail: p.error }))
      emit(sim, 'done', JSON.stringify({ reason: 'error' }))
    } else {
      emit(sim, 'done', JSON.stringify({ reason: outcome }))
    }
    sim.history.push(structuredClone(p))
    notify(sim, ['completed'])
  }

  function advance (id: string): Prediction {
    const sim = simOf(id)
    const p = sim.p
    if (isTerminal(p.status)) return p
    sim.step++
    if (sim.step > sim.plan.steps) {
      finishAs(sim, sim.plan.outcome)
      return p
    }
    const happened: WebhookEvent[] = ['logs']
    if (p.status === 'starting') {
      p.status = 'processing'
      p.started_at = iso()
      p.logs = 'Using seed: 42\n'
      emit(sim, 'logs', p.logs)
    }
    const current = Math.round(TOTAL * sim.step / (sim.plan.steps + 1))
    const line = bar(current, sim.step) + '\n'
    p.logs += line
    emit(sim, 'logs', line)
    const token = sim.plan.tokens?.[sim.step - 1]
    if (token !== undefined) {
      p.output = [...(Array.isArray(p.output) ? p.output : []), token]
      emit(sim, 'output', token)
      happened.unshift('output')
    }
    sim.history.push(structuredClone(p))
    notify(sim, happened)
    return p
  }

  function create (body: any, model: string | undefined, deployment?: string): Prediction {
    const plan = { steps: 3, outcome: 'succeeded' as const, ...opts.plan, ...plans.shift() }
    const id = newId()
    const version = model || deployment ? createHash('sha256').update((model ?? deployment) as string).digest('hex') : String(body.version)
    const p: Prediction = {
      id,
      model: model ?? deployment ?? (String(body.version).includes(':') ? String(body.version).split(':')[0] : 'fake/model'),
      version,
      input: body.input,
      logs: '',
      output: null,
      error: null,
      status: 'starting',
      data_removed: false,
      source: 'api',
      created_at: iso(),
      started_at: null,
      completed_at: null,
      urls: {
        get: `${base}/predictions/${id}`,
        cancel: `${base}/predictions/${id}/cancel`,
        web: `https://replicate.com/p/${id}`
      }
    }
    if (body.stream === true || (plan.stream ?? plan.tokens !== undefined)) p.urls.stream = `${origin}/stream/v1/predictions/${id}`
    if (deployment) p.deployment = deployment
    if (body.webhook) {
      p.webhook = body.webhook
      p.webhook_events_filter = body.webhook_events_filter ?? [...DEFAULT_FILTER]
    }
    const sim: Sim = { p, plan, step: 0, events: [], history: [structuredClone(p)], streams: new Set(), listeners: new Set(), webhooks: Promise.resolve(), lastThrottled: 0, throttled: null, waiters: new Set() }
    sims.set(id, sim)
    predictions.set(id, p)
    notify(sim, ['start'])
    return p
  }

  function cancel (sim: Sim): Prediction {
    if (!isTerminal(sim.p.status)) finishAs(sim, 'canceled')
    return sim.p
  }

  /** Go-style durations as Replicate's Cancel-After takes them: 90s, 5m, 1h30m, 250ms. */
  function durationMs (v: string): number | undefined {
    if (!/^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$/.test(v)) return undefined
    let ms = 0
    for (const [, n, u] of v.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) ms += Number(n) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[u as 'ms']
    return ms
  }

  function untilDone (sim: Sim, ms: number): Promise<void> {
    return new Promise(resolve => {
      const done = (): void => {
        if (!isTerminal(sim.p.status) && !timedOut) return
        clearTimeout(timer)
        sim.waiters.delete(done)
        resolve()
      }
      let timedOut = false
      const timer = setTimeout(() => { timedOut = true; done() }, ms)
      sim.waiters.add(done)
      done()
    })
  }

  function invalid (body: any, byModel: boolean): string | undefined {
    if (!body || typeof body !== 'object') return 'body must be a JSON object'
    if (!byModel && (typeof body.version !== 'string' || !body.version)) return '- version: Invalid type. Expected: string, given: null'
    if (!body.input || typeof body.input !== 'object' || Array.isArray(body.input)) return '- input: Invalid type. Expected: object'
    if (body.webhook !== undefined) {
      try {
        if (!/^https?:$/.test(new URL(body.webhook).protocol)) throw new Error()
      } catch {
        return '- webhook: Does not match format \'uri\''
      }
    }
    const f = body.webhook_events_filter
    if (f !== undefined && !(Array.isArray(f) && f.every((e: unknown) => WEBHOOK_EVENTS.includes(e as WebhookEvent)))) {
      return '- webhook_events_filter: must be a list of start, output, logs, completed'
    }
    return undefined
  }

  function problem (res: http.ServerResponse, status: number, detail: string, extra: Record<string, unknown> = {}, headers: Record<string, string> = {}): void {
    const title = TITLES[status] ?? http.STATUS_CODES[status] ?? 'Error'
    res.writeHead(status, { 'content-type': 'application/problem+json', ...headers })
    res.end(JSON.stringify({ title, detail, status, ...extra }))
  }

  function json (res: http.ServerResponse, status: number, body: unknown): void {
    res.writeHead(status, { 'content-type': 'application/json' })
    res.end(JSON.stringify(body))
  }

  function takeFault (route: FakeRoute): Fault | undefined {
    const i = faults.findIndex(f => f.route === route || ((f.route ?? '*') === '*' && route !== 'stream' && route !== 'other'))
    if (i < 0) return undefined
    const f = faults[i]
    if (--f.left <= 0) faults.splice(i, 1)
    return f
  }

  async function readJson (req: http.IncomingMessage): Promise<unknown> {
    const chunks: Buffer[] = []
    let size = 0
    for await (const c of req) {
      size += c.length
      if (size > 1 << 20) throw new Error('too large')
      chunks.push(c)
    }
    const text = Buffer.concat(chunks).toString('utf8')
    return text ? JSON.parse(text) : undefined
  }

  function serveStream (sim: Sim, req: http.IncomingMessage, res: http.ServerResponse, dropAfter: number | undefined): void {
    const lastEventId = req.headers['last-event-id'] as string | undefined
    streamConnections.push({ predictionId: sim.p.id, lastEventId })
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' })
    res.flushHeaders()
    let sent = 0
    const send = (e: StreamEvent): void => {
      if (res.destroyed || res.writableEnded || (dropAfter !== undefined && sent >= dropAfter)) return
      const data = e.data.split('\n').map(l => `data: ${l}\n`).join('')
      sent++
      // The cut waits for the write to flush, or the events before it would be lost with it.
      const cut = dropAfter !== undefined && sent >= dropAfter && e.event !== 'done'
      res.write(`event: ${e.event}\nid: ${e.id}\n${data}\n`, cut ? () => res.destroy() : undefined)
      if (e.event === 'done') res.end()
    }
    const from = lastEventId ? sim.events.findIndex(e => e.id === lastEventId) + 1 : 0
    sim.streams.add(res)
    sim.listeners.add(send)
    res.on('close', () => { sim.streams.delete(res); sim.listeners.delete(send) })
    for (const e of sim.events.slice(from)) send(e)
  }

  async function handle (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://x').pathname
    const method = req.method ?? 'GET'
    const { route, id, model, deployment } = routeOf(method, path)
    counts[route]++
    res.on('close', () => requests.push({ route, method, path, predictionId: id, status: res.headersSent ? res.statusCode : 0, at: now(), headers: req.headers }))

    const fault = takeFault(route)
    if (fault?.reset) return void req.socket.destroy()
    if (fault?.hang) {
      hung.add(res)
      res.on('close', () => hung.delete(res))
      return
    }
    if (fault?.status) {
      const headers: Record<string, string> = fault.retryAfter !== undefined ? { 'retry-after': String(fault.retryAfter) } : {}
      const extra = fault.retryAfterBody !== undefined ? { retry_after: fault.retryAfterBody } : {}
      return problem(res, fault.status, fault.detail ?? `fake fault ${fault.status}`, extra, headers)
    }
    if (route === 'other') return problem(res, 404, 'The requested resource could not be found.')

    // The stream URL carries no auth (Replicate's streaming host takes the unguessable id).
    if (route !== 'stream' && req.headers.authorization !== `Bearer ${token}`) {
      return problem(res, 401, 'You did not pass a valid authentication token')
    }

    if (route === 'create') {
      let body: any
      try {
        body = await readJson(req)
      } catch {
        return problem(res, 400, 'The request body is not valid JSON.')
      }
      if (model && opts.models && !opts.models.includes(model)) return problem(res, 404, 'The requested resource could not be found.')
      const why = invalid(body, model !== undefined || deployment !== undefined)
      if (why) return problem(res, 422, why)
      const cancelAfter = req.headers['cancel-after'] as string | undefined
      const cancelMs = cancelAfter === undefined ? undefined : durationMs(cancelAfter)
      if (cancelAfter !== undefined && (cancelMs === undefined || cancelMs < 5000)) return problem(res, 422, '- Cancel-After: must be a duration of at least 5s')
      const prefer = /^wait(?:=(\d+))?$/.exec(String(req.headers.prefer ?? '').trim())
      const p = create(body, model, deployment)
      const sim = simOf(p.id)
      if (cancelMs !== undefined) {
        const timer = setTimeout(() => { if (!isTerminal(sim.p.status)) cancel(sim) }, cancelMs * timeScale)
        timer.unref()
      }
      // Prefer: wait holds the answer until the prediction ends or the wait (max 60 s) passes.
      if (prefer !== null) await untilDone(sim, Math.min(60, Number(prefer[1] ?? 60)) * 1000 * timeScale)
      return json(res, 201, sim.p)
    }

    if (route === 'list') {
      const results = [...sims.values()].map(x => x.p).sort((a, b) => b.created_at.localeCompare(a.created_at))
      return json(res, 200, { previous: null, next: null, results })
    }

    const sim = id ? sims.get(id) : undefined
    if (!sim) return problem(res, 404, 'The requested resource could not be found.')
    if (route === 'get') return json(res, 200, advanceOnGet ? advance(sim.p.id) : sim.p)
    if (route === 'cancel') return json(res, 200, cancel(sim))
    serveStream(sim, req, res, fault?.dropAfter)
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch(err => {
      if (!res.headersSent) problem(res, 500, String(err))
      else res.destroy()
    })
  })
  await new Promise<void>(resolve => server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', resolve))
  const { port, address } = server.address() as AddressInfo
  origin = `http://${address.includes(':') ? `[${address}]` : address}:${port}`
  base = `${origin}/v1`

  const timer = opts.stepMs
    ? setInterval(() => { for (const [id, s] of sims) if (!isTerminal(s.p.status)) advance(id) }, opts.stepMs)
    : undefined
  timer?.unref()

  return {
    url: base,
    origin,
    token,
    webhookSecret,
    counts,
    requests,
    predictions,
    webhooks,
    streamConnections,
    fail (fault) { faults.push({ ...fault, left: fault.times ?? 1 }) },
    plan (plan) { plans.push(plan) },
    advance,
    finish (id) {
      while (!isTerminal(simOf(id).p.status)) advance(id)
      return simOf(id).p
    },
    removeData (id) {
      const p = simOf(id).p
      p.data_removed = true
      p.output = null
      return p
    },
    history: id => simOf(id).history,
    streamEvents: id => simOf(id).events,
    dropStreams (id) {
      const targets = id ? [simOf(id)] : [...sims.values()]
      let n = 0
      for (const s of targets) for (const r of s.streams) { r.destroy(); n++ }
      return n
    },
    sendWebhook (id, o = {}) {
      const sim = simOf(id)
      return deliver(sim, o.event ?? (isTerminal((o.snapshot ?? sim.p).status) ? 'completed' : 'logs'), o)
    },
    async idle () {
      // Delivering can queue nothing new, but loop anyway in case a test advanced meanwhile.
      for (;;) {
        const pending = [...sims.values()].map(s => s.webhooks)
        await Promise.all(pending)
        if ([...sims.values()].every((s, i) => s.webhooks === pending[i])) return
      }
    },
    async close () {
      if (timer) clearInterval(timer)
      for (const s of sims.values()) {
        for (const r of s.streams) r.destroy()
        if (s.throttled !== null) clearTimeout(s.throttled)
      }
      for (const r of hung) r.destroy()
      server.closeAllConnections()
      await new Promise<void>(resolve => server.close(() => resolve()))
    }
  }
}
