// docs/architecture.md maps every module of src/: each file is named there (or its folder, as
// `src/<folder>/*`), and every src/ path it names exists.
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'

const root = path.join(__dirname, '..', '..')

function files (dir: string): string[] {
  return fs.readdirSync(path.join(root, dir), { withFileTypes: true }).flatMap(e =>
    e.isDirectory() ? files(`${dir}/${e.name}`) : e.name.endsWith('.ts') ? [`${dir}/${e.name}`] : [])
}

t.test('every module of src/ is on the map, and the map names nothing that is gone', async t => {
  const doc = fs.readFileSync(path.join(root, 'docs', 'architecture.md'), 'utf8')
  const named = new Set([...doc.matchAll(/\bsrc\/[\w./-]*[\w/*]/g)].map(m => m[0]))
  const mapped = (f: string): boolean => named.has(f) || named.has(`${path.posix.dirname(f)}/*`)
  t.same(files('src').filter(f => !mapped(f)), [], 'modules docs/architecture.md does not map')
  t.same([...named].filter(p => !fs.existsSync(path.join(root, p.replace(/\/\*$/, '')))), [], 'paths it names that do not exist')
})
