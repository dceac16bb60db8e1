// Summarises a .heapsnapshot: self size and count per constructor / node type, largest first.
// Also usable alone: node bench/lib/heap.mjs FILE.heapsnapshot [N]

import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

export function summarizeHeap (file, n = 30) {
  const snap = JSON.parse(readFileSync(file, 'utf8'))
  const meta = snap.snapshot.meta
  const fields = meta.node_fields
  const F = fields.length
  const iType = fields.indexOf('type')
  const iName = fields.indexOf('name')
  const iSize = fields.indexOf('self_size')
  const types = meta.node_types[iType]
  const nodes = snap.nodes
  const strings = snap.strings
  const agg = new Map()
  let total = 0
  for (let i = 0; i < nodes.length; i += F) {
    const type = types[nodes[i + iType]]
    const size = nodes[i + iSize]
    total += size
    let name = type
    if (type === 'object' || type === 'native' || type === 'closure') name = `${type} ${strings[nodes[i + iName]]}`
    const a = agg.get(name) ?? { name, count: 0, bytes: 0 }
    a.count++
    a.bytes += size
    agg.set(name, a)
  }
  return { totalBytes: total, top: [...agg.values()].sort((a, b) => b.bytes - a.bytes).slice(0, n) }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { totalBytes, top } = summarizeHeap(process.argv[2], Number(process.argv[3] ?? 40))
  console.log(`total ${(totalBytes / 2 ** 20).toFixed(1)} MiB`)
  for (const a of top) console.log(`${(a.bytes / 2 ** 20).toFixed(2).padStart(8)} MiB  ${String(a.count).padStart(8)}  ${a.name}`)
}
