// Standard Webhooks signatures as Replicate sends them. Our own rather than the client's
// validateWebhook: that one checks neither the timestamp nor compares in constant time.
import { createHmac, timingSafeEqual } from 'node:crypto'

export type WebhookRejection = 'missing_headers' | 'bad_timestamp' | 'stale' | 'bad_signature'

export type WebhookVerdict = { ok: true } | { ok: false, reason: WebhookRejection }

export interface VerifyWebhookInput {
  id: string | undefined | null
  timestamp: string | undefined | null
  signature: string | undefined | null
  /** the raw body, exactly as received: re-serialized JSON would not match */
  body: string | Buffer
  /** `whsec_<base64 key>` */
  secret: string
  nowMs?: number
  toleranceS?: number
}

function keyOf (secret: string): Buffer {
  if (!secret) throw new TypeError('webhook secret is empty')
  return Buffer.from(secret.startsWith('whsec_') ? secret.slice(6) : secret, 'base64')
}

function hmac (key: Buffer, id: string, timestamp: string, body: string | Buffer): Buffer {
  return createHmac('sha256', key).update(`${id}.${timestamp}.`).update(body).digest()
}

export function signWebhook (input: { id: string, timestamp: string | number, body: string | Buffer, secret: string }): string {
  return 'v1,' + hmac(keyOf(input.secret), input.id, String(input.timestamp), input.body).toString('base64')
}

export function verifyWebhook (input: VerifyWebhookInput): WebhookVerdict {
  const { id, timestamp, signature, body, secret, nowMs = Date.now(), toleranceS = 300 } = input
  if (!id || !timestamp || !signature) return { ok: false, reason: 'missing_headers' }
  if (!/^\d{1,12}$/.test(timestamp)) return { ok: false, reason: 'bad_timestamp' }
  // Both directions: a timestamp from the future is as suspicious as an old one.
  if (Math.abs(nowMs - Number(timestamp) * 1000) > toleranceS * 1000) return { ok: false, reason: 'stale' }

  const expected = hmac(keyOf(secret), id, timestamp, body)
  // Several signatures are allowed so a sender can rotate keys; any one matching is enough.
  // Every candidate is compared, so timing says nothing about which one (if any) matched.
  let match = false
  for (const part of signature.split(' ')) {
    const [version, b64] = part.split(',', 2)
    if (version !== 'v1' || !b64) continue
    const given = Buffer.from(b64, 'base64')
    if (given.length === expected.length && timingSafeEqual(given, expected)) match = true
  }
  return match ? { ok: true } : { ok: false, reason: 'bad_signature' }
}
