import net from 'node:net'
import { createHash, createPublicKey, randomBytes } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createSigner } from 'fast-jwt'
import type { FastifyInstance } from 'fastify'
import { buildApp, type BuildOptions } from '../src/app'
import { loadConfig, type Config } from '../src/config'

import { parseFrames, type SseFrame } from './sse-frames'
import { waitFor } from './wait'

export { parseFrames, waitFor, type SseFrame }

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
export const SECRET = 'test-secret-which-is-long-enough'

interface T { teardown (fn: () => unknown): void }

/** A CHANNEL_PREFIX of its own, so test files sharing one Redis never see each other. */
export function uniquePrefix (): string {
  return `t${randomBytes(4).toString('hex')}:`
}

export function testConfig (env: Record<string, string> = {}): Config {
  return loadConfig({ JWT_SECRET: SECRET, REDIS_URL, CHANNEL_PREFIX: uniquePrefix(), LOG_LEVEL: 'silent', HOST: '127.0.0.1', PORT: '0', ...env })
}

export interface Gateway {
  app: FastifyInstance
  url: string
  port: number
  config: Config
}

/** A ready gateway on a real port (real Redis; `REDIS_URL: ''` for the memory bus), closed by t.teardown. */
export async function build (t: T, env: Record<string, string> = {}, opts: Partial<BuildOptions> = {}): Promise<Gateway> {
  const config = testConfig(env)
  const app = await buildApp({ config, logger: false, ...opts })
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  const port = (app.server.address() as net.AddressInfo).port
  return { app, url: `http://127.0.0.1:${port}`, port, config }
}

export function sign (claims: Record<string, unknown>, opts: { ttlS?: number, key?: string, algorithm?: any, iss?: string, aud?: string } = {}): string {
  const signer = createSigner({
    key: opts.key ?? SECRET,
    algorithm: opts.algorithm ?? 'HS256',
    ...(opts.ttlS !== undefined ? { expiresIn: opts.ttlS * 1000 } : {}),
    ...(opts.iss !== undefined ? { iss: opts.iss } : {}),
    ...(opts.aud !== undefined ? { aud: opts.aud } : {})
  })
  return signer(claims)
}

export const publisherToken = (): string => sign({ sub: 'backend', role: 'publisher' })

export async function publish (url: string, body: unknown, token = publisherToken()): Promise<{ status: number, body: any }> {
  const res = await fetch(`${url}/publish`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body)
  })
  return { status: res.status, body: await res.json() }
}

/** A port free right now on loopback, for a process that must be restarted on the same port. */
export async function freePort (): Promise<number> {
  const srv = net.createServer()
  await new Promise<void>(resolve => srv.listen(0, '127.0.0.1', resolve))
  const port = (srv.address() as net.AddressInfo).port
  await new Promise(resolve => srv.close(resolve))
  return port
}


/**
 * Publishes a marker on `channel` (as `event`) and waits until `s` has it. A stream receives
 * messages in publish order, so once the marker is there everything published before it has
 * arrived or never will: an absence is asserted after this, not after a sleep.
 */
export async function sendMarker (url: string, s: RawStream, channel: string, event = 'marker'): Promise<void> {
  const data = `marker-${randomBytes(4).toString('hex')}`
  const r = await publish(url, { channel, event, data })
  if (r.status !== 202) throw new Error(`marker publish answered ${r.status}`)
  await waitFor(() => s.messages().some(m => m.data === data), 10_000, `the marker on ${channel}`)
}

/**
 * An SSE client on a raw socket: exact bytes, each socket read recorded, able to stop reading
 * (a slow consumer) or to vanish mid-stream.
 */
export class RawStream {
  readonly socket: net.Socket
  status = 0
  headers: Record<string, string> = {}
  /** Body bytes as received, one entry per socket read after the head. */
  reads: Buffer[] = []
  closed = false
  /** The socket error, if one ended the stream (refused or reset: a client-side failure, not an answer). */
  error: string | null = null
  private head = Buffer.alloc(0)
  private headDone = false
  private cache: { n: number, text: string } = { n: -1, text: '' }

  constructor (port: number, path: string, headers: Record<string, string> = {}) {
    this.socket = net.connect(port, '127.0.0.1')
    const lines = [`GET ${path} HTTP/1.1`, 'Host: 127.0.0.1', 'Accept: text/event-stream', ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`), '', '']
    this.socket.write(lines.join('\r\n'))
    this.socket.on('data', (chunk: Buffer) => this.onData(chunk))
    this.socket.on('close', () => { this.closed = true })
    this.socket.on('error', (err: NodeJS.ErrnoException) => { this.error = err.code ?? err.message; this.closed = true })
  }

  private onData (chunk: Buffer): void {
    if (this.headDone) {
      this.reads.push(chunk)
      return
    }
    this.head = Buffer.concat([this.head, chunk])
    const end = this.head.indexOf('\r\n\r\n')
    if (end === -1) return
    const rest = this.head.subarray(end + 4)
    const [statusLine, ...hs] = this.head.subarray(0, end).toString('latin1').split('\r\n')
    this.status = Number(statusLine.split(' ')[1])
    for (const h of hs) {
      const i = h.indexOf(':')
      this.headers[h.slice(0, i).toLowerCase()] = h.slice(i + 1).trim()
    }
    this.headDone = true
    if (rest.length > 0) this.reads.push(Buffer.from(rest))
  }

  /** The decoded body (chunked transfer-encoding removed). */
  text (): string {
    if (this.cache.n === this.reads.length) return this.cache.text
    const raw = Buffer.concat(this.reads)
    let text: string
    if (this.headers['transfer-encoding'] !== 'chunked') {
      text = raw.toString('utf8')
    } else {
      const parts: Buffer[] = []
      let at = 0
      for (;;) {
        const nl = raw.indexOf('\r\n', at)
        if (nl === -1) break
        const size = parseInt(raw.subarray(at, nl).toString('latin1'), 16)
        if (Number.isNaN(size) || size === 0 || nl + 2 + size > raw.length) break
        parts.push(raw.subarray(nl + 2, nl + 2 + size))
        at = nl + 2 + size + 2
      }
      text = Buffer.concat(parts).toString('utf8')
    }
    this.cache = { n: this.reads.length, text }
    return text
  }

  /** How many socket reads carried part of the body (chunk framing bytes included). */
  readCount (): number {
    return this.reads.length
  }

  frames (): SseFrame[] {
    return parseFrames(this.text())
  }

  messages (): SseFrame[] {
    return this.frames().filter(f => f.data !== undefined)
  }

  async waitHead (): Promise<void> {
    await waitFor(() => this.status > 0 || this.closed, 10000, 'response head')
  }

  async waitMessages (n: number, ms = 10000): Promise<SseFrame[]> {
    await waitFor(() => this.messages().length >= n, ms, `${n} messages (have ${this.messages().length})`)
    return this.messages()
  }

  /** The response ended (last chunk seen) or the socket closed. */
  ended (): boolean {
    if (this.closed) return true
    const last = this.reads[this.reads.length - 1]
    return last !== undefined && last.subarray(-5).toString('latin1') === '0\r\n\r\n'
  }

  async waitClosed (ms = 10000): Promise<void> {
    await waitFor(() => this.ended(), ms, 'stream to end')
  }

  /** One line for a failure message: what the gateway answered, or how the socket failed. */
  describe (): string {
    if (this.status === 0) return `no response head (${this.error !== null ? `socket error ${this.error}` : this.closed ? 'closed by the server' : 'still waiting'})`
    const body = this.text().slice(0, 200).replace(/\n/g, '\\n')
    const retry = this.headers['retry-after'] !== undefined ? ` retry-after ${this.headers['retry-after']}` : ''
    return `HTTP ${this.status}${retry}: ${body}${this.error !== null ? ` (socket error ${this.error})` : ''}`
  }

  close (): void {
    this.socket.destroy()
  }
}

export interface TestCert {
  certFile: string
  keyFile: string
  cert: Buffer
  /** base64 SHA-256 of the public key (SubjectPublicKeyInfo): Chromium's --ignore-certificate-errors-spki-list. */
  spki: string
}

/**
 * A self-signed certificate for 127.0.0.1 and localhost, made at test time (keys are never
 * committed) in a temporary directory removed by t.teardown.
 */
export function selfSignedCert (t: T): TestCert {
  const dir = mkdtempSync(join(tmpdir(), 'sse-cert-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const certFile = join(dir, 'cert.pem')
  const keyFile = join(dir, 'key.pem')
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' })
  const cert = readFileSync(certFile)
  const der = createPublicKey(cert).export({ type: 'spki', format: 'der' })
  return { certFile, keyFile, cert, spki: createHash('sha256').update(der).digest('base64') }
}
