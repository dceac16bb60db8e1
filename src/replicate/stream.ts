// One SSE client for a prediction's `urls.stream`. Not the client's replicate.stream(): that
// creates the prediction itself, ends on the first `error` and never reconnects, while an
// upstream drop before `done` must resume from Last-Event-ID or watchers lose output.
import { UpstreamError, backoffDelay, defaultSleep, parseRetryAfter, problemDetail, upstreamErrorFor } from './upstream'

export interface StreamRetryInfo {
  /** consecutive failures without an event in between, from 1 */
  attempt: number
  delayMs: number
  reason: 'dropped' | 'network_error' | 'rate_limited' | 'server_error'
  status?: number
  lastEventId?: string
}

export interface StreamRetryOptions {
  /** consecutive failures (no event received in between) before giving up; default 10 */
  maxAttempts?: number
  baseDelayMs?: number
  maxDelayMs?: number
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>
  random?: () => number
  onRetry?: (info: StreamRetryInfo) => void
}

export interface FollowStreamOptions {
  url: string
  /** resume after this event (e.g. the last one a previous follower forwarded) */
  lastEventId?: string
  /** awaited before the next event, so a slow consumer slows the reading, not the memory */
  onEvent: (event: string, data: string, id: string | undefined) => void | Promise<void>
  signal?: AbortSignal
  fetch?: typeof fetch
  headers?: Record<string, string>
  retry?: StreamRetryOptions
}

export interface FollowStreamResult {
  lastEventId?: string
  reconnects: number
}

interface SseEvent { event: string, data: string, id?: string }

/** An incremental text/event-stream parser (WHATWG rules: CR, LF or CRLF; comments; retry). */
export function createSseParser (on: { event (e: SseEvent): void, retry? (ms: number): void }): (chunk: string, end?: boolean) => void {
  let buf = ''
  let first = true
  let event = ''
  let data: string[] = []
  let id: string | undefined

  function line (l: string): void {
    if (l === '') {
      if (data.length) on.event({ event: event || 'message', data: data.join('\n'), id })
      event = ''
      data = []
      return
    }
    if (l.startsWith(':')) return
    const colon = l.indexOf(':')
    const field = colon < 0 ? l : l.slice(0, colon)
    let value = colon < 0 ? '' : l.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    if (field === 'data') data.push(value)
    else if (field === 'event') event = value
    // The id persists across events, as in EventSource, so it is what to resume from.
    else if (field === 'id' && !value.includes('\0')) id = value
    else if (field === 'retry' && /^\d+$/.test(value)) on.retry?.(Number(value))
  }

  return (chunk, end = false) => {
    buf += chunk
    if (first && buf) {
      if (buf.charCodeAt(0) === 0xfeff) buf = buf.slice(1)
      first = false
    }
    const re = /\r\n|\r|\n/g
    let start = 0
    let m: RegExpExecArray | null
    while ((m = re.exec(buf))) {
      // A CR at the end of a chunk may be the first half of a CRLF: wait for the next chunk.
      if (m[0] === '\r' && m.index === buf.length - 1 && !end) break
      line(buf.slice(start, m.index))
      start = m.index + m[0].length
    }
    buf = buf.slice(start)
  }
}

export async function followStream (opts: FollowStreamOptions): Promise<FollowStreamResult> {
  const { url, onEvent, signal, headers = {}, retry = {} } = opts
  const f = opts.fetch ?? globalThis.fetch
  const { maxAttempts = 10, baseDelayMs = 500, maxDelayMs = 30_000, sleep = defaultSleep, random = Math.random, onRetry } = retry
  let lastEventId = opts.lastEventId
  let serverRetryMs: number | undefined
  let reconnects = 0
  let attempt = 0

  for (;;) {
    signal?.throwIfAborted()
    let reason: StreamRetryInfo['reason'] = 'dropped'
    let status: number | undefined
    let retryAfterMs: number | undefined
    let received = false
    let ended = false
    let sawError = false
    let inHandler = false
    try {
      const res = await f(url, {
        headers: { accept: 'text/event-stream', 'cache-control': 'no-cache', ...(lastEventId ? { 'last-event-id': lastEventId } : {}), ...headers },
        signal
      })
      if (!res.ok) {
        const text = await res.text().catch(() => '')
        if (res.status !== 429 && res.status < 500) throw upstreamErrorFor(res.status, problemDetail(text, res.status))
        reason = res.status === 429 ? 'rate_limited' : 'server_error'
        status = res.status
        retryAfterMs = parseRetryAfter(res.headers.get('retry-after'), Date.now())
      } else if (res.body) {
        const queue: SseEvent[] = []
        const feed = createSseParser({ event: e => queue.push(e), retry: ms => { serverRetryMs = ms } })
        const decoder = new TextDecoder()
        const reader = res.body.getReader()
        try {
          while (!ended) {
            const { done, value } = await reader.read()
            feed(done ? decoder.decode() : decoder.decode(value, { stream: true }), done)
            for (const e of queue.splice(0)) {
              received = true
              if (e.id !== undefined) lastEventId = e.id
              inHandler = true
              await onEvent(e.event, e.data, e.id)
              inHandler = false
              if (e.event === 'error') sawError = true
              if (e.event === 'done') { ended = true; break }
            }
            if (done) break
          }
        } finally {
          if (ended) await reader.cancel().catch(() => {})
        }
      }
    } catch (err) {
      if (signal?.aborted) throw signal.reason ?? err
      // The consumer's own failure and a definite refusal are not for reconnecting to fix.
      if (inHandler || err instanceof UpstreamError) throw err
      reason = 'network_error'
    }
    // Replicate ends a failed prediction with `error` then `done`; a close right after the
    // `error` is the same ending, and reconnecting could only wait for a `done` never sent.
    if (ended || sawError) return { lastEventId, reconnects }

    attempt = received ? 1 : attempt + 1
    if (attempt > maxAttempts) {
      throw new UpstreamError(status ?? 0, status ? 'replicate_unavailable' : 'replicate_unreachable', `stream failed ${maxAttempts} times in a row (${reason})`, 502)
    }
    const delayMs = retryAfterMs ?? backoffDelay(attempt, { baseMs: serverRetryMs ?? baseDelayMs, maxMs: maxDelayMs, random })
    onRetry?.({ attempt, delayMs, reason, status, lastEventId })
    await sleep(delayMs, signal)
    reconnects++
  }
}
