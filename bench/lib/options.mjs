// The command line of bench/run.mjs: `npm run bench -- --help`.

import { parseArgs } from 'node:util'

export const SCENARIOS = ['idle', 'broadcast', 'per-user', 'publish', 'connect', 'multi', 'storm']
/** What `--scenario all` runs: storm is left out (it needs Redis and two instances). */
export const ALL = ['idle', 'broadcast', 'per-user', 'publish', 'connect', 'multi']
/** Scenarios with an nchan counterpart (`--compare nchan`). */
export const COMPARABLE = ['idle', 'connect', 'broadcast', 'per-user']

const HELP = `usage: npm run bench -- [options]

  --scenario S      idle | broadcast | per-user | publish | connect | multi | storm | all
                    | targets | compare  (all; compare = the nchan comparison set, see README)
  --connections N   SSE streams (for multi: per instance)                                (1000)
  --duration S      seconds of load per measurement                                       (10)
  --rate R          broadcast: messages/s on the channel (10); per-user: total messages/s
                    (default: one per stream per second); storm: messages/s (1000)
  --instances K     gateway instances (K > 1 uses Redis)                                  (1; multi, storm: 2)
  --batch-ms MS     BATCH_WINDOW_MS of the gateway                                        (100)
  --clients P       load-client processes       (default: one per 5,000 streams, at least 1)
  --concurrency C   handshakes in flight while connecting, over all clients              (500)
  --payload B       padding bytes in each message's data                                  (100)
  --publishers C    autocannon connections in the publish scenario                        (32)
  --pub-connections P  per-user: publisher connections, users sharded over them, spread over
                    the instances (2 per instance; 8 for nchan, one message per request)
  --compare nchan   run each scenario against nginx + Nchan too (same run) and print ratios;
                    idle, connect, broadcast and per-user have an nchan counterpart
  --nchan-workers W nginx worker_processes for --compare nchan                             (1)
  --url URL[,URL]   target running gateways instead of starting them (needs --secret or
                    JWT_SECRET; --pid PID[,PID] to read their CPU and RSS from /proc)
  --redis           use Redis even with one instance (REDIS_URL, default redis://127.0.0.1:6379)
  --env K=V         extra gateway environment (repeatable), e.g. --env HISTORY_SIZE=100
  --profile         run the gateway with --cpu-prof and print its top self-time functions
  --perf            record the gateway with Linux perf during the load (kernel symbols)
  --heap-snapshot   idle: write a gateway heap snapshot after the hold and print the largest
                    object kinds per stream (slow at 10,000 streams)
  --no-save         do not write bench/results/*.json
  --build           run \`npm run build\` first (also done when dist/ is missing)
  --dist DIR        the built gateway to run (dist); e.g. a snapshot build of another commit
  --quiet-wait S    before each scenario wait up to S s for the machine to be quiet (< 25 %
                    busy over 2 s), so other jobs on a shared machine disturb less      (0)
`

export function options (argv = process.argv.slice(2)) {
  const { values } = parseArgs({
    args: argv,
    options: {
      scenario: { type: 'string', default: 'all' },
      connections: { type: 'string', default: '1000' },
      duration: { type: 'string', default: '10' },
      rate: { type: 'string' },
      instances: { type: 'string' },
      'batch-ms': { type: 'string', default: '100' },
      'heartbeat-ms': { type: 'string' },
      clients: { type: 'string' },
      concurrency: { type: 'string', default: '500' },
      payload: { type: 'string', default: '100' },
      publishers: { type: 'string', default: '32' },
      'pub-connections': { type: 'string' },
      compare: { type: 'string' },
      'nchan-workers': { type: 'string', default: '1' },
      url: { type: 'string' },
      pid: { type: 'string' },
      secret: { type: 'string' },
      redis: { type: 'boolean', default: false },
      'redis-url': { type: 'string' },
      env: { type: 'string', multiple: true, default: [] },
      profile: { type: 'boolean', default: false },
      'heap-snapshot': { type: 'boolean', default: false },
      perf: { type: 'boolean', default: false },
      'no-save': { type: 'boolean', default: false },
      build: { type: 'boolean', default: false },
      dist: { type: 'string', default: 'dist' },
      'quiet-wait': { type: 'string', default: '0' },
      help: { type: 'boolean', short: 'h', default: false }
    },
    allowPositionals: false
  })
  if (values.help) {
    process.stdout.write(HELP)
    process.exit(0)
  }
  const int = (k, v) => {
    const n = Number(v)
    if (!Number.isFinite(n) || n < 0) throw new Error(`--${k} must be a non-negative number, got ${v}`)
    return n
  }
  const o = {
    scenario: values.scenario,
    connections: int('connections', values.connections),
    duration: int('duration', values.duration),
    rate: values.rate === undefined ? null : int('rate', values.rate),
    instances: values.instances === undefined ? null : int('instances', values.instances),
    batchMs: int('batch-ms', values['batch-ms']),
    heartbeatMs: values['heartbeat-ms'] === undefined ? null : int('heartbeat-ms', values['heartbeat-ms']),
    clients: values.clients === undefined ? null : int('clients', values.clients),
    concurrency: int('concurrency', values.concurrency),
    payload: int('payload', values.payload),
    publishers: int('publishers', values.publishers),
    pubConnections: values['pub-connections'] === undefined ? null : int('pub-connections', values['pub-connections']),
    compare: values.compare ?? null,
    nchanWorkers: int('nchan-workers', values['nchan-workers']),
    urls: values.url === undefined ? null : values.url.split(',').map(s => s.trim()).filter(Boolean),
    pids: values.pid === undefined ? [] : values.pid.split(',').map(Number),
    secret: values.secret ?? process.env.JWT_SECRET ?? null,
    redis: values.redis,
    redisUrl: values['redis-url'] ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    env: Object.fromEntries(values.env.map(kv => {
      const i = kv.indexOf('=')
      if (i <= 0) throw new Error(`--env expects KEY=VALUE, got ${kv}`)
      return [kv.slice(0, i), kv.slice(i + 1)]
    })),
    profile: values.profile,
    heapSnapshot: values['heap-snapshot'],
    perf: values.perf,
    save: !values['no-save'],
    build: values.build,
    dist: values.dist,
    quietWait: int('quiet-wait', values['quiet-wait']),
    // Which server a set-up starts: the gateway, or nginx + Nchan for --compare.
    server: 'gateway'
  }
  const valid = [...SCENARIOS, 'all', 'targets', 'compare']
  if (!valid.includes(o.scenario)) throw new Error(`--scenario must be one of ${valid.join(', ')}`)
  if (o.compare !== null && o.compare !== 'nchan') throw new Error(`--compare knows only nchan, got ${o.compare}`)
  if (o.scenario === 'compare' && o.compare === null) o.compare = 'nchan'
  if (o.compare !== null && o.urls !== null) throw new Error('--compare starts its own servers; it does not combine with --url')
  if (o.urls !== null) {
    for (const u of o.urls) {
      const h = new URL(u).hostname
      if (h !== '127.0.0.1' && h !== 'localhost' && h !== '::1') throw new Error(`--url must be a loopback address (bench traffic stays on this machine): ${u}`)
    }
    if (o.secret === null) throw new Error('--url needs the gateway\'s JWT secret: --secret or JWT_SECRET')
  }
  return o
}
