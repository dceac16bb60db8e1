// Process figures from /proc (Linux): resident memory (VmRSS) and CPU seconds (utime + stime).

import { readFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'

let clkTck = 100
try {
  clkTck = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100
} catch {}

/** Resident set size in bytes, or null when the process is gone. */
export function rssBytes (pid) {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'latin1'))
    return m === null ? null : Number(m[1]) * 1024
  } catch {
    return null
  }
}

/** Peak resident set size (VmHWM) in bytes. */
export function hwmBytes (pid) {
  try {
    const m = /VmHWM:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'latin1'))
    return m === null ? null : Number(m[1]) * 1024
  } catch {
    return null
  }
}

/** utime + stime of the process, in seconds (fields 14 and 15 of /proc/<pid>/stat). */
export function cpuSeconds (pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'latin1')
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
    return (Number(f[11]) + Number(f[12])) / clkTck
  } catch {
    return null
  }
}

/** { user, system } CPU seconds of the process (utime and stime separately). */
export function cpuSplit (pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'latin1')
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
    return { user: Number(f[11]) / clkTck, system: Number(f[12]) / clkTck }
  } catch {
    return null
  }
}

/** Open-file limit (soft) of a process. */
export function fdLimit (pid) {
  try {
    const m = /Max open files\s+(\d+)\s+(\d+)/.exec(readFileSync(`/proc/${pid}/limits`, 'latin1'))
    return m === null ? null : { soft: Number(m[1]), hard: Number(m[2]) }
  } catch {
    return null
  }
}

/** Samples RSS (and CPU) of some processes every `everyMs` while running. */
export class Sampler {
  constructor (pids, everyMs = 1000) {
    this.pids = pids
    this.samples = pids.map(() => [])
    this.timer = setInterval(() => this.sample(), everyMs)
    this.timer.unref()
    this.sample()
  }

  sample () {
    const t = Date.now()
    this.pids.forEach((pid, k) => {
      const rss = rssBytes(pid)
      if (rss !== null) this.samples[k].push({ t, rss, cpu: cpuSeconds(pid) })
    })
  }

  stop () {
    clearInterval(this.timer)
    this.sample()
    return this.pids.map((pid, k) => {
      const s = this.samples[k]
      const rss = s.map(x => x.rss)
      return {
        pid,
        samples: s.length,
        rssMin: rss.length ? Math.min(...rss) : null,
        rssMax: rss.length ? Math.max(...rss) : null,
        rssLast: rss.length ? rss[rss.length - 1] : null,
        series: s.map(x => [x.t, Math.round(x.rss / 1024), x.cpu])
      }
    })
  }
}
