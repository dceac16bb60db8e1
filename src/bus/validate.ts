import { channelProblem, eventProblem, RESERVED_EVENTS } from '../channels'
import { isTraceparent, type Envelope } from './bus'
import { DEFAULT_LIMITS, frame, type MessageLimits } from './frame'
import { ok, refused, Refused, type Outcome, type Problem } from '../outcome'

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

/** Why a message could not be framed within the limits (message_too_large or invalid_message), or null. */
export function dataProblem (where: string, event: string, data: unknown, limits: MessageLimits): Problem | null {
  const f = frame(event, data, limits)
  if (f.problem === null) return null
  return { code: f.tooLarge ? 'message_too_large' : 'invalid_message', where, why: f.problem }
}

/**
 * What every bus checks before it writes anything: a message that passes can be framed and
 * delivered, so a call either publishes whole or is refused whole. Channel names are the
 * edge's rule (parsePublishBody): the gateway's own sources use names no client may ask for.
 */
export function envelopesProblem (messages: readonly Envelope[], limits: MessageLimits = DEFAULT_LIMITS): Problem | null {
  let last: Envelope | null = null
  for (let n = 0; n < messages.length; n++) {
    const m = messages[n]
    const at = `messages[${n}]`
    if (typeof m.channel !== 'string' || m.channel.length === 0) return { code: 'invalid_channel', where: `${at}.channel`, why: 'must be a non-empty string' }
    // Reserved names are for the gateway's own sources to use: here only the format counts.
    const ep = eventProblem(m.event)
    if (ep !== null && !RESERVED_EVENTS.has(m.event)) return { code: 'invalid_message', where: `${at}.event`, why: ep }
    if (typeof m.ts !== 'number' || !Number.isFinite(m.ts)) return { code: 'invalid_message', where: `${at}.ts`, why: 'must be epoch milliseconds' }
    // One event to many channels shares its data: frame it once.
    if (last === null || last.data !== m.data || last.event !== m.event) {
      const dp = dataProblem(`${at}.data`, m.event, m.data, limits)
      if (dp !== null) return dp
    }
    last = m
  }
  return null
}

/**
 * POST /publish bodies (one envelope, an array, or one event for `channels: [...]`) into
 * envelopes. Validates everything before anything is published, and names the first bad
 * field (invalid_message, invalid_channel or message_too_large), so a rejected request
 * changes nothing.
 */
export function parsePublishBody (body: unknown, now: number, limits: MessageLimits = DEFAULT_LIMITS): Outcome<Envelope[]> {
  try {
    return ok(parse(body, now, limits))
  } catch (err) {
    if (err instanceof Refusal) return refused(err.problem)
    throw err
  }
}

function parse (body: unknown, now: number, limits: MessageLimits): Envelope[] {
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
    const dp = dataProblem(`${at}.data`, event as string, item.data, limits)
    if (dp !== null) throw new Refusal(dp)
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

/** envelopesProblem for a bus's publish: rejects with Refused, before anything is written. */
export function checkEnvelopes (messages: readonly Envelope[], limits: MessageLimits = DEFAULT_LIMITS): void {
  const p = envelopesProblem(messages, limits)
  if (p !== null) throw new Refused(p)
}
