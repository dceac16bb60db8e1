// Starts nginx with Debian's libnginx-mod-nchan (bench/nchan.conf) as the peer of
// `--compare nchan`, and reads its CPU and RSS from /proc (master and workers summed).

import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { execFileSync, spawn } from 'node:child_process'
import { join } from 'node:path'
import { freePort } from './gateway.mjs'
import { cpuSeconds, cpuSplit, rssBytes, hwmBytes } from './proc.mjs'

export const NCHAN_MODULE = '/usr/lib/nginx/modules/ngx_nchan_module.so'
const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))

/**
 * nginx and the module, installed on first use (as root, without starting the system service:
 * the same policy-rc.d guard as .ci/install-system.sh).
 */
export function ensureNchan () {
  const have = () => existsSync(NCHAN_MODULE) && hasNginx()
  if (have()) return
  process.stderr.write('installing nginx + libnginx-mod-nchan (.ci/install-system.sh nchan)...\n')
  execFileSync('bash', [join(import.meta.dirname, '../../.ci/install-system.sh'), 'nchan'], { stdio: 'inherit' })
  if (!have()) throw new Error(`nginx with ${NCHAN_MODULE} is needed for --compare nchan`)
}

function hasNginx () {
  try {
    execFileSync('nginx', ['-v'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

/** Child pids of a process (the nginx workers of the master). */
function children (pid) {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'latin1').trim().split(/\s+/).filter(Boolean).map(Number)
  } catch {
    return []
  }
}

/** { pid, port, url, host, kind: 'nchan', stop() } once /readyz answers. */
export async function startNchan ({ root, dir, workers = 1, connections = 20000, label = 'nchan' }) {
  const port = await freePort()
  const d = join(dir, `${label}-${port}`)
  mkdirSync(d, { recursive: true })
  const conf = readFileSync(join(root, 'bench/nchan.conf'), 'utf8')
    .replaceAll('{{WORKERS}}', String(workers))
    .replaceAll('{{NOFILE}}', String(Math.max(65536, connections * 2 + 1000)))
    .replaceAll('{{CONNECTIONS}}', String(connections + 1000))
    .replaceAll('{{DIR}}', d)
    .replaceAll('{{PORT}}', String(port))
  writeFileSync(join(d, 'nginx.conf'), conf)
  // nginx raises the workers' limit itself (worker_rlimit_nofile) when it runs as root; the
  // master inherits ours, so the same ulimit wrapper as the gateway's.
  const child = spawn('/bin/sh', ['-c', 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec nginx -p "$1" -c "$1/nginx.conf" -e "$1/error.log"', 'sh', d], { stdio: 'ignore' })
  let exited = null
  const exit = new Promise(resolve => child.on('exit', (code, signal) => { exited = { code, signal }; resolve(exited) }))
  const url = `http://127.0.0.1:${port}`
  const t0 = Date.now()
  for (;;) {
    if (exited !== null) throw new Error(`nginx exited during start (${JSON.stringify(exited)}); see ${d}/error.log`)
    try {
      const r = await fetch(`${url}/readyz`)
      if (r.status === 200) break
    } catch {}
    if (Date.now() - t0 > 10000) {
      child.kill('SIGKILL')
      throw new Error(`nginx not ready after 10 s; see ${d}/error.log`)
    }
    await sleep(100)
  }
  const master = child.pid
  const pids = () => [master, ...children(master)]
  return {
    kind: 'nchan',
    pid: master,
    pids,
    port,
    url,
    host: '127.0.0.1',
    logFile: join(d, 'error.log'),
    profile: null,
    gc () {},
    heapSnapshot: undefined,
    /** CPU and memory of master + workers (what the server as a whole costs). */
    proc () {
      let cpu = 0
      let sys = 0
      let rss = 0
      let hwm = 0
      for (const p of pids()) {
        cpu += cpuSeconds(p) ?? 0
        sys += cpuSplit(p)?.system ?? 0
        rss += rssBytes(p) ?? 0
        hwm += hwmBytes(p) ?? 0
      }
      return { cpuS: cpu, sysS: sys, rss, hwm }
    },
    async stop (graceMs = 5000) {
      if (exited !== null) return exited
      child.kill('SIGQUIT')
      const timer = setTimeout(() => { for (const p of pids()) { try { process.kill(p, 'SIGKILL') } catch {} } }, graceMs)
      const r = await exit
      clearTimeout(timer)
      return r
    }
  }
}
