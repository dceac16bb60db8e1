// The orchestrator's side of a load-client process (bench/lib/client-worker.mjs): a request/
// reply wrapper over the fork IPC channel.

import { join } from 'node:path'
import { spawnNode } from './spawn.mjs'

const HERE = import.meta.dirname

export class Client {
  constructor (k) {
    this.k = k
    this.proc = spawnNode(join(HERE, 'client-worker.mjs'), { ipc: true, stdio: 'inherit' })
    this.inbox = []
    this.waiters = []
    this.exited = false
    this.proc.on('message', (m) => {
      if (m.type === 'error') process.stderr.write(`client ${k}: ${m.message}\n`)
      const w = this.waiters.findIndex(x => x.type === m.type || m.type === 'error')
      if (w >= 0) {
        const [x] = this.waiters.splice(w, 1)
        if (m.type === 'error') x.reject(new Error(`client ${k}: ${m.message}`))
        else x.resolve(m)
      } else this.inbox.push(m)
    })
    this.proc.on('exit', () => {
      this.exited = true
      for (const x of this.waiters.splice(0)) x.reject(new Error(`client ${k} exited`))
    })
  }

  wait (type, timeoutMs = 600000) {
    const i = this.inbox.findIndex(m => m.type === type)
    if (i >= 0) return Promise.resolve(this.inbox.splice(i, 1)[0])
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`client ${this.k}: no '${type}' within ${timeoutMs} ms`)), timeoutMs)
      this.waiters.push({
        type,
        resolve: (m) => { clearTimeout(timer); resolve(m) },
        reject: (e) => { clearTimeout(timer); reject(e) }
      })
    })
  }

  call (cmd, payload, reply, timeoutMs) {
    const p = this.wait(reply, timeoutMs)
    this.proc.send({ cmd, ...payload })
    return p
  }

  async exit () {
    if (this.exited) return
    const done = new Promise(resolve => this.proc.once('exit', resolve))
    try { this.proc.send({ cmd: 'exit' }) } catch {}
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 3000)
    await done
    clearTimeout(t)
  }
}

/** [from, to) index ranges splitting `total` into `parts` nearly equal shares. */
export function ranges (total, parts) {
  const out = []
  for (let k = 0; k < parts; k++) out.push([Math.floor(total * k / parts), Math.floor(total * (k + 1) / parts)])
  return out
}
