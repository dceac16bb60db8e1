// Optional kernel + native view of the gateway with Linux perf (bench --perf): which kernel
// functions the socket syscalls spend their time in. JS frames show as [unknown]/JIT addresses
// (use --profile for those).

import { spawn, execFileSync } from 'node:child_process'

export function startPerf (pid, file) {
  const p = spawn('perf', ['record', '-e', 'cpu-clock', '-F', '499', '-g', '-p', String(pid), '-o', file], { stdio: ['ignore', 'ignore', 'pipe'] })
  let err = ''
  p.stderr.on('data', (b) => { err += b })
  const done = new Promise(resolve => p.on('exit', resolve))
  p.on('error', () => {})
  return {
    async stop () {
      p.kill('SIGINT')
      const t = setTimeout(() => p.kill('SIGKILL'), 10000)
      await done
      clearTimeout(t)
      return err
    }
  }
}

/** Top self-time symbols and the split by object (kernel, node, JIT-compiled JS, libc). */
export function perfReport (file, n = 25) {
  const run = (sort) => execFileSync('perf', ['report', '-i', file, '--stdio', '--no-children', '--sort', sort, '--percent-limit', '0.3', '-g', 'none'], { maxBuffer: 64 * 2 ** 20, stdio: ['ignore', 'pipe', 'ignore'] }).toString()
  try {
    const rows = []
    for (const line of run('dso,symbol').split('\n')) {
      const m = /^\s+([0-9.]+)%\s+(\S.*?)\s{2,}\[([k.])\]\s+(.*?)\s*$/.exec(line)
      if (m !== null) rows.push({ pct: Number(m[1]), dso: m[2].replace(/^\[JIT\] tid \d+$/, '[JIT]'), kernel: m[3] === 'k', symbol: m[4].replace(/\s+-\s+-$/, '') })
    }
    const byObject = {}
    for (const line of run('dso').split('\n')) {
      const m = /^\s+([0-9.]+)%\s+(\S.*?)\s*$/.exec(line)
      if (m !== null) {
        const k = m[2].replace(/^\[JIT\] tid \d+$/, '[JIT] (JS code)')
        byObject[k] = (byObject[k] ?? 0) + Number(m[1])
      }
    }
    return { byObject, top: rows.slice(0, n) }
  } catch (err) {
    return { error: err.message }
  }
}
