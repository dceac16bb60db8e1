import t from 'tap'
import { readFileSync } from 'node:fs'
import { spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { EventSource } from 'eventsource'
import { parseFrames, sign, waitFor } from './helper'
import { duplicates, publishUntilAccepted, recordedStream, type RecordedStream } from './lb-client'

// The compose stacks, for real: run by .ci/compose-e2e.sh after `compose up -d --build` (not by
// `npm test`: the name does not match .taprc's include). Everything is checked the way a user
// meets it: through the load balancer on the host port, Prometheus's HTTP API, and the Docker
// CLI for what only Docker can show (health, exit codes, the image's contents).

const env = (name: string): string => {
  const v = process.env[name]
  if (v === undefined || v === '') throw new Error(`${name} is not set: run this through .ci/compose-e2e.sh`)
  return v
}
const STACK = env('COMPOSE_E2E_STACK') as 'single' | 'cluster'
const PROJECT = env('COMPOSE_E2E_PROJECT')
const FILE = env('COMPOSE_E2E_FILE')
const COMPOSE = env('COMPOSE_E2E_COMPOSE').split(' ')
const LB = `http://127.0.0.1:${env('LB_PORT')}`
const PROM = `http://127.0.0.1:${env('PROMETHEUS_PORT')}`
const SECRET = env('JWT_SECRET')
const IMAGE = 'sse-gateway:local'
const REPLICAS = ['gateway-1', 'gateway-2']
/** Events to see on each connection before moving on: enough to prove the stream is live. */
const PER_CONN = 20
/** Extra idle streams on the replica that is stopped: its drain then lasts ~2 s, long enough to watch /readyz. */
const HOLDERS = 200

const userToken = (sub: string): string => sign({ sub }, { key: SECRET })
const pubToken = sign({ sub: 'backend', role: 'publisher' }, { key: SECRET })

function run (cmd: string, args: string[], opts: { input?: string, env?: Record<string, string> } = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input: opts.input, env: { ...process.env, ...opts.env }, maxBuffer: 64 << 20 })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${(r.stderr ?? '').trim() || r.error?.message}`)
  return r.stdout
}
const docker = (...args: string[]): string => run('docker', args)
const compose = (...args: string[]): string => run(COMPOSE[0], [...COMPOSE.slice(1), '-p', PROJECT, '-f', FILE, ...args])

interface Container {
  Id: string
  Name: string
  Config: { Labels: Record<string, string> }
  State: { Status: string, Running: boolean, ExitCode: number, Health?: { Status: string, Log?: Array<{ Output: string }> } }
  NetworkSettings: { Networks: Record<string, { IPAddress: string }> }
}

function containers (): Map<string, Container> {
  const ids = docker('ps', '-a', '-q', '--filter', `label=com.docker.compose.project=${PROJECT}`).split('\n').filter(Boolean)
  const list: Container[] = ids.length === 0 ? [] : JSON.parse(docker('inspect', ...ids))
  return new Map(list.map(c => [c.Config.Labels['com.docker.compose.service'], c]))
}
const container = (service: string): Container => {
  const c = containers().get(service)
  if (c === undefined) throw new Error(`no container for service ${service} in project ${PROJECT}`)
  return c
}
const ipOf = (c: Container): string[] => Object.values(c.NetworkSettings.Networks).map(n => n.IPAddress).filter(Boolean)

/**
 * A replica's own address on the compose network. The host reaches it directly (Linux bridge),
 * which is how a check talks to one replica, bypassing the LB, even while it shuts down (a
 * `docker exec` into a container that is stopping fails).
 */
const direct = (service: string): string => `http://${ipOf(container(service))[0]}:3000`

/** Idle streams held open on one replica, so its drain (one stream per 10 ms) takes a while to watch. */
async function holdStreams (base: string, n: number): Promise<{ ended: () => number, close: () => void }> {
  const ac = new AbortController()
  let ended = 0
  await Promise.all(Array.from({ length: n }, async (_, i) => {
    const res = await fetch(`${base}/events`, { headers: { authorization: `Bearer ${userToken(`holder-${i}`)}` }, signal: ac.signal })
    if (res.status !== 200) throw new Error(`holder stream ${i} on ${base}: ${res.status} ${await res.text()}`)
    const reader = (res.body as ReadableStream<Uint8Array>).getReader()
    void (async () => {
      try {
        for (;;) if ((await reader.read()).done) break
        ended++
      } catch {}
    })()
  }))
  return { ended: () => ended, close: () => ac.abort() }
}

/** A real EventSource through the load balancer, recording each connection and every `seq` event. */
const openStream = (sub: string): RecordedStream => recordedStream(LB, userToken(sub))

/** Which replica (service name) answered, from X-Upstream's address. */
function replicaAt (upstream: string): string {
  const ip = upstream.split(':')[0]
  for (const name of REPLICAS) if (ipOf(container(name)).includes(ip)) return name
  throw new Error(`X-Upstream ${upstream} is not the address of ${REPLICAS.join(' or ')}`)
}

const publishLb = (body: unknown, failures: string[]): Promise<void> => publishUntilAccepted(LB, pubToken, body, failures)

async function getJson (url: string): Promise<any> {
  const res = await fetch(url)
  if (!res.ok) throw new Error(`${url}: ${res.status} ${await res.text()}`)
  return await res.json()
}

t.test(`${STACK}: every service is up and healthy`, async t => {
  const services = compose('config', '--services').split('\n').filter(Boolean)
  t.ok(REPLICAS.every(r => services.includes(r)) && services.includes('lb') && services.includes('prometheus'), `services: ${services.join(', ')}`)
  const oneShot = new Set(['redis-cluster-init'])
  const report = (): string => [...containers()].map(([s, c]) => `${s}=${c.State.Status}/${c.State.Health?.Status ?? 'no healthcheck'}`).join(' ')
  await waitFor(() => {
    const all = containers()
    return services.every(s => {
      const c = all.get(s)
      if (c === undefined) return false
      if (oneShot.has(s)) return c.State.Status === 'exited'
      if (c.State.Health === undefined) throw new Error(`${s} has no healthcheck`)
      if (!c.State.Running) throw new Error(`${s} is ${c.State.Status} (exit ${c.State.ExitCode})`)
      return c.State.Health.Status === 'healthy'
    })
  }, 120000, `every service healthy (${report()})`).catch((err: Error) => { throw new Error(`${err.message}; now: ${report()}`) })
  const all = containers()
  for (const s of services) {
    const c = all.get(s) as Container
    if (oneShot.has(s)) t.equal(c.State.ExitCode, 0, `${s} ran and exited 0`)
    else t.equal(c.State.Health?.Status, 'healthy', `${s} healthy`)
  }
  // The gateways' healthcheck is the image's own HEALTHCHECK (compose sets none for them).
  const image = JSON.parse(docker('image', 'inspect', IMAGE))[0]
  t.match(image.Config.Healthcheck?.Test?.join(' ') ?? '', /\/healthz/, 'the image carries a HEALTHCHECK on /healthz, and it passes on both replicas')
})

t.test(`${STACK}: Prometheus scrapes both replicas`, async t => {
  const want = REPLICAS.map(r => `${r}:3000`)
  let targets: any[] = []
  await waitFor(async () => {
    targets = (await getJson(`${PROM}/api/v1/targets`)).data.activeTargets.filter((x: any) => x.labels.job === 'sse-gateway')
    return want.every(w => targets.some(x => x.labels.instance === w && x.health === 'up'))
  }, 60000, 'both gateway targets up in Prometheus').catch((err: Error) => {
    throw new Error(`${err.message}: ${JSON.stringify(targets.map(x => ({ instance: x.labels.instance, health: x.health, lastError: x.lastError })))}`)
  })
  t.pass(`targets up: ${want.join(', ')}`)
  const q = await getJson(`${PROM}/api/v1/query?query=gateway_connections_active`)
  const instances = q.data.result.map((r: any) => r.metric.instance).sort()
  t.same(instances, want, `gateway_connections_active answered for both replicas (${q.data.result.map((r: any) => `${r.metric.instance}=${r.value[1]}`).join(', ')})`)
})

if (STACK === 'single') {
  t.test('the image: non-root, no dev tooling, tests or fake servers', async t => {
    const image = JSON.parse(docker('image', 'inspect', IMAGE))[0]
    t.equal(image.Config.User, 'node', 'USER node')
    const gw = container('gateway-1').Id
    const uid = /^Uid:\s+(\d+)/m.exec(docker('exec', gw, 'cat', '/proc/1/status'))?.[1]
    t.not(uid, '0', `PID 1 (the gateway) runs as uid ${uid}`)
    t.equal(docker('exec', gw, 'id', '-u').trim(), uid, 'and so does anything exec\'d into it')

    const files = docker('exec', gw, 'find', '/app', '-path', '/app/node_modules', '-prune', '-o', '-type', 'f', '-print').split('\n').filter(Boolean).map(f => f.slice('/app/'.length))
    const top = [...new Set(files.map(f => f.split('/')[0]))].sort()
    t.same(top, ['dist', 'package-lock.json', 'package.json', 'public'], `/app holds only ${top.join(', ')} (+ node_modules)`)
    t.same(files.filter(f => /\.ts$/.test(f) && !/\.d\.ts$/.test(f)), [], 'no TypeScript sources')
    t.same(files.filter(f => /(^|\/)(test|tests|bench|__tests__)\/|\.test\.|\.spec\./.test(f)), [], 'no tests or benchmarks')
    t.same(files.filter(f => /fake|(^|\/)dist\/dev\/|(^|\/)cli\/dev\./.test(f)), [], 'no fake servers or dev entry points')
    t.same(files.filter(f => /tsbuildinfo/.test(f)), [], 'no build state')

    // devDependencies that the production tree does not also need must be absent.
    const pkg = JSON.parse(readFileSync('package.json', 'utf8'))
    const prodTree = JSON.stringify(JSON.parse(run('npm', ['ls', '--omit=dev', '--all', '--json'])))
    const devOnly = Object.keys(pkg.devDependencies).filter(d => !prodTree.includes(`"${d}":`))
    const present = docker('exec', gw, 'sh', '-c', `cd /app/node_modules && for d in ${devOnly.join(' ')}; do [ -e "$d" ] && echo "$d"; done; true`).split('\n').filter(Boolean)
    t.same(present, [], `none of the ${devOnly.length} dev-only packages (${devOnly.slice(0, 6).join(', ')}, ...) in node_modules`)
    const managers = spawnSync('docker', ['exec', gw, 'sh', '-c', 'command -v npm npx yarn corepack'], { encoding: 'utf8' })
    t.equal(managers.stdout.trim(), '', 'no npm, npx, yarn or corepack on PATH')

    const size = Number(image.Size)
    const du = docker('exec', gw, 'du', '-sk', '/app/dist', '/app/node_modules', '/app/public').trim().split('\n').map(l => l.split('\t').reverse().join(' ')).join(', ')
    t.comment(`image ${IMAGE}: ${(size / 1e6).toFixed(0)} MB; /app: ${du} (KiB); ${files.length} files outside node_modules; node_modules: ${docker('exec', gw, 'ls', '/app/node_modules').split('\n').filter(Boolean).length} entries`)
  })

  t.test('docker stop of the replica serving a stream: it drains, the stream moves, nothing lost or repeated', async t => {
    const sub = `compose-${randomBytes(4).toString('hex')}`
    const channel = `user:${sub}`
    const stream = openStream(sub)
    let publishing = false
    let publisherError: Error | null = null
    let publisherDone: Promise<void> = Promise.resolve()
    let stopDone: Promise<{ code: number | null, ms: number }> | null = null
    t.teardown(async () => {
      publishing = false
      stream.es.close()
      await publisherDone.catch(() => {})
      await stopDone
    })
    const fatal = (): void => {
      if (publisherError !== null) throw publisherError
      if (stream.es.readyState === EventSource.CLOSED) throw new Error(`EventSource gave up: ${stream.errors.join('; ')}`)
    }
    const until = (cond: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> =>
      waitFor(async () => { fatal(); return await cond() }, ms, what)

    await until(() => stream.conns[0]?.text.includes('\nid: ') === true, 15000, 'the stream to open through the LB (cursor frame)')
    const first = stream.conns[0]
    t.equal(first.status, 200, 'the stream opened through the LB')
    const victim = replicaAt(first.upstream)
    const survivor = REPLICAS.find(r => r !== victim) as string
    t.pass(`X-Upstream ${first.upstream}: ${victim} serves the stream`)

    const failures: string[] = []
    await publishLb({ channel, event: 'seq', data: 0 }, failures)
    await until(() => stream.received.length > 0, 10000, 'event 0 through the LB')
    t.same(stream.received.map(r => r.n), [0], 'a publish through the LB reached the stream')

    let next = 1
    publishing = true
    publisherDone = (async () => {
      while (publishing) {
        await publishLb({ channel, event: 'seq', data: next }, failures)
        next++
        await new Promise(resolve => setTimeout(resolve, 20))
      }
    })().catch((err: Error) => { publisherError = err })
    await until(() => stream.received.length >= PER_CONN, 15000, `${PER_CONN} events on the first connection`)

    // --- docker stop, as a user (or an orchestrator) would --------------------------------------
    const grace = Number(/stop_grace_period:\s*['"]?(\d+)s/.exec(compose('config'))?.[1])
    t.ok(grace > 0, `stop_grace_period ${grace}s`)
    const victimUrl = direct(victim)
    const holders = await holdStreams(victimUrl, HOLDERS)
    t.teardown(holders.close)
    const stoppedAt = Date.now()
    const victimId = container(victim).Id
    stopDone = new Promise(resolve => {
      const p = spawn('docker', ['stop', victimId], { stdio: 'ignore' })
      p.on('exit', code => resolve({ code, ms: Date.now() - stoppedAt }))
    })
    // Readiness is false as soon as the drain starts, while the process still runs and serves.
    let readyz = { status: 0, body: '', atMs: 0, holdersEnded: 0 }
    await until(async () => {
      const res = await fetch(`${victimUrl}/readyz`, { signal: AbortSignal.timeout(2000) }).catch((err: Error) => {
        throw new Error(`/readyz of ${victim} never answered 503 before it went away (${err.message})`)
      })
      readyz = { status: res.status, body: await res.text(), atMs: Date.now() - stoppedAt, holdersEnded: holders.ended() }
      return res.status !== 200
    }, 15000, `/readyz of ${victim} to turn false`)
    t.equal(readyz.status, 503, `/readyz of ${victim} answers 503 ${readyz.atMs} ms after docker stop: ${readyz.body}`)
    t.match(JSON.parse(readyz.body), { draining: true }, 'and says it is draining')
    t.ok(readyz.holdersEnded < HOLDERS, `while streams are still being handed over (${readyz.holdersEnded} of ${HOLDERS + 1} closed)`)

    await until(() => first.endedAt !== null, 30000, 'the drained stream to end')
    const frames = parseFrames(first.text)
    const lastIdOnFirst = frames.filter(f => f.id !== undefined).pop()?.id
    t.ok(frames[frames.length - 1].retry !== undefined, `the drained stream ended with a retry: hint (${frames[frames.length - 1].retry} ms)`)

    const stop = await stopDone
    t.equal(stop.code, 0, `docker stop returned (${stop.ms} ms)`)
    t.ok(stop.ms < grace * 1000, `${victim} stopped within stop_grace_period (${stop.ms} ms < ${grace} s)`)
    t.equal(container(victim).State.ExitCode, 0, `${victim} exited 0 on its own, not killed (137)`)

    await until(() => stream.conns.length >= 2 && stream.conns[1].status !== 0, 20000, 'the client to reconnect')
    const second = stream.conns[1]
    t.equal(second.status, 200, 'the reconnect was answered 200 through the LB')
    t.equal(replicaAt(second.upstream), survivor, `the second connection came from ${survivor}`)
    t.equal(second.lastEventId, lastIdOnFirst, 'the client resumed with the last id it had seen (Last-Event-ID)')

    const onFirst = stream.received.length
    await until(() => stream.received.length >= onFirst + PER_CONN, 20000, `${PER_CONN} more events after the reconnect`)
    publishing = false
    await publisherDone
    fatal()
    const total = next
    await publishLb({ channel, event: 'end', data: 'end' }, failures)
    await until(stream.ended, 15000, 'the end marker')
    const seq = stream.received.map(r => r.n)
    const dups = duplicates(stream.received)
    const lost = Array.from({ length: total }, (_, i) => i).filter(n => !seq.includes(n))
    if (failures.length > 0) t.comment(`publishes retried through the LB: ${failures.slice(0, 5).join(' | ')}`)
    t.same({ lost, dups }, { lost: [], dups: [] }, `${total} events published: 0 lost, 0 duplicated`)
    t.same(seq, Array.from({ length: total }, (_, i) => i), 'in order')
    t.equal(stream.conns.length, 2, 'one reconnect, no more')
    t.comment(`failover: ${total} events, docker stop took ${stop.ms} ms, publish retries ${failures.length}`)
  })
}

if (STACK === 'cluster') {
  t.test('cluster: three masters, and streams delivered across replicas on every shard', async t => {
    const redis1 = container('redis-1').Id
    const info = docker('exec', redis1, 'redis-cli', 'cluster', 'info')
    t.match(info, /cluster_state:ok/, 'cluster_state:ok')
    // `cluster nodes`: id addr flags master-id ping pong epoch link slot...
    const masters = docker('exec', redis1, 'redis-cli', 'cluster', 'nodes').split('\n').filter(l => /\bmaster\b/.test(l) && !/\bfail/.test(l))
      .map(l => {
        const f = l.trim().split(/\s+/)
        return { node: f[1], ranges: f.slice(8).map(r => r.split('-').map(Number)) }
      }).filter(m => m.ranges.length > 0)
    t.equal(masters.length, 3, `three masters own the slots (${masters.map(m => m.node.split(',').pop()).join(', ')})`)

    // One user per master: the gateway keys a user's channel by the hash tag {user:<sub>}.
    const base = `cl-${randomBytes(3).toString('hex')}`
    const candidates = Array.from({ length: 40 }, (_, i) => `${base}-${i}`)
    const slots = docker('exec', redis1, 'sh', '-c', candidates.map(c => `redis-cli cluster keyslot 'user:${c}'`).join(';')).trim().split('\n').map(Number)
    const subs = masters.map(m => {
      const i = candidates.findIndex((_, j) => m.ranges.some(([a, b]) => slots[j] >= a && slots[j] <= (b ?? a)))
      if (i < 0) throw new Error(`no candidate user hashes to ${m.node}`)
      return candidates[i]
    })

    const streams = subs.map(openStream)
    t.teardown(() => { for (const s of streams) s.es.close() })
    await waitFor(() => streams.every(s => s.conns[0]?.text.includes('\nid: ') === true), 15000, 'three streams open through the LB')
    const servedBy = streams.map(s => replicaAt(s.conns[0].upstream))
    t.same([...new Set(servedBy)].sort(), REPLICAS, `the LB spread the streams over both replicas (${servedBy.join(', ')})`)

    // Each event enters through the replica that does NOT serve its stream.
    for (const [i, s] of streams.entries()) {
      const via = REPLICAS.find(r => r !== servedBy[i]) as string
      const res = await fetch(`${direct(via)}/publish`, {
        method: 'POST',
        headers: { authorization: `Bearer ${pubToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ channel: `user:${subs[i]}`, event: 'seq', data: i })
      })
      t.equal(res.status, 202, `published for user ${subs[i]} through ${via} directly: ${await res.text()}`)
      await waitFor(() => s.received.length > 0, 10000, `the event on ${servedBy[i]}'s stream`)
      t.same(s.received.map(r => r.n), [i], `delivered across replicas: ${via} -> shard ${masters[i].node.split(',').pop()} -> ${servedBy[i]}`)
    }

    // And a publish through the LB, which lands on either replica.
    const failures: string[] = []
    await publishLb({ channel: `user:${subs[0]}`, event: 'seq', data: 100 }, failures)
    await waitFor(() => streams[0].received.length > 1, 10000, 'the event published through the LB')
    t.same(streams[0].received.map(r => r.n), [0, 100], 'a publish through the LB reached the stream')
  })
}
