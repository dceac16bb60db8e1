// Builds the development tools in dev/ (the fake Replicate and `npm run dev`) into dist-dev/,
// apart from dist/: the production image copies dist/ only, so no test double ships in it.
// Bundled with the gateway's own sources they import; npm packages stay external.
import { build } from 'esbuild'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
await build({
  entryPoints: ['dev.ts', 'fake-replicate-cli.ts'].map((f) => join(root, 'dev', f)),
  outdir: join(root, 'dist-dev'),
  bundle: true,
  packages: 'external',
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  sourcemap: true,
  logLevel: 'warning'
})
