import { EventSource, type FetchLike } from 'eventsource'

// A client behind a load balancer, as the failover tests meet it (test/lb-failover.test.ts with
// nginx on loopback, test/compose.e2e.ts through the compose stack): a real EventSource whose
// every request is recorded, and a publisher that retries what the balancer refused.

/** One request the EventSource made: what it sent, what came back, and the raw body it read. */
export interface Conn {
  lastEventId: string | null
  status: number
  /** $upstream_addr: every replica the balancer tried, comma-separated; the last one answered. */
  upstreamRaw: string
  upstream: string
  text: string
  openedAt: number
  /** Set when the body ended cleanly (terminating chunk), not when it was cut. */
  endedAt: number | null
}

export interface Seq {
  n: number
  /** The id it came with: a duplicate with one id is a delivery bug, with two a double publish. */
  id: string
  at: number
}

export interface RecordedStream {
  es: EventSource
  conns: Conn[]
  /** Every `seq` event, in arrival order. */
  received: Seq[]
  /** The client's `error` events (code and message). */
  errors: string[]
  /** An `end` event arrived. */
  ended: () => boolean
}

/** `${url}/events` with a bearer token, through a real EventSource that reconnects by itself. */
export function recordedStream (url: string, token: string): RecordedStream {
  const conns: Conn[] = []
  const received: Seq[] = []
  const errors: string[] = []
  let endSeen = false
  const esFetch: FetchLike = async (input, init) => {
    const conn: Conn = { lastEventId: init.headers['Last-Event-ID'] ?? null, status: 0, upstreamRaw: '', upstream: '', text: '', openedAt: Date.now(), endedAt: null }
    conns.push(conn)
    const res = await fetch(input, { ...init, headers: { ...init.headers, authorization: `Bearer ${token}` } } as RequestInit)
    conn.status = res.status
    conn.upstreamRaw = res.headers.get('x-upstream') ?? ''
    conn.upstream = conn.upstreamRaw.split(',').pop()?.trim() ?? ''
    if (res.body === null) return res
    // Read along with the client: the exact frames it got, and whether the body ended cleanly.
    const decoder = new TextDecoder()
    const body = res.body.pipeThrough(new TransformStream<Uint8Array, Uint8Array>({
      transform (chunk, ctl) {
        conn.text += decoder.decode(chunk, { stream: true })
        ctl.enqueue(chunk)
      },
      flush () { conn.endedAt = Date.now() }
    }))
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers })
  }
  const es = new EventSource(`${url}/events`, { fetch: esFetch })
  es.addEventListener('error', (e) => { errors.push(`${(e as { code?: number }).code ?? ''} ${(e as { message?: string }).message ?? ''}`.trim()) })
  es.addEventListener('seq', (e) => { received.push({ n: Number(e.data), id: e.lastEventId, at: Date.now() }) })
  es.addEventListener('end', () => { endSeen = true })
  return { es, conns, received, errors, ended: () => endSeen }
}

/**
 * POST `${url}/publish` until it is accepted (202), for up to 15 s; each refusal is pushed to
 * `failures`. Only refusals are retried: a balancer never forwards a POST to a second replica
 * once sent, and a gateway answers a publish it took even while it shuts down, so a 502/503 or
 * a cut connection means this publish was not applied (a duplicate would show in the stream).
 */
export async function publishUntilAccepted (url: string, token: string, body: unknown, failures: string[]): Promise<void> {
  const deadline = Date.now() + 15000
  for (;;) {
    let status = 0
    let answer = ''
    try {
      const res = await fetch(`${url}/publish`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) })
      status = res.status
      answer = await res.text()
    } catch (err) {
      answer = (err as Error).message
    }
    if (status === 202) return
    failures.push(`${status} ${answer.slice(0, 120)}`)
    if (Date.now() > deadline) throw new Error(`publish through the load balancer kept failing: ${failures.slice(-5).join(' | ')}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

/** The numbers that arrived more than once, each with the ids it came with. */
export function duplicates (received: readonly Seq[]): string[] {
  const ids = new Map<number, string[]>()
  for (const r of received) ids.set(r.n, [...(ids.get(r.n) ?? []), r.id])
  return [...ids].filter(([, list]) => list.length > 1).map(([n, list]) => `${n} (ids ${list.join(', ')})`)
}
