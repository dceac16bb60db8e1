/**
 * Why core (bus, delivery, channel rules, the prediction domain) refused something. Core knows
 * nothing of HTTP: it answers one of these, and the edge turns it into a status, headers and a
 * `{ error, message }` body in one place (`problemError` in errors.ts). `code` is the `error`
 * the client sees.
 */
export type Problem =
  | { code: 'invalid_message', where: string, why: string }
  | { code: 'invalid_channel', where: string, why: string }
  | { code: 'forbidden_channel', channel: string }
  | { code: 'too_many_channels', max: number }
  | { code: 'too_many_connections', max: number, retryAfterS: number }
  | { code: 'instance_full', retryAfterS: number }
  | { code: 'draining', retryAfterS: number }
  | { code: 'bus_unavailable', why?: string }

export type Outcome<T> = { ok: true, value: T } | { ok: false, problem: Problem }

export function ok<T> (value: T): Outcome<T> {
  return { ok: true, value }
}

export function refused<T = never> (problem: Problem): Outcome<T> {
  return { ok: false, problem }
}
