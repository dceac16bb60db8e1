import t from 'tap'
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

// The build must give Node a require()-able module and browsers one self-contained ESM file.

const outdir = t.testdir()
execFileSync(process.execPath, [join(__dirname, '../scripts/build-client.mjs'), '--outdir', outdir], { stdio: 'inherit' })

const API = ['GatewayClientError', 'SseParser', 'backoffDelay', 'cancelPrediction', 'connect', 'createPrediction', 'parseRetryAfter', 'watchPrediction']

t.test('CommonJS build for Node', async (t) => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const c = require(join(outdir, 'index.js')) as typeof import('../client/index')
  for (const name of API) t.type(c[name as keyof typeof c], 'function', name)
  const got: string[] = []
  new c.SseParser({ onMessage: (m) => got.push(m.data) }).feed(new TextEncoder().encode('data: ok\n\n'))
  t.same(got, ['ok'])
})

t.test('ESM builds', async (t) => {
  for (const file of ['index.mjs', 'browser.mjs']) {
    const m = await import(pathToFileURL(join(outdir, file)).href) as Record<string, unknown>
    for (const name of API) t.type(m[name], 'function', `${file}: ${name}`)
  }
})

t.test('the browser bundle is one file with no Node-isms', async (t) => {
  const src = readFileSync(join(outdir, 'browser.mjs'), 'utf8')
  t.notMatch(src, /\brequire\(/)
  t.notMatch(src, /from\s*["']/, 'no imports left')
  t.notMatch(src, /\bprocess\.|\bBuffer\b|["']node:/)
  t.ok(src.length < 40_000, `small: ${src.length} bytes`)
})

t.test('type declarations', async (t) => {
  t.ok(existsSync(join(outdir, 'index.d.ts')))
  t.match(readFileSync(join(outdir, 'types.d.ts'), 'utf8'), /interface ConnectOptions/)
})
