// What every result records (machine, commit, build, settings) and where it is saved.

import { createHash } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join, relative, resolve } from 'node:path'
import { distExists } from './gateway.mjs'
import { machine } from './machine.mjs'
import { targets } from './report.mjs'
import { BENCH, ROOT } from './setup.mjs'

let machineInfo = null

/** Reads the machine, commit and build once per run; every result carries them. */
export function initMachineInfo (o) {
  machineInfo = { ...machine(), ...gitInfo(), gateway: o.urls !== null ? 'external' : relative(ROOT, resolve(ROOT, o.dist, 'main.js')), ...(o.urls !== null ? {} : buildInfo(resolve(ROOT, o.dist))) }
  return machineInfo
}

export function result (o, setup, r) {
  const res = {
    scenario: r.scenario,
    server: setup.server,
    date: new Date().toISOString(),
    command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(),
    machine: { ...machineInfo, loadavgAtResult: machine().loadavg },
    settings: {
      instances: setup.gws.length,
      bus: setup.server === 'nchan' ? 'nchan-memory' : setup.redis ? 'redis' : (o.urls !== null ? 'external' : 'memory'),
      connections: setup.total,
      connectionsPerInstance: Math.ceil(setup.total / setup.gws.length),
      rate: r.rate ?? null,
      durationS: o.duration,
      batchWindowMs: o.urls !== null || setup.server === 'nchan' ? null : setup.batchMs,
      payloadPadBytes: o.payload,
      clientProcesses: setup.clients.length,
      clientOpenFileLimit: setup.clientLimits,
      connectConcurrency: o.concurrency,
      gateway: setup.settings()
    },
    ...r
  }
  res.targets = setup.server === 'nchan' ? [] : targets(res)
  setup.results.push(res) // profiles are attached when the gateways have stopped
  return res
}

export function save (r, suffix = '') {
  const dir = join(BENCH, 'results')
  mkdirSync(dir, { recursive: true })
  const stamp = r.date.replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')
  const name = r.server === 'nchan' ? `nchan-${r.scenario}` : r.scenario
  const file = join(dir, `${name}${suffix}-${r.settings.connections}-${stamp}.json`)
  writeFileSync(file, JSON.stringify(r, null, 2) + '\n')
  return relative(ROOT, file)
}

/** Which build ran: the newest file of the build and a hash of its .js files. */
function buildInfo (dir) {
  const files = readdirSync(dir, { recursive: true }).filter(f => String(f).endsWith('.js')).map(String).sort()
  const h = createHash('sha1')
  let newest = 0
  for (const f of files) {
    const p = join(dir, f)
    h.update(f).update(readFileSync(p))
    newest = Math.max(newest, statSync(p).mtimeMs)
  }
  return { gatewayBuiltAt: new Date(newest).toISOString(), gatewayBuildSha1: h.digest('hex').slice(0, 12) }
}

function gitInfo () {
  try {
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT }).toString().trim()
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src'], { cwd: ROOT }).toString().trim().split('\n').filter(Boolean).length
    return { commit, srcFilesChanged: dirty }
  } catch {
    return {}
  }
}

export function ensureBuilt (o) {
  if (o.urls !== null) return
  if (o.dist !== 'dist') return
  if (o.build || !distExists(ROOT)) {
    process.stderr.write('building dist/ (npm run build)...\n')
    execFileSync('npm', ['run', 'build', '--silent'], { cwd: ROOT, stdio: 'inherit' })
    return
  }
  const newest = (dir) => {
    let t = 0
    for (const f of readdirSync(dir, { recursive: true })) {
      const st = statSync(join(dir, f))
      if (st.isFile() && st.mtimeMs > t) t = st.mtimeMs
    }
    return t
  }
  if (newest(join(ROOT, 'src')) > statSync(join(ROOT, 'dist/main.js')).mtimeMs + 1000) {
    process.stderr.write('warning: src/ is newer than dist/; run `npm run build` (or pass --build) to bench the current code\n')
  }
}
