// Builds the development tools in dev/ (the fake Replicate and `npm run dev`) into dist-dev/,
// apart from dist/: the production image copies dist/ only, so no test double ships in it.
// The gateway's own modules are not bundled: `../src/x` becomes `../dist/x`, the build the
// image runs (its routes find public/ and dist/client/ relative to themselves), so run
// `npm run build` first. npm packages stay external.
import { build } from 'esbuild'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const gatewayFromDist = {
  name: 'gateway-from-dist',
  setup (b) {
    b.onResolve({ filter: /^\.\.\/src\// }, (args) => ({ path: args.path.replace(/^\.\.\/src\//, '../dist/'), external: true }))
  }
}
await build({
  entryPoints: ['dev.ts', 'fake-replicate-cli.ts'].map((f) => join(root, 'dev', f)),
  outdir: join(root, 'dist-dev'),
  bundle: true,
  packages: 'external',
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  sourcemap: true,
  logLevel: 'warning',
  plugins: [gatewayFromDist]
})
