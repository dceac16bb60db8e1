import { ZERO_ID, type Bus, type BusMessage, type Listener, type Store } from '../bus/bus'

/**
 * The gateway's own control channel. Its name holds `[`, which channel rules refuse, so no
 * stream can ask for it and no publisher can write to it.
 */
export const CONTROL_CHANNEL = '[gateway]:control'

export interface Revocation {
  kind: 'sub' | 'jti'
  value: string
  /** When it was revoked (epoch ms): a `sub` revocation refuses tokens issued at or before it. */
  at: number
  /** When it may be forgotten (epoch ms): no token it refuses is valid after it. */
  until: number
  reason: string
}

/** What of a token a revocation can match. */
export interface TokenId {
  sub: string
  jti?: string
  /** Seconds since epoch. */
  iat?: number
}

/** A stream as revocation sees it (Connection in src/delivery). */
export interface Revocable {
  readonly user: string
  readonly jti?: string
  readonly closed: boolean
  disconnect (reason: string): void
}

export interface RevocationOptions {
  /** Open streams of this instance, ended when a revocation matching them arrives. */
  streams: () => Iterable<Revocable>
  /** Bound on the in-memory sets; past it, checks ask the store. */
  maxEntries?: number
  now?: () => number
  /** A revocation arrived live (counted in metrics). */
  onRevoked?: () => void
  log?: { warn: (o: object, m: string) => void }
}

export const REVOKED_MESSAGE = 'token has been revoked'

/**
 * Revoked tokens and users, known to every instance. A revocation is written to the store
 * (durable, per key) and published on the control channel; every instance keeps the active
 * ones in memory, so the connect path checks two Map lookups and makes no round trip. A new
 * instance learns the earlier ones from the control channel's history. When that history was
 * trimmed, or the sets outgrow `maxEntries`, the memory is incomplete and checks ask the store
 * instead (two GETs per connect) until the instance restarts.
 */
export class Revocations {
  private readonly jtis = new Map<string, number>()
  private readonly subs = new Map<string, { at: number, until: number }>()
  private readonly listener: Listener
  private readonly max: number
  private readonly now: () => number
  private incomplete = false

  constructor (private readonly bus: Bus, private readonly store: Store, private readonly opts: RevocationOptions) {
    this.max = opts.maxEntries ?? 100_000
    this.now = opts.now ?? Date.now
    this.listener = { onMessage: (msg) => this.onMessage(msg) }
  }

  /** Subscribes first, then reads the history: applying a revocation twice is harmless. */
  async start (): Promise<void> {
    await this.bus.subscribe(CONTROL_CHANNEL, this.listener)
    const r = await this.bus.read(CONTROL_CHANNEL, ZERO_ID)
    if (r.reset) {
      this.incomplete = true
      this.opts.log?.warn({}, 'revocation history was trimmed: checking revocations in the store on every connect')
    }
    for (const m of r.messages) this.apply(m.data, false)
  }

  get size (): number {
    return this.jtis.size + this.subs.size
  }

  /** Null when the token may connect, else why not; a promise only when memory is incomplete. */
  check (t: TokenId): string | null | Promise<string | null> {
    if (this.incomplete) return this.checkStore(t)
    if (this.jtis.size === 0 && this.subs.size === 0) return null
    const now = this.now()
    if (t.jti !== undefined) {
      const until = this.jtis.get(t.jti)
      if (until !== undefined && until > now) return REVOKED_MESSAGE
    }
    const s = this.subs.get(t.sub)
    if (s !== undefined && s.until > now && issuedBy(t, s.at)) return REVOKED_MESSAGE
    return null
  }

  private async checkStore (t: TokenId): Promise<string | null> {
    const [jti, sub] = await Promise.all([
      t.jti !== undefined ? this.store.get(`revoked:jti:${t.jti}`) : null,
      this.store.get(`revoked:sub:${t.sub}`)
    ])
    if (jti !== null) return REVOKED_MESSAGE
    if (sub !== null && issuedBy(t, Number(sub))) return REVOKED_MESSAGE
    return null
  }

  /** Records and broadcasts; resolves once every instance can learn it (store and bus). */
  async revoke (r: Revocation): Promise<void> {
    const ttl = Math.max(1, r.until - this.now())
    await this.store.set(`revoked:${r.kind}:${r.value}`, String(r.at), ttl)
    await this.bus.publish([{ channel: CONTROL_CHANNEL, event: 'revoke', data: r, ts: this.now() }])
  }

  close (): void {
    this.bus.unsubscribe(CONTROL_CHANNEL, this.listener)
  }

  private onMessage (msg: BusMessage): void {
    if (msg.event === 'revoke') this.apply(msg.data, true)
  }

  private apply (data: unknown, live: boolean): void {
    const r = asRevocation(data)
    if (r === null) return
    const now = this.now()
    if (r.until <= now) return
    if (r.kind === 'jti') this.jtis.set(r.value, Math.max(r.until, this.jtis.get(r.value) ?? 0))
    else {
      const prev = this.subs.get(r.value)
      this.subs.set(r.value, { at: Math.max(r.at, prev?.at ?? 0), until: Math.max(r.until, prev?.until ?? 0) })
    }
    if (this.size > this.max) this.sweep(now)
    // A replayed revocation (start) is older than any stream this instance holds; only a live one ends streams.
    if (!live) return
    this.opts.onRevoked?.()
    for (const s of this.opts.streams()) {
      if (s.closed) continue
      if (r.kind === 'jti' ? s.jti === r.value : s.user === r.value) s.disconnect(r.reason)
    }
  }

  private sweep (now: number): void {
    for (const [k, until] of this.jtis) if (until <= now) this.jtis.delete(k)
    for (const [k, s] of this.subs) if (s.until <= now) this.subs.delete(k)
    if (this.size > this.max && !this.incomplete) {
      this.incomplete = true
      this.jtis.clear()
      this.subs.clear()
      this.opts.log?.warn({ max: this.max }, 'too many active revocations to keep in memory: checking them in the store on every connect')
    }
  }
}

/** A `sub` revocation refuses the tokens issued in or before the second it was made (and tokens without `iat`). */
function issuedBy (t: TokenId, at: number): boolean {
  return t.iat === undefined || t.iat <= Math.floor(at / 1000)
}

function asRevocation (d: unknown): Revocation | null {
  if (d === null || typeof d !== 'object') return null
  const r = d as Record<string, unknown>
  if ((r.kind !== 'sub' && r.kind !== 'jti') || typeof r.value !== 'string' || typeof r.at !== 'number' || typeof r.until !== 'number') return null
  return { kind: r.kind, value: r.value, at: r.at, until: r.until, reason: typeof r.reason === 'string' ? r.reason : 'revoked' }
}
