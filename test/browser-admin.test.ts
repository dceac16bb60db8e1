import t from 'tap'
import { existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { chromium, type Browser, type Page } from 'playwright-core'
import { freePort, publish, RawStream, sign, uniquePrefix, waitFor } from './helper'
import { GatewayProcess } from './gateway-process'

// The operator page in Debian's Chromium, served by one of two real gateway processes on one
// Redis: its numbers against both instances' /metrics, its plot while a publisher runs, its tail.

const CHROMIUM = ['/usr/lib/chromium/chromium', '/usr/bin/chromium']
const WAIT_MS = 45000
const ARTIFACTS = join(__dirname, '..', 'test-artifacts')

interface AdminWindow { admin: { series: Array<{ rate: number }>, statuses: string[], tailed: Array<{ type: string, data: any }> } }

let browser: Browser | null = null
t.before(async () => {
  const executablePath = CHROMIUM.find(p => existsSync(p))
  if (executablePath === undefined) throw new Error(`Chromium is not installed (looked for ${CHROMIUM.join(' and ')}); this test never downloads a browser.`)
  browser = await chromium.launch({
    executablePath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run']
  })
})
t.teardown(async () => { await browser?.close() })

async function rowConnections (page: Page, port: number): Promise<number | null> {
  return await page.evaluate((p) => {
    const row = Array.from(document.querySelectorAll('#instances tr')).find(r => (r as HTMLElement).dataset.instance?.endsWith(`:${p}`) === true)
    return row === undefined ? null : Number((row as HTMLElement).dataset.connections)
  }, port)
}

t.test('the operator page: both instances\' numbers match their /metrics, the plot moves under load, the tail and its presence', async t => {
  const prefix = uniquePrefix()
  const env = { ADMIN: 'true', PRESENCE_EVENTS: 'room:*' }
  const gws = [new GatewayProcess(await freePort(), prefix, env), new GatewayProcess(await freePort(), prefix, env)]
  for (const gw of gws) t.teardown(() => gw.kill())
  await Promise.all(gws.map(gw => gw.start()))
  const [a, b] = gws

  const context = await (browser as Browser).newContext({ viewport: { width: 1100, height: 1300 } })
  t.teardown(() => context.close())
  const page = await context.newPage()
  const errors: string[] = []
  page.on('pageerror', err => errors.push(err.message))
  await page.goto(`${a.url}/admin?tail=room:1&access_token=${sign({ sub: 'ops', role: 'admin' })}`)
  t.notMatch(page.url(), /access_token/, 'the token is taken out of the address bar')
  await page.waitForFunction(() => document.getElementById('status')?.dataset.status === 'open', undefined, { timeout: WAIT_MS })

  const streams: RawStream[] = []
  for (const [gw, users] of [[a, ['a1', 'a2', 'a3']], [b, ['b1', 'b2']]] as const) {
    for (const u of users) {
      const s = new RawStream(gw.port, '/events?channel=room:1', { authorization: `Bearer ${sign({ sub: u, channels: ['room:*'] })}` })
      t.teardown(() => s.close())
      streams.push(s)
    }
  }
  await waitFor(() => streams.every(s => s.frames().some(f => f.id !== undefined)), WAIT_MS, 'five streams open')

  let seen = ''
  await waitFor(async () => {
    const metrics = await Promise.all(gws.map(gw => gw.metric('gateway_connections_active')))
    const shown = await Promise.all(gws.map(gw => rowConnections(page, gw.port)))
    const total = Number(await page.textContent('#total-connections'))
    seen = JSON.stringify({ metrics, shown, total })
    return shown[0] === metrics[0] && shown[1] === metrics[1] && total === metrics[0] + metrics[1] && metrics[0] === 4 && metrics[1] === 2
  }, WAIT_MS, 'the page to show both instances as /metrics does').catch((err: Error) => { throw new Error(`${err.message}: ${seen}`) })
  t.pass(`connections per instance and in total match /metrics: ${seen} (A holds the page's own stream)`)
  t.equal(await page.textContent('#total-instances'), '2')

  // A publisher runs until the plot has risen, through both instances.
  let publishing = true
  let sent = 0
  const publisher = (async () => {
    while (publishing) {
      await publish(gws[sent % 2].url, { channel: 'room:1', event: 'tick', data: { n: sent } })
      sent++
    }
  })()
  t.teardown(async () => { publishing = false; await publisher })
  const before = await page.getAttribute('#line-rate', 'points')
  await page.waitForFunction(() => {
    const s = (window as unknown as AdminWindow).admin.series
    return s.length > 3 && s.slice(-3).every(p => p.rate > 0)
  }, undefined, { timeout: WAIT_MS, polling: 100 })
  const during = await page.getAttribute('#line-rate', 'points')
  t.not(during, before, 'the deliveries/s line moved')
  t.ok(Number(await page.textContent('#rate')) > 0, `deliveries/s shown: ${await page.textContent('#rate')}`)
  t.match(await page.textContent('#p99'), /ms|s/, 'a p99 latency is shown')
  t.match(await page.textContent('#top'), /room:1\s*6/, 'room:1 is the busiest channel: five streams and the tail')

  await page.waitForFunction(() => (window as unknown as AdminWindow).admin.tailed.some(e => e.type === 'tick'), undefined, { timeout: WAIT_MS })
  await page.waitForFunction(() => document.getElementById('presence-count')?.dataset.count === '5', undefined, { timeout: WAIT_MS })
  t.equal(await page.textContent('#presence-members'), 'a1, a2, a3, b1, b2', 'the tail\'s presence: the page itself is not a member')

  mkdirSync(ARTIFACTS, { recursive: true })
  const shot = join(ARTIFACTS, 'admin.png')
  await page.screenshot({ path: shot, fullPage: true })
  t.comment(`screenshot: ${shot}`)
  publishing = false
  await publisher
  t.ok(sent > 0)
  t.same(errors, [], 'no uncaught errors in the page')
})
