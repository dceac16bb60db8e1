// The example imports the hooks from this repository's source (no npm install of its own):
// `sse-gateway/react` and `sse-gateway/client` are aliases of client/, React comes from the
// repository's node_modules. Vite compiles .tsx itself (no @vitejs/plugin-react: no Fast Refresh).
import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vite'

const here = (path: string): string => fileURLToPath(new URL(path, import.meta.url))

export default defineConfig({
  root: here('.'),
  resolve: {
    alias: {
      'sse-gateway/react': here('../../client/react/index.ts'),
      'sse-gateway/client': here('../../client/index.ts')
    }
  },
  oxc: { jsx: { runtime: 'automatic', importSource: 'react' } },
  server: { port: 5173 },
  build: { outDir: here('dist'), emptyOutDir: true }
})
