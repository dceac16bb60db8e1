// The Replicate proxy's HTTP edge: builds the prediction domain (src/replicate/) from the
// app's bus, hub and config, and registers its routes.
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { PredictionService, type ReplicateOptions } from '../replicate/service'
import predictionRoutes, { publicBase } from './predictions'
import webhookRoutes from './webhooks'

export type { ReplicateOptions } from '../replicate/service'

declare module 'fastify' {
  interface FastifyInstance {
    predictions: PredictionService
  }
}

/** MAX_FRAME_BYTES' default, until the config carries it. */
const DEFAULT_MAX_FRAME_BYTES = 256 * 1024
/** Room in a frame for the SSE fields around a status payload (`id:` cursor, `event:`). */
const FRAME_OVERHEAD = 1024

async function replicatePlugin (app: FastifyInstance, opts: ReplicateOptions): Promise<void> {
  const maxFrameBytes = (app.config as { maxFrameBytes?: number }).maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES
  const svc = new PredictionService({
    bus: app.bus,
    store: app.store,
    streams: app.hub,
    metrics: app.metrics,
    replicate: app.config.replicate,
    frames: {
      budget: Math.max(1024, maxFrameBytes - FRAME_OVERHEAD),
      outputUrl: (id, index) => `${publicBase(app)}/predictions/${id}/output/${index}`
    },
    log: app.log
  }, opts)
  app.decorate('predictions', svc)
  // preClose, not onClose: pollers must hand their locks back while the bus is still up.
  app.addHook('preClose', async () => { await svc.close() })
  await app.register(predictionRoutes)
  await app.register(webhookRoutes)
}

export default fp(replicatePlugin, { name: 'replicate', fastify: '5.x' })
