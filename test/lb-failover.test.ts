import t from 'tap'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { EventSource } from 'eventsource'
import { parseFrames, publisherToken, REDIS_URL, SECRET, sign, uniquePrefix, waitFor } from './helper'
import { duplicates, publishUntilAccepted, recordedStream } from './lb-client'

// The load balancer of docker-compose.yml, run for real outside Docker: Debian's nginx on
// loopback with deploy/nginx.conf unchanged (render-local.sh only writes the listen and upstream
// includes), two gateway processes, one Redis. A real EventSource streams through nginx; the
// gateway serving it gets SIGTERM; the client must land on the other gateway and, with
// Last-Event-ID, see every published event exactly once.

const DRAIN_MS = 1000
/** Events to see on each connection before moving on: enough to prove the stream is live. */
const PER_CONN = 20

function findNginx (): string | null {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter), '/usr/sbin', '/usr/local/sbin', '/sbin']
  for (const dir of dirs) {
    if (dir === '') continue
    const file = path.join(dir, 'nginx')
    try {
      fs.accessSync(file, fs.constants.X_OK)
      return file
    } catch {
      // not here
    }
  }
  return null
}

/** Distinct free loopback ports: all are held open together, then released. */
async function freePorts (n: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: n }, async () => {
    const srv = net.createServer()
    await new Promise<void>(resolve => srv.listen(0, '127.0.0.1', resolve))
    return srv
  }))
  const ports = servers.map(s => (s.address() as net.AddressInfo).port)
  await Promise.all(servers.map(s => new Promise(resolve => s.close(resolve))))
  return ports
}

interface Proc { child: ChildProcess, exited: Promise<number | null>, stderr: () => string }

function track (child: ChildProcess): Proc {
  let err = ''
  child.stderr?.setEncoding('utf8')
  child.stderr?.on('data', (s: string) => { err += s })
  const exited = new Promise<number | null>(resolve => child.on('exit', code => resolve(code)))
  return { child, exited, stderr: () => err }
}

async function stop (p: Proc | undefined, signal: NodeJS.Signals): Promise<void> {
  if (p === undefined || p.child.exitCode !== null || p.child.signalCode !== null) return
  p.child.kill(signal)
  const timer = setTimeout(() => p.child.kill('SIGKILL'), 5000)
  await p.exited
  clearTimeout(timer)
}

const ok = async (url: string): Promise<boolean> => (await fetch(url).catch(() => null))?.status === 200

t.test('nginx (deploy/nginx.conf) in front of two gateways: SIGTERM one, the stream moves to the other and misses nothing', async t => {
  const nginxBin = findNginx()
  if (nginxBin === null) {
    t.fail('nginx is not installed (looked in PATH and /usr/sbin): the load-balancer failover test needs it. Install it with `bash .ci/install-system.sh` (Debian package nginx).')
    return
  }

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sse-lb-'))
  const gateways: Proc[] = []
  // Filled in as they start; the teardown stops whatever got started, even after a failure.
  const live: { nginx?: Proc, es?: EventSource } = {}
  let publishing = false
  let publisherDone: Promise<void> = Promise.resolve()
  t.teardown(async () => {
    publishing = false
    live.es?.close()
    await publisherDone.catch(() => {})
    await stop(live.nginx, 'SIGTERM')
    await Promise.all(gateways.map(g => stop(g, 'SIGTERM')))
    fs.rmSync(dir, { recursive: true, force: true })
  })

  const started = Date.now()
  const [lbPort, ...gwPorts] = await freePorts(3)
  const prefix = uniquePrefix()
  for (const port of gwPorts) {
    gateways.push(track(spawn(process.execPath, ['dist/main.js'], {
      env: { PATH: process.env.PATH, PORT: String(port), HOST: '127.0.0.1', JWT_SECRET: SECRET, REDIS_URL, CHANNEL_PREFIX: prefix, SHUTDOWN_DRAIN_MS: String(DRAIN_MS), LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'ignore', 'pipe']
    })))
  }

  const render = spawnSync('deploy/nginx/render-local.sh', [dir, String(lbPort), ...gwPorts.map(String)], { encoding: 'utf8' })
  t.equal(render.status, 0, `render-local.sh ${render.stderr}`)
  const prefixArgs = ['-p', `${dir}/`, '-c', path.join(dir, 'nginx.conf'), '-e', 'stderr']
  // stdout must be /dev/null, not a pipe: the config logs to /dev/stdout, which nginx opens by
  // path, and Node's pipes are socketpairs, which cannot be opened that way (ENXIO).
  const check = spawnSync(nginxBin, [...prefixArgs, '-t', '-q', '-g', `pid ${dir}/nginx.pid;`], { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] })
  if (check.status !== 0) {
    t.fail(`nginx -t rejected deploy/nginx.conf rendered for loopback (exit ${check.status}): ${check.stderr}${check.error?.message ?? ''}`)
    return
  }
  const nginx = live.nginx = track(spawn(nginxBin, [...prefixArgs, '-g', `pid ${dir}/nginx.pid; daemon off;`], { stdio: ['ignore', 'ignore', 'pipe'] }))
  const lb = `http://127.0.0.1:${lbPort}`
  const addrs = gwPorts.map(p => `127.0.0.1:${p}`)

  // Anything that already went wrong ends the wait at once with the reason.
  let publisherError: Error | null = null
  const fatal = (): void => {
    if (nginx.child.exitCode !== null) throw new Error(`nginx exited (${nginx.child.exitCode}): ${nginx.stderr()}`)
    if (publisherError !== null) throw publisherError
    if (live.es !== undefined && live.es.readyState === EventSource.CLOSED) throw new Error(`EventSource gave up: ${stream.errors.join('; ')}`)
  }
  const until = (cond: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> =>
    waitFor(async () => { fatal(); return await cond() }, ms, what)

  await Promise.all(gateways.map((g, i) => waitFor(async () => {
    if (g.child.exitCode !== null) throw new Error(`gateway ${i + 1} exited (${g.child.exitCode}): ${g.stderr()}`)
    return await ok(`http://${addrs[i]}/readyz`)
  }, 20000, `gateway ${i + 1} /readyz`)))
  await until(() => ok(`${lb}/lb-health`), 10000, 'nginx /lb-health')
  const bootMs = Date.now() - started

  // --- the client: a real EventSource, through nginx ---------------------------------------
  const sub = `lb-${randomBytes(4).toString('hex')}`
  const token = sign({ sub })
  const stream = recordedStream(lb, token)
  live.es = stream.es
  const { conns, received } = stream

  await until(() => conns[0]?.text.includes('\nid: ') === true, 10000, 'the stream to open (cursor frame)')
  const first = conns[0]
  t.equal(first.status, 200, 'the stream opened through nginx')
  t.ok(addrs.includes(first.upstream), `X-Upstream names a gateway (${first.upstreamRaw})`)
  const victimIndex = addrs.indexOf(first.upstream)
  const victim = gateways[victimIndex]
  const survivor = addrs[1 - victimIndex]

  // --- the publisher: numbered events through nginx, one at a time --------------------------
  const pubToken = publisherToken()
  /** When each numbered event was accepted (202). */
  const acceptedAt: number[] = []
  const failures: string[] = []
  const publishOne = (body: unknown): Promise<void> => publishUntilAccepted(lb, pubToken, body, failures)
  const channel = `user:${sub}`

  // Unbuffered: an event published after the stream opened reaches the client through nginx
  // promptly (buffered, it would sit in nginx until a buffer filled or the stream ended).
  const sentAt = Date.now()
  await publishOne({ channel, event: 'seq', data: 0 })
  await until(() => received.length > 0, 5000, 'event 0 through nginx (is SSE buffered?)')
  const latency = received[0].at - sentAt
  t.same(received.map(r => r.n), [0], `event 0 arrived through nginx in ${latency} ms`)
  t.match(first.text, /\nevent: seq\ndata: 0\nid: \S+\n\n/, 'as a complete frame')

  let next = 1
  publishing = true
  publisherDone = (async () => {
    while (publishing) {
      await publishOne({ channel, event: 'seq', data: next })
      acceptedAt[next] = Date.now()
      next++
      // ~50 events a second: far below HISTORY_SIZE for the whole run.
      await new Promise(resolve => setTimeout(resolve, 20))
    }
  })().catch((err: Error) => { publisherError = err })

  await until(() => received.length >= PER_CONN, 10000, `${PER_CONN} events on the first connection`)

  // --- failover ------------------------------------------------------------------------------
  const termAt = Date.now()
  victim.child.kill('SIGTERM')
  await until(() => first.endedAt !== null, 10000, 'the drained stream to end')
  const drainFrames = parseFrames(first.text)
  const last = drainFrames[drainFrames.length - 1]
  t.ok(last.retry !== undefined && last.retry >= 1500 && last.retry <= 4500, `the stream ended with a jittered retry: frame (${last.retry})`)
  const lastIdOnFirst = drainFrames.filter(f => f.id !== undefined).pop()?.id

  let timer: NodeJS.Timeout | undefined
  const code = await Promise.race([victim.exited, new Promise(resolve => { timer = setTimeout(() => resolve('still running'), DRAIN_MS + 5000) })])
  clearTimeout(timer)
  t.equal(code, 0, `the drained gateway exited 0 (${Date.now() - termAt} ms after SIGTERM)`)

  await until(() => conns.length >= 2 && conns[1].status !== 0, 15000, 'the client to reconnect')
  const second = conns[1]
  t.equal(second.status, 200, 'the reconnect was answered 200 through nginx')
  t.equal(second.upstream, survivor, `the second connection came from the other gateway (X-Upstream ${second.upstreamRaw})`)
  t.not(second.upstream, first.upstream, 'not the drained one')
  t.equal(second.lastEventId, lastIdOnFirst, 'the client resumed with the last id it had seen (Last-Event-ID)')
  const gapMs = second.openedAt - (first.endedAt as number)
  const whileAway = acceptedAt.filter(at => at > (first.endedAt as number) && at < second.openedAt).length
  t.ok(whileAway > 0, `${whileAway} events were published while the client had no stream (replayed from history)`)

  const onFirst = received.length
  await until(() => received.length >= onFirst + PER_CONN && second.text.includes('event: seq'), 15000, `${PER_CONN} more events after the reconnect`)
  publishing = false
  await publisherDone
  if (publisherError !== null) throw publisherError
  const total = next
  // Per-channel order: once this arrives, every numbered event before it has arrived too.
  await publishOne({ channel, event: 'end', data: 'end' })
  await until(stream.ended, 10000, 'the end marker')

  const seq = received.map(r => r.n)
  t.same(duplicates(received), [], 'no event twice (a duplicate names the ids it came with)')
  t.same(seq, Array.from({ length: total }, (_, i) => i), `exactly 0..${total - 1}: no gap, no duplicate, in order`)
  t.equal(conns.length, 2, 'one reconnect, no more')
  t.ok(second.text.includes('event: seq'), 'events after the failover came over the second connection')

  t.comment(`boot ${bootMs} ms; first event through nginx ${latency} ms; ${total} events; reconnect ${gapMs} ms after the drained stream ended; publish retries ${failures.length}${failures.length > 0 ? ` (${[...new Set(failures.map(f => f.split(' ')[0]))].join(',')})` : ''}; total ${Date.now() - started} ms`)
})
