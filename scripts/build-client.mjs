// Builds sse-gateway/client from client/*.ts:
//   dist/client/index.js     CommonJS, for Node (require)
//   dist/client/index.mjs    ESM, for Node (import) and bundlers
//   dist/client/browser.mjs  one minified ESM file for <script type="module">; the gateway serves it at /client.js
//   dist/client/react.js     sse-gateway/react (CommonJS): the React hooks, `react` and the core external
//   dist/client/react.mjs    sse-gateway/react (ESM)
//   dist/client/*.d.ts       type declarations
// Usage: node scripts/build-client.mjs [--outdir dir]
import { build } from 'esbuild'
import ts from 'typescript'
import { mkdirSync, readdirSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
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

// sse-gateway/react imports the core only through './index', which stays a relative import of
// the core's own build: one copy of the client (one GatewayClientError for `instanceof`) and
// one React, the app's (an optional peer dependency; the core never imports it).
const coreExternal = (file) => ({
  name: 'core-external',
  setup (b) {
    b.onResolve({ filter: /^\.\/index(\.ts)?$/ }, () => ({ path: `./${file}`, external: true }))
    b.onResolve({ filter: /^\.\.?\// }, (args) => {
      if (args.importer.endsWith('react.ts')) throw new Error(`client/react.ts must import the core through './index' only, not ${args.path}`)
      return undefined
    })
  }
})
const react = { entryPoints: [join(root, 'client/react.ts')], bundle: true, external: ['react'], logLevel: 'warning', legalComments: 'none' }
await Promise.all([
  build({ ...react, outfile: join(outdir, 'react.js'), format: 'cjs', platform: 'node', target: 'node20', sourcemap: true, plugins: [coreExternal('index.js')] }),
  build({ ...react, outfile: join(outdir, 'react.mjs'), format: 'esm', platform: 'neutral', target: 'es2020', sourcemap: true, plugins: [coreExternal('index.mjs')] })
])

const files = readdirSync(join(root, 'client')).filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts')).map((f) => join(root, 'client', f))
const program = ts.createProgram(files, {
  declaration: true,
  emitDeclarationOnly: true,
  outDir: outdir,
  rootDir: join(root, 'client'),
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
