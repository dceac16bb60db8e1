// What the benchmark ran on, and how busy the machine was meanwhile.

import os from 'node:os'
import { readFileSync } from 'node:fs'

export function machine () {
  const cpus = os.cpus()
  return {
    cores: cpus.length,
    cpuModel: cpus[0]?.model ?? null,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30 * 10) / 10,
    node: process.version,
    v8: process.versions.v8,
    kernel: `${os.type()} ${os.release()}`,
    loadavg: os.loadavg().map(x => Math.round(x * 100) / 100),
    openFilesHardLimit: hardLimit()
  }
}

function hardLimit () {
  try {
    const m = /Max open files\s+(\d+)\s+(\d+)/.exec(readFileSync('/proc/self/limits', 'latin1'))
    return m === null ? null : Number(m[2])
  } catch {
    return null
  }
}

/** Busy and total CPU seconds of the whole machine (all cores), from /proc/stat. */
export function machineCpu () {
  try {
    const line = readFileSync('/proc/stat', 'latin1').split('\n')[0]
    const f = line.trim().split(/\s+/).slice(1).map(Number)
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0)
    const idle = f[3] + (f[4] ?? 0)
    return { busyS: (total - idle) / 100, totalS: total / 100 }
  } catch {
    return null
  }
}
