import net from 'node:net'
import { encodeCommand, parseResp, RespError, type Resp } from './resp'

// ---------------------------------------------------------------------------------------------
// A sharded pub/sub connection to one master.
//
// Not an ioredis `Redis`: Redis pushes an unsolicited `sunsubscribe` to a subscriber when the
// slot of one of its shard channels moves away (resharding, failover). In RESP2 that push looks
// exactly like the reply to a SUNSUBSCRIBE, and ioredis matches it to whatever command is next in
// its queue: an SSUBSCRIBE in flight would resolve before the server has run it (and every later
// reply would shift by one), so "subscribed, now read the history" would open a gap. This client
// sends only CLIENT SETNAME, SSUBSCRIBE and SUNSUBSCRIBE, one channel per command, and matches
// replies by name: `[ssubscribe, ch]` answers the oldest pending command only when that command is
// SSUBSCRIBE ch, and confirms a subscription only for the channel's latest SSUBSCRIBE; a
// `[sunsubscribe, ch]` that answers no pending SUNSUBSCRIBE ch is the server dropping ch.
// ---------------------------------------------------------------------------------------------

export interface ShardEvents {
  message (conn: ShardConn, channel: string, payload: string): void
  /** The server confirmed the channel's latest SSUBSCRIBE: it is live from here on. */
  confirmed (conn: ShardConn, channel: string): void
  /** The server dropped the channel or refused its SSUBSCRIBE (slot moved, MOVED). */
  lapsed (conn: ShardConn, channel: string, reason: string): void
  /** The connection is gone (closed, refused, protocol error); every channel on it lapsed. */
  lost (conn: ShardConn, err: Error | undefined): void
}

interface Pending { kind: 'setname' | 'ssubscribe' | 'sunsubscribe', channel: string, seq: number }

/** @internal exported for the protocol tests only. */
export class ShardConn {
  /** Shard channels this connection should hold. */
  readonly want = new Set<string>()
  /** The seq of each wanted channel's latest SSUBSCRIBE; only its reply confirms. */
  private readonly latest = new Map<string, number>()
  private readonly pending: Pending[] = []
  private readonly sock: net.Socket
  private buf: Buffer = Buffer.alloc(0)
  /** Commands of one tick, written together (a resubscribe of thousands is one write). */
  private out = ''
  private seq = 0
  connected = false
  dead = false
  idleTimer: NodeJS.Timeout | null = null

  constructor (readonly key: string, host: string, port: number, private readonly ev: ShardEvents, name: string) {
    this.sock = net.connect({ host, port })
    this.sock.setNoDelay(true)
    this.sock.setKeepAlive(true, 5000)
    this.sock.setTimeout(5000, () => { if (!this.connected) this.fail(new Error(`connect timeout to ${key}`)) })
    this.sock.on('connect', () => {
      this.connected = true
      this.sock.setTimeout(0)
      this.send(['CLIENT', 'SETNAME', name], { kind: 'setname', channel: '', seq: 0 })
      for (const ch of this.want) this.ssubscribe(ch)
    })
    this.sock.on('data', (chunk: Buffer) => this.onData(chunk))
    this.sock.on('error', (err) => this.fail(err))
    this.sock.on('close', () => this.fail(undefined))
  }

  add (channel: string): void {
    if (this.dead || this.want.has(channel)) return
    this.want.add(channel)
    if (this.connected) this.ssubscribe(channel)
  }

  /** We no longer want the channel here: SUNSUBSCRIBE it. */
  remove (channel: string): void {
    if (!this.want.delete(channel)) return
    this.latest.delete(channel)
    if (this.connected && !this.dead) this.send(['SUNSUBSCRIBE', channel], { kind: 'sunsubscribe', channel, seq: 0 })
  }

  /**
   * Stops tracking a channel whose slot this node no longer owns, without a SUNSUBSCRIBE (the
   * server drops it itself and would answer MOVED). Anything it still sends for it is ignored.
   */
  forget (channel: string): void {
    this.want.delete(channel)
    this.latest.delete(channel)
  }

  close (): void {
    this.dead = true
    if (this.idleTimer !== null) clearTimeout(this.idleTimer)
    this.sock.destroy()
  }

  private ssubscribe (channel: string): void {
    const seq = ++this.seq
    this.latest.set(channel, seq)
    this.send(['SSUBSCRIBE', channel], { kind: 'ssubscribe', channel, seq })
  }

  private send (args: string[], p: Pending): void {
    this.pending.push(p)
    if (this.out === '') {
      queueMicrotask(() => {
        if (!this.dead) this.sock.write(this.out)
        this.out = ''
      })
    }
    this.out += encodeCommand(args)
  }

  private fail (err: Error | undefined): void {
    if (this.dead) return
    this.dead = true
    if (this.idleTimer !== null) clearTimeout(this.idleTimer)
    this.sock.destroy()
    this.ev.lost(this, err)
  }

  private onData (chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk])
    let at = 0
    try {
      for (;;) {
        const r = parseResp(this.buf, at)
        if (r === undefined) break
        at = r[1]
        this.onReply(r[0])
        if (this.dead) return
      }
    } catch (err) {
      this.fail(err as Error)
      return
    }
    this.buf = at === this.buf.length ? Buffer.alloc(0) : this.buf.subarray(at)
  }

  private onReply (reply: Resp): void {
    if (reply instanceof RespError) {
      // Errors are always replies (never pushes), to the oldest command still unanswered.
      const p = this.pending.shift()
      if (p?.kind === 'ssubscribe' && this.latest.get(p.channel) === p.seq) {
        this.forget(p.channel)
        this.ev.lapsed(this, p.channel, reply.message)
      } else if (p?.kind === 'setname') {
        this.fail(new Error(reply.message))
      }
      return
    }
    if (!Array.isArray(reply)) {
      if (this.pending[0]?.kind === 'setname') this.pending.shift()
      return
    }
    const kind = String(reply[0])
    const channel = String(reply[1])
    if (kind === 'smessage') {
      if (this.want.has(channel)) this.ev.message(this, channel, String(reply[2]))
      return
    }
    const head = this.pending[0]
    const answers = head !== undefined && head.kind === kind && head.channel === channel
    if (answers) this.pending.shift()
    if (kind === 'ssubscribe') {
      if (answers && this.latest.get(channel) === head.seq && this.want.has(channel)) this.ev.confirmed(this, channel)
    } else if (kind === 'sunsubscribe') {
      if (!answers && this.want.has(channel)) {
        this.forget(channel)
        this.ev.lapsed(this, channel, 'sunsubscribe pushed by the server')
      }
    }
  }
}
