// The npm tarball carries what runs (dist/, public/) and nothing else: no tests, no bench results,
// no sources. Reads `npm pack --dry-run` (after the build that `npm test` runs first).
import t from 'tap'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'

t.test('npm pack lists dist/ and public/ only, and every entry point it exports', async t => {
  const r = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { encoding: 'utf8' })
  t.equal(r.status, 0, r.stderr)
  const files: string[] = JSON.parse(r.stdout)[0].files.map((f: { path: string }) => f.path)
  const outside = files.filter(f => !/^(dist|public)\//.test(f) && !['package.json', 'README.md', 'LICENSE'].includes(f))
  t.same(outside, [], 'nothing outside dist/ and public/')
  t.same(files.filter(f => /(^|\/)(test|bench|src)\//.test(f) || f.endsWith('.tsbuildinfo')), [], 'no test/, bench/, src/ or build state')
  const pkg = JSON.parse(fs.readFileSync('package.json', 'utf8'))
  const targets = [pkg.main, pkg.types, ...Object.values(pkg.exports as Record<string, string | Record<string, string>>)
    .flatMap(v => typeof v === 'string' ? [v] : Object.values(v))]
    .map((p: string) => p.replace(/^\.\//, ''))
    .filter(p => p !== 'package.json')
  t.same(targets.filter(p => !files.includes(p)), [], 'every export is in the tarball')
})
