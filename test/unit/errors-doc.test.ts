// docs/errors.md lists every error code the gateway answers, with its status: this reads the
// codes out of the source (every GatewayError and UpstreamError built in src/, every factory in
// errors.ts) and out of the table, and fails on a code one side has and the other lacks.
import t, { type Test } from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { upstreamErrorFor } from '../../src/replicate/upstream'

const root = path.join(__dirname, '..', '..')

function sources (dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap(e =>
    e.isDirectory() ? sources(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : [])
}

/** code → statuses seen with it (empty when only computed statuses were seen). */
function answered (): Map<string, Set<number>> {
  const found = new Map<string, Set<number>>()
  const add = (code: string, status?: number): void => {
    const s = found.get(code) ?? new Set<number>()
    if (status !== undefined) s.add(status)
    found.set(code, s)
  }
  for (const file of sources(path.join(root, 'src'))) {
    const text = fs.readFileSync(file, 'utf8')
    for (const m of text.matchAll(/new GatewayError\(\s*(\d{3}|[A-Za-z_.]+),\s*'([a-z_]+)'/g)) {
      add(m[2], /^\d{3}$/.test(m[1]) ? Number(m[1]) : undefined)
    }
    for (const line of text.split('\n').filter(l => l.includes('new UpstreamError('))) {
      const status = /, (\d{3})(?:, [^)]*)?\)\s*\)?$/.exec(line.trim())
      for (const m of line.matchAll(/'(replicate_[a-z_]+)'/g)) add(m[1], status === null ? undefined : Number(status[1]))
    }
  }
  // Replicate's answers, as the gateway passes them on.
  for (const status of [400, 401, 402, 403, 404, 418, 422, 429, 500, 503]) {
    const e = upstreamErrorFor(status, 'x')
    add(e.code, e.httpStatus)
  }
  return found
}

function documented (t: Test): Map<string, Set<number>> {
  const doc = fs.readFileSync(path.join(root, 'docs', 'errors.md'), 'utf8')
  const rows = new Map<string, Set<number>>()
  for (const m of doc.matchAll(/^\| `([a-z_]+)` \| ([\d, ]+) \|/gm)) {
    t.notOk(rows.has(m[1]), `${m[1]} is listed once`)
    rows.set(m[1], new Set(m[2].split(',').map(s => Number(s.trim()))))
  }
  return rows
}

t.test('every code answered is in docs/errors.md with its status, and nothing else is', async t => {
  const code = answered()
  const doc = documented(t)
  t.ok(code.size >= 20, `found ${code.size} codes in src/`)
  t.same([...doc.keys()].filter(c => !code.has(c)), [], 'documented codes that nothing answers')
  t.same([...code.keys()].filter(c => !doc.has(c)), [], 'codes answered that docs/errors.md lacks')
  for (const [c, statuses] of code) {
    for (const s of statuses) t.ok(doc.get(c)?.has(s), `${c} answers ${s}: the table says ${[...doc.get(c) ?? []].join(', ')}`)
  }
})
