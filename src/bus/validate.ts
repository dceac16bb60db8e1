import { channelProblem, eventProblem, RESERVED_EVENTS } from '../auth/channels'
import type { Envelope } from './bus'
import { DEFAULT_LIMITS, frame, type MessageLimits } from './frame'

export const MAX_MESSAGES_PER_PUBLISH = 1000
const FIELDS = new Set(['channel', 'channels', 'event', 'data', 'key', 'id', 'ts'])

/**
 * A message the bus refuses, naming the field. Core code knows nothing of HTTP: the edge maps
 * `reason` to a status (400, or 413 for `too_large`).
 */
export class MessageRejected extends Error {
  constructor (readonly field: string, readonly problem: string, readonly reason: 'invalid_message' | 'invalid_channel' | 'too_large' = 'invalid_message') {
    super(`${field}: ${problem}`)
  }
}

const reject = (field: string, problem: string): MessageRejected => new MessageRejected(field, problem)

function isObject (v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

/** Throws when a message could not be framed within the limits (checked where it enters the bus). */
export function checkData (field: string, event: string, data: unknown, limits: MessageLimits): void {
  const f = frame(event, data, limits)
  if (f.problem !== null) throw new MessageRejected(field, f.problem, f.tooLarge ? 'too_large' : 'invalid_message')
}

/**
 * What every bus checks before it writes anything: a message that passes can be framed and
 * delivered, so a call either publishes whole or is refused whole.
 */
export function checkEnvelopes (messages: readonly Envelope[], limits: MessageLimits = DEFAULT_LIMITS): void {
  let last: Envelope | null = null
  messages.forEach((m, n) => {
    const at = `messages[${n}]`
    const cp = channelProblem(m.channel)
    if (cp !== null) throw new MessageRejected(`${at}.channel`, cp, 'invalid_channel')
    // Reserved names are for the gateway's own sources to use: here only the format counts.
    const ep = eventProblem(m.event)
    if (ep !== null && !RESERVED_EVENTS.has(m.event)) throw reject(`${at}.event`, ep)
    if (typeof m.ts !== 'number' || !Number.isFinite(m.ts)) throw reject(`${at}.ts`, 'must be epoch milliseconds')
    // One event to many channels shares its data: frame it once.
    if (last === null || last.data !== m.data || last.event !== m.event) checkData(`${at}.data`, m.event, m.data, limits)
    last = m
  })
}

/**
 * POST /publish bodies (one envelope, an array, or one event for `channels: [...]`) into
 * envelopes. Validates everything before anything is published, and names the first bad
 * field, so a rejected request changes nothing.
 */
export function parsePublishBody (body: unknown, now: number, limits: MessageLimits = DEFAULT_LIMITS): Envelope[] {
  const items = Array.isArray(body) ? body : [body]
  if (items.length === 0) throw reject('body', 'must not be an empty array')
  const out: Envelope[] = []
  items.forEach((item, n) => {
    const at = Array.isArray(body) ? `body[${n}]` : 'body'
    if (!isObject(item)) throw reject(at, 'must be an object')
    for (const k of Object.keys(item)) if (!FIELDS.has(k)) throw reject(`${at}.${k}`, 'unknown field')
    let channels: unknown[]
    if (item.channels !== undefined) {
      if (item.channel !== undefined) throw reject(at, 'give either "channel" or "channels", not both')
      if (!Array.isArray(item.channels) || item.channels.length === 0) throw reject(`${at}.channels`, 'must be a non-empty array')
      channels = item.channels
    } else {
      if (item.channel === undefined) throw reject(`${at}.channel`, 'is required')
      channels = [item.channel]
    }
    channels.forEach((c, i) => {
      const problem = channelProblem(c)
      if (problem !== null) throw new MessageRejected(item.channels !== undefined ? `${at}.channels[${i}]` : `${at}.channel`, problem, 'invalid_channel')
    })
    const event = item.event ?? 'message'
    const ep = eventProblem(event)
    if (ep !== null) throw reject(`${at}.event`, ep)
    if (!('data' in item) || item.data === undefined) throw reject(`${at}.data`, 'is required (any JSON value)')
    checkData(`${at}.data`, event as string, item.data, limits)
    if (item.key !== undefined && (typeof item.key !== 'string' || item.key.length === 0 || item.key.length > 200)) {
      throw reject(`${at}.key`, 'must be a string of 1-200 characters')
    }
    if (item.id !== undefined) throw reject(`${at}.id`, 'is assigned by the gateway; leave it out')
    if (item.ts !== undefined && (typeof item.ts !== 'number' || !Number.isFinite(item.ts))) {
      throw reject(`${at}.ts`, 'must be epoch milliseconds')
    }
    for (const c of channels) {
      out.push({ channel: c as string, event: event as string, data: item.data, key: item.key as string | undefined, ts: (item.ts as number | undefined) ?? now })
      if (out.length > MAX_MESSAGES_PER_PUBLISH) throw reject('body', `at most ${MAX_MESSAGES_PER_PUBLISH} messages per request`)
    }
  })
  return out
}
