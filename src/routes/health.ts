import type { FastifyInstance } from 'fastify'

export default async function healthRoutes (app: FastifyInstance): Promise<void> {
  // Probes and scrapes arrive every few seconds; logging each would drown the useful lines.
  const quiet = { logLevel: 'warn' as const }
  app.get('/healthz', quiet, async () => ({ status: 'ok' }))

  app.get('/readyz', quiet, async (_request, reply) => {
    const busReady = app.bus.isReady()
    const ready = busReady && !app.hub.draining
    reply.code(ready ? 200 : 503)
    return { status: ready ? 'ready' : 'unready', bus: busReady ? 'up' : 'down', draining: app.hub.draining }
  })

  app.get('/metrics', quiet, async (_request, reply) => {
    app.metrics.busUp.set(app.bus.isReady() ? 1 : 0)
    reply.header('content-type', app.metrics.registry.contentType)
    return await app.metrics.registry.metrics()
  })
}
