// One SSE client for a prediction's `urls.stream`. Not the client's replicate.stream(): that
// creates the prediction itself, ends on the first `error` and never reconnects, while an
// upstream drop before `done` must resume from Last-Event-ID or watchers lose output.
// It reads with the project's one spec parser (src/shared/sse-parser.ts, also the client's).
import { SseParser, type SseMessage } from '../shared/sse-parser'
import { sleep as abortableSleep } from '../shared/sleep'
import { UpstreamError, parseRetryAfter, problemDetail, retryDelay, upstreamErrorFor } from './upstream'

export interface StreamRetryInfo {
  /** consecutive failures without an event in between, from 1 */
  attempt: number
  delayMs: number
  reason: 'dropped' | 'network_error' | 'rate_limited' | 'server_error' | 'timeout'
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
  /** until the response head arrives (default 5000) */
  connectTimeoutMs?: number
  /** a connection that sends nothing for this long is dropped and resumed (default 60000) */
  idleTimeoutMs?: number
}

export interface FollowStreamResult {
  lastEventId?: string
  reconnects: number
}

class StreamTimeout extends Error {
  constructor (what: string) {
    super(what)
    this.name = 'StreamTimeout'
  }
}

export async function followStream (opts: FollowStreamOptions): Promise<FollowStreamResult> {
  const { url, onEvent, signal, headers = {}, retry = {}, connectTimeoutMs = 5000, idleTimeoutMs = 60_000 } = opts
  const f = opts.fetch ?? globalThis.fetch
  const { maxAttempts = 10, baseDelayMs = 500, maxDelayMs = 30_000, sleep = abortableSleep, random = Math.random, onRetry } = retry
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
    // One controller per connection: the caller's abort, the head deadline and the idle
    // deadline all end it, and its listeners die with it.
    const ac = new AbortController()
    const onAbort = (): void => ac.abort(signal?.reason)
    signal?.addEventListener('abort', onAbort, { once: true })
    let idle: NodeJS.Timeout | undefined
    const arm = (ms: number, what: string): void => {
      clearTimeout(idle)
      idle = setTimeout(() => ac.abort(new StreamTimeout(what)), ms)
    }
    try {
      arm(connectTimeoutMs, `no response head within ${connectTimeoutMs} ms`)
      const res = await f(url, {
        headers: { accept: 'text/event-stream', 'cache-control': 'no-cache', ...(lastEventId ? { 'last-event-id': lastEventId } : {}), ...headers },
        signal: ac.signal
      })
      arm(idleTimeoutMs, `silent for ${idleTimeoutMs} ms`)
      if (!res.ok) {
        const text = await res.text().catch(() => '')
        if (res.status !== 429 && res.status < 500) throw upstreamErrorFor(res.status, problemDetail(text, res.status))
        reason = res.status === 429 ? 'rate_limited' : 'server_error'
        status = res.status
        retryAfterMs = parseRetryAfter(res.headers.get('retry-after'), Date.now())
      } else if (res.body) {
        const queue: SseMessage[] = []
        const parser = new SseParser({ onMessage: m => queue.push(m), onRetry: ms => { serverRetryMs = ms } }, { lastEventId })
        const reader = res.body.getReader()
        try {
          while (!ended) {
            const { done, value } = await reader.read()
            arm(idleTimeoutMs, `silent for ${idleTimeoutMs} ms`)
            if (done) parser.end()
            else parser.feed(value)
            for (const e of queue.splice(0)) {
              received = true
              const id = e.lastEventId === '' ? undefined : e.lastEventId
              if (id !== undefined) lastEventId = id
              inHandler = true
              await onEvent(e.type, e.data, id)
              inHandler = false
              if (e.type === 'error') sawError = true
              if (e.type === 'done') { ended = true; break }
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
      reason = ac.signal.reason instanceof StreamTimeout ? 'timeout' : 'network_error'
    } finally {
      clearTimeout(idle)
      signal?.removeEventListener('abort', onAbort)
      if (!ac.signal.aborted) ac.abort()
    }
    // Replicate ends a failed prediction with `error` then `done`; a close right after the
    // `error` is the same ending, and reconnecting could only wait for a `done` never sent.
    if (ended || sawError) return { lastEventId, reconnects }

    attempt = received ? 1 : attempt + 1
    if (attempt > maxAttempts) {
      throw new UpstreamError(status ?? 0, status ? 'replicate_unavailable' : 'replicate_unreachable', `stream failed ${maxAttempts} times in a row (${reason})`, 502)
    }
    const delayMs = retryAfterMs ?? retryDelay(attempt, { baseMs: serverRetryMs ?? baseDelayMs, maxMs: maxDelayMs, random })
    onRetry?.({ attempt, delayMs, reason, status, lastEventId })
    await sleep(delayMs, signal)
    signal?.throwIfAborted()
    reconnects++
  }
}
