import { createHash } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { GatewayError, errors } from '../errors'
import { isSnapshot } from '../replicate/state'
import { verifyWebhook } from '../replicate/webhook'

/** Long enough to outlive the ±5 minute timestamp window on both sides. */
export const REPLAY_TTL_MS = 15 * 60_000

const invalid = (reason: string): GatewayError => new GatewayError(401, 'invalid_webhook', reason)

function header (v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v
}

const sha256 = (s: string): string => createHash('sha256').update(s).digest('base64url')

export default async function webhookRoutes (app: FastifyInstance): Promise<void> {
  const svc = app.predictions
  const count = (outcome: string): void => app.metrics.webhooks.labels(outcome).inc()

  // The signature covers the bytes as sent; parsed and re-serialized JSON would not match.
  // Encapsulated: only this plugin's routes see the raw string.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'string' }, (_request, body, done) => done(null, body))

  app.post('/webhooks/replicate', async (request) => {
    const secret = app.config.replicate.webhookSecret
    if (secret === undefined) {
      count('not_configured')
      throw errors.notConfigured('Replicate webhooks (REPLICATE_WEBHOOK_SECRET)')
    }
    const body = typeof request.body === 'string' ? request.body : ''
    const id = header(request.headers['webhook-id'])
    const verdict = verifyWebhook({
      id,
      timestamp: header(request.headers['webhook-timestamp']),
      signature: header(request.headers['webhook-signature']),
      body,
      secret
    })
    if (!verdict.ok) {
      count(verdict.reason === 'stale' ? 'stale_timestamp' : verdict.reason)
      throw invalid(verdict.reason)
    }
    // Only after the signature: an attacker must not be able to burn ids. Hashed, so the
    // key's size does not depend on what the sender put in the header. The value is the
    // body's hash: Replicate redelivering the same message (its answer got lost) is
    // acknowledged without applying it again; other bytes under a used id are a replay.
    const replayKey = `webhook:${sha256(id as string)}`
    const digest = sha256(body)
    if (!(await app.store.set(replayKey, digest, REPLAY_TTL_MS, true))) {
      if ((await app.store.get(replayKey)) === digest) {
        count('redelivered')
        return { ok: true }
      }
      count('replayed')
      throw invalid('replayed')
    }
    let snapshot: unknown
    try {
      snapshot = JSON.parse(body)
    } catch {
      snapshot = undefined
    }
    if (!isSnapshot(snapshot)) {
      count('malformed')
      throw new GatewayError(400, 'invalid_webhook', 'body is not a prediction')
    }
    try {
      // `unknown`: not a prediction this gateway created. Acknowledged, so Replicate stops
      // retrying, and nothing of it is stored or published.
      count(await svc.webhook(snapshot))
    } catch (err) {
      // Replicate retries a failed delivery with the same id: let that retry through.
      await app.store.del(replayKey).catch(() => {})
      count('error')
      throw err
    }
    return { ok: true }
  })
}
