// Summarises a V8 .cpuprofile (node --cpu-prof): self time per function, largest first.
// Also usable alone: node bench/lib/profile.mjs FILE.cpuprofile [N]

import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { relative } from 'node:path'

/** Self time (µs) per profile node, the nodes by id, and the profile's total time. */
function selfTimes (file) {
  const prof = JSON.parse(readFileSync(file, 'utf8'))
  const byId = new Map()
  for (const node of prof.nodes) byId.set(node.id, node)
  const self = new Map()
  let total = 0
  const samples = prof.samples ?? []
  const deltas = prof.timeDeltas ?? []
  for (let i = 0; i < samples.length; i++) {
    const dt = deltas[i] ?? 0
    total += dt
    self.set(samples[i], (self.get(samples[i]) ?? 0) + dt)
  }
  return { byId, self, total }
}

/** Self time per module (node:net, fastify, dist/delivery/hub.js, (garbage collector), ...). */
export function profileByModule (file, n = 25) {
  const { byId, self, total } = selfTimes(file)
  const agg = new Map()
  for (const [id, us] of self) {
    const cf = byId.get(id)?.callFrame
    if (cf === undefined) continue
    let mod = cf.url ? cf.url.replace(/^file:\/\//, '') : (cf.functionName.startsWith('(') ? cf.functionName : `native ${cf.functionName}`)
    const nm = mod.lastIndexOf('/node_modules/')
    if (nm >= 0) {
      const rest = mod.slice(nm + 14).split('/')
      mod = rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]
    } else if (mod.startsWith('/')) mod = relative(process.cwd(), mod)
    agg.set(mod, (agg.get(mod) ?? 0) + us)
  }
  return [...agg.entries()].sort((a, b) => b[1] - a[1]).slice(0, n)
    .map(([module, us]) => ({ module, selfMs: Math.round(us / 1000), pct: Math.round(us / total * 1000) / 10 }))
}

export function summarizeProfile (file, n = 25) {
  const { byId, self, total } = selfTimes(file)
  const agg = new Map()
  for (const [id, us] of self) {
    const cf = byId.get(id)?.callFrame
    if (cf === undefined) continue
    const name = cf.functionName || '(anonymous)'
    let where = cf.url ? cf.url.replace(/^file:\/\//, '') : ''
    if (where.includes('/node_modules/')) where = where.slice(where.lastIndexOf('/node_modules/') + 14)
    else if (where.startsWith('/')) where = relative(process.cwd(), where)
    if (where) where += `:${cf.lineNumber + 1}`
    const key = `${name} ${where}`
    const a = agg.get(key) ?? { name, where, us: 0 }
    a.us += us
    agg.set(key, a)
  }
  return [...agg.values()]
    .sort((a, b) => b.us - a.us)
    .slice(0, n)
    .map(a => ({ name: a.name, where: a.where, selfMs: Math.round(a.us / 1000), pct: Math.round(a.us / total * 1000) / 10 }))
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const file = process.argv[2]
  const n = Number(process.argv[3] ?? 30)
  for (const f of summarizeProfile(file, n)) console.log(`${String(f.pct).padStart(5)}%  ${String(f.selfMs).padStart(6)} ms  ${f.name}  ${f.where}`)
  console.log('\nby module:')
  for (const m of profileByModule(file, n)) console.log(`${String(m.pct).padStart(5)}%  ${String(m.selfMs).padStart(6)} ms  ${m.module}`)
}
