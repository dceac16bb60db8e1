import t, { type Test } from 'tap'
import { existsSync } from 'node:fs'
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core'
import { freePort, publish, sign, uniquePrefix, waitFor } from './helper'
import { GatewayProcess } from './gateway-process'

// End to end in Debian's Chromium (never a downloaded browser): the demo page served by a real
// gateway process (`node dist/main.js`), the browser build of the client, real Redis.

const CHROMIUM = ['/usr/lib/chromium/chromium', '/usr/bin/chromium']
// Generous: CI machines are small and run two test files at a time.
const WAIT_MS = 45000

interface Received { type: string, data: any }
interface DemoWindow { demo: { received: Received[], statuses: string[], role: () => string | null } }

async function startGateway (t: Test): Promise<GatewayProcess> {
  const gw = new GatewayProcess(await freePort(), uniquePrefix(), { DEMO: 'true' })
  t.teardown(() => gw.kill())
  await gw.start()
  return gw
}

let browser: Browser | null = null

t.before(async () => {
  const executablePath = CHROMIUM.find(p => existsSync(p))
  if (executablePath === undefined) {
    throw new Error(`Chromium is not installed (looked for ${CHROMIUM.join(' and ')}). Install Debian's chromium package (.ci/install-system.sh does it); this test never downloads a browser.`)
  }
  browser = await chromium.launch({
    executablePath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
})

t.teardown(async () => {
  await browser?.close()
})

async function newContext (t: Test): Promise<BrowserContext> {
  if (browser === null) throw new Error('no browser')
  const context = await browser.newContext()
  t.teardown(() => context.close())
  return context
}

/** Opens the demo page signed in as `user`; uncaught page errors are collected in `errors`. */
async function openDemo (context: BrowserContext, gw: GatewayProcess, user: string, errors: string[], share = false): Promise<Page> {
  const page = await context.newPage()
  page.on('pageerror', err => errors.push(`${user}: ${err.message}`))
  await page.goto(`${gw.url}/demo?user=${user}${share ? '&share=1' : ''}`)
  return page
}

async function pageState (page: Page): Promise<unknown> {
  if (page.isClosed()) return 'closed'
  return await page.evaluate(() => {
    const w = window as unknown as Partial<DemoWindow>
    return {
      status: document.getElementById('status')?.dataset.status,
      statuses: w.demo?.statuses,
      role: w.demo?.role(),
      received: w.demo?.received.map(e => `${e.type}:${JSON.stringify(e.data)}`)
    }
  }).catch((err: Error) => `unavailable: ${err.message}`)
}

/** Waits until `fn` holds in the page; on a timeout the error shows what the page had. */
async function waitInPage (page: Page, what: string, fn: (arg: any) => boolean, arg?: string | number): Promise<void> {
  try {
    await page.waitForFunction(fn, arg, { timeout: WAIT_MS, polling: 50 })
  } catch (err) {
    throw new Error(`timed out waiting for ${what}: ${(err as Error).message.split('\n')[0]}; page: ${JSON.stringify(await pageState(page))}`)
  }
}

async function waitStatus (page: Page, status: string): Promise<void> {
  await waitInPage(page, `status ${status}`, s => document.getElementById('status')?.dataset.status === s, status)
}

/** The `n` of every `event: test` the page received, in arrival order. */
async function testNumbers (page: Page): Promise<number[]> {
  return await page.evaluate(() => (window as unknown as DemoWindow).demo.received.filter(e => e.type === 'test').map(e => e.data.n as number))
}

async function waitTestEvents (page: Page, count: number): Promise<void> {
  await waitInPage(page, `${count} test events`, n => (window as unknown as DemoWindow).demo.received.filter(e => e.type === 'test').length >= n, count)
}

async function publishTests (t: Test, gw: GatewayProcess, user: string, from: number, to: number): Promise<void> {
  for (let n = from; n < to; n++) {
    const res = await publish(gw.url, { channel: `user:${user}`, event: 'test', data: { n } })
    t.equal(res.status, 202, `published test event ${n}`)
  }
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i)

t.test('the demo page opens a stream, shows published events and publishes its own', async t => {
  const gw = await startGateway(t)
  const context = await newContext(t)
  const errors: string[] = []
  const page = await openDemo(context, gw, 'alice', errors)
  await waitStatus(page, 'open')
  t.equal(await page.textContent('#who'), 'alice', 'signed in as alice')
  t.equal(await page.textContent('#status'), 'open', 'the status text says open')

  const res = await publish(gw.url, { channel: 'user:alice', event: 'test', data: { n: 1, text: 'hello from the test' } }, sign({ sub: 'backend', role: 'publisher' }))
  t.equal(res.status, 202)
  await waitInPage(page, 'the published event in the list', () =>
    Array.from(document.querySelectorAll('#events li.event')).some(li => li.textContent?.includes('hello from the test') === true))
  t.same(await testNumbers(page), [1])

  await page.fill('#message', 'clicked in the browser')
  await page.click('#publish-button')
  await waitInPage(page, 'the page\'s own event in the list', () =>
    Array.from(document.querySelectorAll('#events li.event')).some(li => li.textContent?.startsWith('demo: ') === true && li.textContent.includes('clicked in the browser')))
  const items = await page.$$eval('#events li.event', lis => lis.map(li => li.textContent))
  t.equal(items.length, 2, 'two events listed')
  t.match(items[0], /^demo: \{"text":"clicked in the browser","at":"/, 'newest first: the page\'s own event')
  t.match(items[1], /^test: \{"n":1,"text":"hello from the test"\}$/)
  const received = await page.evaluate(() => (window as unknown as DemoWindow).demo.received)
  t.same(received.map(e => e.type), ['test', 'demo'], 'window.demo.received has both')
  t.same(await page.evaluate(() => (window as unknown as DemoWindow).demo.statuses), ['connecting', 'open'])

  if (process.env.DEMO_SCREENSHOT !== undefined && process.env.DEMO_SCREENSHOT !== '') {
    await page.screenshot({ path: process.env.DEMO_SCREENSHOT, fullPage: true })
  }
  t.same(errors, [], 'no uncaught errors in the page')
})

t.test('gateway restart: retrying, then open again, every event exactly once and in order', async t => {
  const gw = await startGateway(t)
  const context = await newContext(t)
  const errors: string[] = []
  const page = await openDemo(context, gw, 'alice', errors)
  await waitStatus(page, 'open')

  await publishTests(t, gw, 'alice', 0, 5)
  await waitTestEvents(page, 5)
  // These may or may not reach the page before it goes down; either way they are in Redis.
  await publishTests(t, gw, 'alice', 5, 10)
  const code = await gw.stop()
  t.equal(code, 0, 'the gateway drained and exited 0')
  await waitStatus(page, 'retrying')
  t.equal(await page.textContent('#status'), 'retrying')
  t.comment(`before the stop the page had ${(await testNumbers(page)).length} of 10 events`)

  await gw.start()
  // Published before the page has reconnected (it is in its backoff): it gets them by resuming.
  await publishTests(t, gw, 'alice', 10, 15)
  t.comment(`published 10-14 while the page was ${await page.getAttribute('#status', 'data-status')}`)
  await waitStatus(page, 'open')
  await publishTests(t, gw, 'alice', 15, 20)
  await waitTestEvents(page, 20)

  t.same(await testNumbers(page), range(0, 20), 'every event exactly once, in order')
  const received = await page.evaluate(() => (window as unknown as DemoWindow).demo.received)
  t.same(received.filter(e => e.type !== 'test'), [], 'no reset or other control event: the history covered the gap')
  const statuses = await page.evaluate(() => (window as unknown as DemoWindow).demo.statuses)
  t.same(statuses.slice(0, 3), ['connecting', 'open', 'retrying'])
  t.equal(statuses[statuses.length - 1], 'open')
  t.ok(statuses.slice(2, -1).every(s => s === 'retrying'), `only retrying between the two opens: ${statuses.join(' ')}`)
  t.same(errors, [], 'no uncaught errors in the page')
})

t.test('three tabs share one stream, also after the leader tab closes', async t => {
  const gw = await startGateway(t)
  const context = await newContext(t)
  const errors: string[] = []
  const pages: Page[] = []
  for (let i = 0; i < 3; i++) pages.push(await openDemo(context, gw, 'bob', errors, true))
  for (const page of pages) await waitStatus(page, 'open')

  t.equal(await gw.metric('gateway_connections_active'), 1, 'one stream for three tabs')
  t.equal(await gw.metric('gateway_connections_opened_total'), 1, 'only one was ever opened')
  const roles = await Promise.all(pages.map(p => p.evaluate(() => (window as unknown as DemoWindow).demo.role())))
  t.same([...roles].sort(), ['follower', 'follower', 'leader'], `one leader, two followers: ${roles.join(' ')}`)

  await publishTests(t, gw, 'bob', 0, 5)
  for (const page of pages) await waitTestEvents(page, 5)
  for (const [i, page] of pages.entries()) t.same(await testNumbers(page), range(0, 5), `tab ${i} has every event`)

  const leader = pages[roles.indexOf('leader')]
  const rest = pages.filter(p => p !== leader)
  await leader.close()
  // Published during the hand-over: the next leader resumes from the cursor it heard.
  await publishTests(t, gw, 'bob', 5, 10)
  await waitFor(async () => (await Promise.all(rest.map(p => p.evaluate(() => (window as unknown as DemoWindow).demo.role())))).includes('leader'),
    WAIT_MS, 'a remaining tab to take over')
  let streams = { opened: 0, active: 0 }
  await waitFor(async () => {
    streams = { opened: await gw.metric('gateway_connections_opened_total'), active: await gw.metric('gateway_connections_active') }
    return streams.opened === 2 && streams.active === 1
  }, WAIT_MS, 'the new leader\'s stream, and the old one gone').catch((err: Error) => { throw new Error(`${err.message} (last seen: ${JSON.stringify(streams)})`) })
  for (const page of rest) await waitStatus(page, 'open')
  await publishTests(t, gw, 'bob', 10, 15)
  for (const page of rest) await waitTestEvents(page, 15)

  for (const page of rest) {
    const role = await page.evaluate(() => (window as unknown as DemoWindow).demo.role())
    t.same(await testNumbers(page), range(0, 15), `the ${role} tab has every event exactly once, in order`)
    const received = await page.evaluate(() => (window as unknown as DemoWindow).demo.received)
    t.same(received.filter(e => e.type !== 'test'), [], 'no reset or other control event')
  }
  t.equal(await gw.metric('gateway_connections_active'), 1, 'still one stream for the two tabs')
  t.equal(await gw.metric('gateway_connections_opened_total'), 2, 'one stream per leader, none for followers')
  t.same(errors, [], 'no uncaught errors in the pages')
})
