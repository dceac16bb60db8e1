import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import { existsSync, readdirSync, readFile, readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { extname, join, normalize, resolve, sep } from 'node:path'
import { promisify } from 'node:util'
import { chromium, type Page } from 'playwright-core'
import { startFakeReplicate } from '../dev/fake-replicate'
import { build, waitFor } from './helper'

// The React example (examples/react) built with Vite, served from a static server, in headless
// Chromium against a real gateway in demo mode next to the fake Replicate, as `npm run dev`
// runs them: a prediction goes to 100% with its output; a second one is canceled.

const ROOT = resolve(__dirname, '..')
// Debian's chromium. Never downloaded: a machine without it fails this test (see .ci/install-system.sh).
const CHROMIUM = ['/usr/lib/chromium/chromium', '/usr/bin/chromium'].find((p) => existsSync(p))
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']
// What src/cli/dev.ts gives every prediction: eight steps, streamed text.
const TOKENS = ['A', ' lighthouse', ' at', ' dawn', ',', ' painted', ' in', ' oils.']

const TYPES: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml', '.map': 'application/json' }

async function serveStatic (t: Test, dir: string): Promise<string> {
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname)
    if (path === '/favicon.ico') { res.writeHead(204).end(); return }
    const file = normalize(join(dir, path === '/' ? 'index.html' : path))
    if (!file.startsWith(dir + sep)) { res.writeHead(403).end(); return }
    readFile(file, (err, body) => {
      if (err !== null) { res.writeHead(404).end(); return }
      res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' }).end(body)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

async function text (page: Page, id: string, want: string | RegExp, timeout = 20000): Promise<string> {
  const source = typeof want === 'string' ? { s: want } : { r: want.source, f: want.flags }
  try {
    await page.waitForFunction(([id, source]) => {
      const got = document.querySelector(`[data-testid="${id}"]`)?.textContent ?? null
      if (got === null) return false
      return source.s !== undefined ? got === source.s : new RegExp(source.r as string, source.f).test(got)
    }, [id, source] as const, { timeout, polling: 20 })
  } catch (err) {
    const got = await page.evaluate((id) => document.querySelector(`[data-testid="${id}"]`)?.textContent ?? '(missing)', id)
    throw new Error(`[data-testid=${id}] never showed ${String(want)}; it shows "${got}" (${(err as Error).message.split('\n')[0]})`)
  }
  return await page.evaluate((id) => document.querySelector(`[data-testid="${id}"]`)?.textContent ?? '', id)
}

t.test('the React example in headless Chromium against the gateway in demo mode', async (t) => {
  if (CHROMIUM === undefined) {
    t.fail('chromium is missing (looked for /usr/lib/chromium/chromium and /usr/bin/chromium): install Debian\'s chromium package, e.g. bash .ci/install-system.sh')
    return
  }

  // 1. Build the example into a directory of this test. A development build: React's
  // StrictMode then mounts, unmounts and mounts again, which must still open one stream.
  const outdir = t.testdir()
  try {
    await promisify(execFile)(process.execPath, [join(ROOT, 'node_modules/vite/bin/vite.js'), 'build', 'examples/react', '--outDir', outdir, '--emptyOutDir', '--logLevel', 'warn'], {
      cwd: ROOT,
      env: { ...process.env, NODE_ENV: 'development' }
    })
  } catch (err) {
    const e = err as Error & { stdout?: string, stderr?: string }
    throw new Error(`vite build examples/react failed: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`)
  }
  t.ok(existsSync(join(outdir, 'index.html')), 'the example built')
  const bundle = readdirSync(join(outdir, 'assets')).filter((f) => f.endsWith('.js')).map((f) => readFileSync(join(outdir, 'assets', f), 'utf8')).join('\n')
  t.match(bundle, /ReactDebugCurrentFrame/, 'with React\'s development build (StrictMode double-mounts)')
  const site = await serveStatic(t, outdir)

  // 2. The gateway in demo mode next to the fake Replicate, like src/cli/dev.ts (faster steps).
  const fake = await startFakeReplicate({ stepMs: 300, plan: { steps: 8, tokens: TOKENS, stream: true } })
  t.teardown(() => fake.close()) // teardowns run last-in first-out: after the gateway's
  const gw = await build(t, {
    DEMO: 'true',
    REPLICATE_BASE_URL: fake.url,
    REPLICATE_API_TOKEN: fake.token,
    CORS_ORIGINS: '*',
    BATCH_WINDOW_MS: '0'
  }, { replicate: { pollIntervalMs: 100 } })
  const streamRequests: string[] = []
  gw.app.server.on('request', (req: { method?: string, url?: string }) => {
    if (req.method === 'GET' && req.url?.startsWith('/events') === true) streamRequests.push(req.url)
  })

  // 3. The page, cross-origin to the gateway (CORS).
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true })
  t.teardown(() => browser.close())
  const page = await browser.newPage()
  const problems: string[] = []
  page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`))
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`) })
  await page.goto(`${site}/?gateway=${encodeURIComponent(gw.url)}&user=ada`)
  await text(page, 'stream-status', 'open')
  await waitFor(() => gw.app.hub.connections.size === 1, 10000, 'the notifications stream at the gateway')
  t.equal(gw.app.hub.connections.size, 1, 'StrictMode: one stream for the notifications')
  t.equal(streamRequests.length, 1, 'StrictMode: one request for it')

  // A test notification through the gateway's publish route comes back on the user's stream.
  await page.getByRole('button', { name: 'Send me a test notification' }).click()
  await text(page, 'notifications', /Hello ada/)

  // 4. A prediction that runs to the end.
  await page.getByTestId('generate').click()
  await text(page, 'status', 'processing')
  const midway = await text(page, 'progress', /^[1-9]\d?%$/)
  t.pass(`the progress bar moves: ${midway}`)
  await text(page, 'status', 'succeeded')
  t.equal(await text(page, 'progress', '100%'), '100%', 'the progress bar reached 100%')
  t.equal(await page.getByTestId('progress-bar').getAttribute('value'), '100')
  t.equal(await text(page, 'output', TOKENS.join('')), TOKENS.join(''), 'the output appears')
  t.equal(await page.getByTestId('error').count(), 0, 'no error')
  await text(page, 'notifications', /is succeeded/)

  // 5. A second one, canceled while it runs.
  const created = fake.counts.create
  await page.getByTestId('generate').click()
  await text(page, 'status', 'processing')
  t.equal(fake.counts.create, created + 1, 'a second prediction')
  await page.getByTestId('cancel').click()
  await text(page, 'status', 'canceled')
  t.ok(fake.requests.some((r) => r.route === 'cancel'), 'the cancel reached Replicate')
  const second = [...fake.predictions.values()].at(-1)
  t.equal(second?.status, 'canceled', 'canceled at Replicate')
  t.not(await text(page, 'progress', /%$/), '100%', 'its progress stopped short')
  const partial = await page.getByTestId('output').count() === 0 ? '' : await page.getByTestId('output').textContent()
  t.not(partial, TOKENS.join(''), `no full output: "${partial ?? ''}"`)
  t.equal(await page.getByTestId('cancel').isDisabled(), true, 'nothing left to cancel')
  await text(page, 'notifications', /is canceled/)

  // The prediction watches ended; the notifications stream is still the only one.
  await waitFor(() => gw.app.hub.connections.size === 1, 10000, 'only the notifications stream left')
  t.equal(streamRequests.length, 1, 'the notifications stream was never reopened')
  t.same(problems, [], 'no page errors')
})
