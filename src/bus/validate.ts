import { channelProblem, eventProblem } from '../channels'
import { isTraceparent, type Envelope } from './bus'
import { ok, refused, type Outcome, type Problem } from '../outcome'

export const MAX_MESSAGES_PER_PUBLISH = 1000
const FIELDS = new Set(['channel', 'channels', 'event', 'data', 'key', 'id', 'ts', 'traceparent'])

function isObject (v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

/** Carries a refusal out of the parse below; never leaves this module. */
class Refusal {
  constructor (readonly problem: Problem) {}
}

const invalidMessage = (where: string, why: string): Refusal => new Refusal({ code: 'invalid_message', where, why })
const invalidChannel = (where: string, why: string): Refusal => new Refusal({ code: 'invalid_channel', where, why })

/**
 * POST /publish bodies (one envelope, an array, or one event for `channels: [...]`) into
 * envelopes. Validates everything before anything is published, and names the first bad
 * field (invalid_message or invalid_channel), so a rejected request changes nothing.
 */
export function parsePublishBody (body: unknown, now: number): Outcome<Envelope[]> {
  try {
    return ok(parse(body, now))
  } catch (err) {
    if (err instanceof Refusal) return refused(err.problem)
    throw err
  }
}

function parse (body: unknown, now: number): Envelope[] {
  const items = Array.isArray(body) ? body : [body]
  if (items.length === 0) throw invalidMessage('body', 'must not be an empty array')
  const out: Envelope[] = []
  items.forEach((item, n) => {
    const at = Array.isArray(body) ? `body[${n}]` : 'body'
    if (!isObject(item)) throw invalidMessage(at, 'must be an object')
    for (const k of Object.keys(item)) if (!FIELDS.has(k)) throw invalidMessage(`${at}.${k}`, 'unknown field')
    let channels: unknown[]
    if (item.channels !== undefined) {
      if (item.channel !== undefined) throw invalidMessage(at, 'give either "channel" or "channels", not both')
      if (!Array.isArray(item.channels) || item.channels.length === 0) throw invalidMessage(`${at}.channels`, 'must be a non-empty array')
      channels = item.channels
    } else {
      if (item.channel === undefined) throw invalidMessage(`${at}.channel`, 'is required')
      channels = [item.channel]
    }
    channels.forEach((c, i) => {
      const problem = channelProblem(c)
      if (problem !== null) throw invalidChannel(item.channels !== undefined ? `${at}.channels[${i}]` : `${at}.channel`, problem)
    })
    const event = item.event ?? 'message'
    const ep = eventProblem(event)
    if (ep !== null) throw invalidMessage(`${at}.event`, ep)
    if (!('data' in item) || item.data === undefined) throw invalidMessage(`${at}.data`, 'is required (any JSON value)')
    if (item.key !== undefined && (typeof item.key !== 'string' || item.key.length === 0 || item.key.length > 200)) {
      throw invalidMessage(`${at}.key`, 'must be a string of 1-200 characters')
    }
    if (item.id !== undefined) throw invalidMessage(`${at}.id`, 'is assigned by the gateway; leave it out')
    if (item.ts !== undefined && (typeof item.ts !== 'number' || !Number.isFinite(item.ts))) {
      throw invalidMessage(`${at}.ts`, 'must be epoch milliseconds')
    }
    if (item.traceparent !== undefined && !isTraceparent(item.traceparent)) {
      throw invalidMessage(`${at}.traceparent`, 'must be a W3C traceparent: 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>')
    }
    for (const c of channels) {
      const m: Envelope = { channel: c as string, event: event as string, data: item.data, key: item.key as string | undefined, ts: (item.ts as number | undefined) ?? now }
      if (item.traceparent !== undefined) m.traceparent = item.traceparent as string
      out.push(m)
      if (out.length > MAX_MESSAGES_PER_PUBLISH) throw invalidMessage('body', `at most ${MAX_MESSAGES_PER_PUBLISH} messages per request`)
    }
  })
  return out
}
