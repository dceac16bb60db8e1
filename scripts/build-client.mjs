// Builds sse-gateway/client from client/*.ts:
//   dist/client/index.js     CommonJS, for Node (require)
//   dist/client/index.mjs    ESM, for Node (import) and bundlers
//   dist/client/browser.mjs  one minified ESM file for <script type="module">; the gateway serves it at /client.js
//   dist/client/react.js     sse-gateway/react (CommonJS): the React hooks (client/react/), `react` and the core external
//   dist/client/react.mjs    sse-gateway/react (ESM)
//   dist/client/*.d.ts       type declarations (react.d.ts re-exports react/index.d.ts; the primitives
//                            the client shares with the gateway, from src/shared/, under shared/)
// Usage: node scripts/build-client.mjs [--outdir dir]
import { build } from 'esbuild'
import ts from 'typescript'
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join, relative, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const i = process.argv.indexOf('--outdir')
const outdir = i > 0 ? resolve(process.argv[i + 1]) : join(root, 'dist/client')
const entry = join(root, 'client/index.ts')
mkdirSync(outdir, { recursive: true })

// Bundled so each output is one self-contained file: the client has no runtime dependencies,
// and a browser fetching /client.js must not chase relative imports.
const common = { entryPoints: [entry], bundle: true, logLevel: 'warning', legalComments: 'none' }
await Promise.all([
  build({ ...common, outfile: join(outdir, 'index.js'), format: 'cjs', platform: 'node', target: 'node20', sourcemap: true }),
  build({ ...common, outfile: join(outdir, 'index.mjs'), format: 'esm', platform: 'neutral', target: 'es2020', sourcemap: true }),
  build({ ...common, outfile: join(outdir, 'browser.mjs'), format: 'esm', platform: 'browser', target: 'es2020', minify: true })
])

// sse-gateway/react imports the core only through '../index', which stays a relative import of
// the core's own build: one copy of the client (one GatewayClientError for `instanceof`) and
// one React, the app's (an optional peer dependency; the core never imports it).
const coreExternal = (file) => ({
  name: 'core-external',
  setup (b) {
    b.onResolve({ filter: /^\.\.\/index(\.ts)?$/ }, () => ({ path: `./${file}`, external: true }))
    b.onResolve({ filter: /^\.\.\// }, (args) => {
      // Within client/react/ imports are free; out of it only the core's entry.
      if (args.importer.startsWith(reactDir)) throw new Error(`client/react/ must import the core through '../index' only, not ${args.path}`)
      return undefined
    })
  }
})
const reactDir = join(root, 'client/react') + sep
const react = { entryPoints: [join(root, 'client/react/index.ts')], bundle: true, external: ['react'], logLevel: 'warning', legalComments: 'none' }
await Promise.all([
  build({ ...react, outfile: join(outdir, 'react.js'), format: 'cjs', platform: 'node', target: 'node20', sourcemap: true, plugins: [coreExternal('index.js')] }),
  build({ ...react, outfile: join(outdir, 'react.mjs'), format: 'esm', platform: 'neutral', target: 'es2020', sourcemap: true, plugins: [coreExternal('index.mjs')] })
])

const tsFiles = (dir) => readdirSync(join(root, dir)).filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts')).map((f) => join(root, dir, f))
const files = [...tsFiles('client'), ...tsFiles('client/react')]
// Declarations are emitted relative to the repository root (the client imports src/shared/),
// then moved: client/X.d.ts to X.d.ts and src/shared/X.d.ts to shared/X.d.ts, imports rewritten.
const typesTmp = join(outdir, '.types')
const program = ts.createProgram(files, {
  declaration: true,
  emitDeclarationOnly: true,
  outDir: typesTmp,
  rootDir: root,
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.Node16,
  moduleResolution: ts.ModuleResolutionKind.Node16,
  lib: ['lib.es2022.d.ts', 'lib.dom.d.ts'],
  types: [],
  strict: true,
  skipLibCheck: true
})
const result = program.emit()
const diagnostics = [...ts.getPreEmitDiagnostics(program), ...result.diagnostics]
if (diagnostics.length > 0) {
  process.stderr.write(ts.formatDiagnosticsWithColorAndContext(diagnostics, {
    getCanonicalFileName: (f) => f,
    getCurrentDirectory: () => root,
    getNewLine: () => '\n'
  }))
  process.exit(1)
}

const placeOf = (rel) => rel.startsWith('client' + sep)
  ? join(outdir, relative('client', rel))
  : rel.startsWith(join('src', 'shared') + sep) ? join(outdir, 'shared', relative(join('src', 'shared'), rel)) : null
function walk (dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)])
}
for (const file of walk(typesTmp)) {
  const rel = relative(typesTmp, file)
  const to = placeOf(rel)
  if (to === null) continue
  const text = readFileSync(file, 'utf8').replace(/(from\s+|import\()(['"])(\.[^'"]+)\2/g, (m, pre, q, spec) => {
    const target = placeOf(relative(typesTmp, resolve(dirname(file), spec)))
    if (target === null) return m
    let r = relative(dirname(to), target).split(sep).join('/')
    if (!r.startsWith('.')) r = './' + r
    return `${pre}${q}${r}${q}`
  })
  mkdirSync(dirname(to), { recursive: true })
  writeFileSync(to, text)
}
rmSync(typesTmp, { recursive: true, force: true })
writeFileSync(join(outdir, 'react.d.ts'), "export * from './react/index'\n")
