import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { signToken } from '../auth/sign'
import { errors } from '../errors'

const ROOT = join(__dirname, '..', '..')

function readOrNull (path: string): string | null {
  try {
    return readFileSync(path, 'utf8')
  } catch {
    return null
  }
}

/**
 * `/client.js` (the browser build of the client library) always; `/demo` and its sign-in only
 * in demo mode, which config refuses in production: it hands out tokens to anyone.
 */
export default async function demoRoutes (app: FastifyInstance): Promise<void> {
  // Read once at start: these files change only with a new build.
  const client = readOrNull(join(ROOT, 'dist', 'client', 'browser.mjs'))
  const page = readOrNull(join(ROOT, 'public', 'demo.html'))

  app.get('/client.js', async (_request, reply) => {
    if (client === null) throw errors.notFound('client build (run npm run build)')
    reply.header('content-type', 'text/javascript; charset=utf-8').header('cache-control', 'public, max-age=300')
    return client
  })

  if (!app.config.demo) return

  app.get('/demo', async (_request, reply) => {
    if (page === null) throw errors.notFound('demo page')
    reply.header('content-type', 'text/html; charset=utf-8')
    return page
  })

  app.post('/demo/session', async (request) => {
    const body = request.body as { user?: unknown } | undefined
    const user = typeof body?.user === 'string' && /^[A-Za-z0-9_-]{1,32}$/.test(body.user) ? body.user : null
    if (user === null) throw errors.invalidRequest('user: 1-32 characters of A-Z a-z 0-9 _ -')
    return {
      user,
      token: signToken(app.config, { sub: user, channels: ['topic:*'] }, 3600),
      // The demo publishes its own test events; a real app keeps publisher tokens on servers.
      publisherToken: signToken(app.config, { sub: `demo-publisher-${user}`, role: 'publisher' }, 3600)
    }
  })
}
