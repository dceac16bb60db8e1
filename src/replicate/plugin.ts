import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import predictionRoutes from '../routes/predictions'
import webhookRoutes from '../routes/webhooks'
import { PredictionService, type ReplicateOptions } from './service'

export type { ReplicateOptions } from './service'

declare module 'fastify' {
  interface FastifyInstance {
    predictions: PredictionService
  }
}

async function replicatePlugin (app: FastifyInstance, opts: ReplicateOptions): Promise<void> {
  const svc = new PredictionService({ bus: app.bus, store: app.store, hub: app.hub, metrics: app.metrics, config: app.config, log: app.log }, opts)
  app.decorate('predictions', svc)
  // preClose, not onClose: pollers must hand their locks back while the bus is still up.
  app.addHook('preClose', async () => { await svc.close() })
  await app.register(predictionRoutes)
  await app.register(webhookRoutes)
}

export default fp(replicatePlugin, { name: 'replicate', fastify: '5.x' })
