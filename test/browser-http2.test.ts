import t, { type Test } from 'tap'
import { existsSync } from 'node:fs'
import https from 'node:https'
import { join } from 'node:path'
import { spawn, type ChildProcess } from 'node:child_process'
import { chromium, type Browser } from 'playwright-core'
import { freePort, publisherToken, REDIS_URL, SECRET, selfSignedCert, sign, uniquePrefix, waitFor, type TestCert } from './helper'

// Browsers allow 6 HTTP/1.1 connections per origin; over HTTP/2 one connection carries many
// streams. The same page, the same HTTPS gateway process (`node dist/main.js` with
// TLS_CERT_FILE): Debian's Chromium opens 10 EventSources, once over HTTP/2 and once with
// HTTP/2 switched off in the browser.

const CHROMIUM = ['/usr/lib/chromium/chromium', '/usr/bin/chromium']
const MAIN = join(__dirname, '..', 'dist', 'main.js')
const WAIT_MS = 45000
const STREAMS = 10

async function request (cert: TestCert, method: string, url: string, headers: Record<string, string> = {}, body?: unknown): Promise<{ status: number, text: string }> {
  return await new Promise((resolve, reject) => {
    const req = https.request(url, { method, ca: cert.cert, headers: { ...headers, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) } }, res => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { text += c })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }))
    })
    req.on('error', reject)
    req.end(body !== undefined ? JSON.stringify(body) : undefined)
  })
}

async function startGateway (t: Test, cert: TestCert): Promise<string> {
  const port = await freePort()
  const child: ChildProcess = spawn(process.execPath, [MAIN], {
    cwd: join(__dirname, '..'),
    env: {
      PATH: process.env.PATH,
      JWT_SECRET: SECRET,
      REDIS_URL,
      CHANNEL_PREFIX: uniquePrefix(),
      PORT: String(port),
      HOST: '127.0.0.1',
      TLS_CERT_FILE: cert.certFile,
      TLS_KEY_FILE: cert.keyFile,
      LOG_LEVEL: 'warn'
    },
    stdio: ['ignore', 'ignore', 'inherit']
  })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  const url = `https://127.0.0.1:${port}`
  await waitFor(async () => {
    if (child.exitCode !== null) throw new Error(`gateway exited with code ${child.exitCode}`)
    return (await request(cert, 'GET', `${url}/readyz`).catch(() => null))?.status === 200
  }, 60000, 'the HTTPS gateway')
  return url
}

async function activeStreams (cert: TestCert, url: string): Promise<number> {
  const text = (await request(cert, 'GET', `${url}/metrics`)).text
  return Number(/^gateway_connections_active (\S+)$/m.exec(text)?.[1])
}

interface PageState { protocol: string, got: number[], states: number[] }

async function tenStreams (t: Test, browser: Browser, cert: TestCert, url: string, channel: string): Promise<{ state: () => Promise<PageState> }> {
  const context = await browser.newContext()
  t.teardown(() => context.close())
  const page = await context.newPage()
  await page.goto(`${url}/healthz`)
  const token = sign({ sub: `viewer-${channel}`, channels: ['topic:*'] })
  await page.evaluate(({ n, channel, token }) => {
    const w = window as any
    w.got = new Array(n).fill(0)
    w.sources = []
    for (let i = 0; i < n; i++) {
      const es = new EventSource(`/events?channel=${channel}&access_token=${token}`)
      es.addEventListener('tick', () => { w.got[i]++ })
      w.sources.push(es)
    }
  }, { n: STREAMS, channel, token })
  return {
    state: async () => await page.evaluate(() => {
      const w = window as any
      const nav = performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming
      return { protocol: nav.nextHopProtocol, got: w.got.slice(), states: w.sources.map((s: EventSource) => s.readyState) }
    })
  }
}

async function launch (t: Test, cert: TestCert, extra: string[]): Promise<Browser> {
  const executablePath = CHROMIUM.find(p => existsSync(p))
  if (executablePath === undefined) throw new Error(`Chromium is not installed (looked for ${CHROMIUM.join(' and ')}); .ci/install-system.sh installs Debian's package`)
  const browser = await chromium.launch({
    executablePath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync',
      // Trust exactly the test's self-signed key, not every certificate.
      `--ignore-certificate-errors-spki-list=${cert.spki}`, ...extra]
  })
  t.teardown(() => browser.close())
  return browser
}

/** Publishes a tick until `done` holds in the page (a stream may open after a publish). */
async function publishUntil (cert: TestCert, url: string, channel: string, page: { state: () => Promise<PageState> }, done: (s: PageState) => boolean, what: string): Promise<PageState> {
  let last: PageState | null = null
  await waitFor(async () => {
    last = await page.state()
    if (done(last)) return true
    const r = await request(cert, 'POST', `${url}/publish`, { authorization: `Bearer ${publisherToken()}` }, { channel, event: 'tick', data: {} })
    if (r.status !== 202) throw new Error(`publish answered ${r.status}: ${r.text}`)
    return false
  }, WAIT_MS, `${what}; page: ${JSON.stringify(last)}`)
  return last as unknown as PageState
}

t.test('10 EventSources on one page: all live over HTTP/2, 6 over HTTP/1.1', async t => {
  const cert = selfSignedCert(t)
  const url = await startGateway(t, cert)

  const h2 = await tenStreams(t, await launch(t, cert, []), cert, url, 'topic:h2')
  await waitFor(async () => await activeStreams(cert, url) === STREAMS, WAIT_MS, `${STREAMS} streams open over HTTP/2`)
  const s2 = await publishUntil(cert, url, 'topic:h2', h2, s => s.got.every(n => n > 0), 'every HTTP/2 stream to receive a tick')
  t.equal(s2.protocol, 'h2', 'the page came over HTTP/2')
  t.equal(s2.got.filter(n => n > 0).length, STREAMS, 'all 10 streams received events')
  t.same(s2.states, new Array(STREAMS).fill(1), 'all 10 EventSources OPEN')

  // The same page and gateway, HTTP/2 switched off in the browser: ALPN falls back to HTTP/1.1.
  const h1 = await tenStreams(t, await launch(t, cert, ['--disable-http2']), cert, url, 'topic:h1')
  await waitFor(async () => await activeStreams(cert, url) === STREAMS + 6, WAIT_MS, '6 more streams over HTTP/1.1')
  const s1 = await publishUntil(cert, url, 'topic:h1', h1, s => s.got.filter(n => n >= 2).length === 6, 'six HTTP/1.1 streams to receive two ticks')
  t.equal(s1.protocol, 'http/1.1', 'the page came over HTTP/1.1')
  t.equal(s1.got.filter(n => n > 0).length, 6, 'only 6 of 10 streams receive events')
  t.equal(s1.states.filter(s => s === 0).length, 4, 'the other 4 wait for a connection (CONNECTING)')
  t.equal(await activeStreams(cert, url), STREAMS + 6, 'the gateway never saw the other 4')
})
