// How a message becomes SSE text. The bus's limits are limits on this text, so the bus (checks
// at publish and on receive) and delivery (writes it) share this one function.

const NEEDS_SPLIT = /[\r\n]/
const LINE_BREAK = /\r\n|\r|\n/

/** `event:` + `data:` lines of a message, without the id line and the blank line. */
export function messageBody (event: string, data: unknown): string {
  return bodyOf(event, typeof data === 'string' ? data : JSON.stringify(data) ?? 'null')
}

function bodyOf (event: string, text: string): string {
  const head = event === 'message' ? '' : `event: ${event}\n`
  if (!NEEDS_SPLIT.test(text)) return `${head}data: ${text}\n`
  let out = head
  for (const line of text.split(LINE_BREAK)) out += `data: ${line}\n`
  return out
}

export interface MessageLimits {
  /** Bytes of a message's framed body (`event:` and `data:` lines), without the per-connection id line. */
  maxFrameBytes: number
  /** Nesting of arrays and objects in `data`: a scalar is 0, `{}` is 1, `{"a":[1]}` is 2. */
  maxDepth: number
}

export const MAX_DATA_DEPTH = 64
export const DEFAULT_LIMITS: MessageLimits = { maxFrameBytes: 256 * 1024, maxDepth: MAX_DATA_DEPTH }

/** True when `data` nests deeper than `max`. Iterative: the input may be deeper than the stack. */
export function deeperThan (data: unknown, max: number): boolean {
  if (data === null || typeof data !== 'object') return false
  const stack: Array<[unknown, number]> = [[data, 1]]
  while (stack.length > 0) {
    const [v, d] = stack.pop() as [unknown, number]
    if (d > max) return true
    const children = Array.isArray(v) ? v : Object.values(v as object)
    for (const c of children) if (c !== null && typeof c === 'object') stack.push([c, d + 1])
  }
  return false
}

function brackets (text: string): number {
  let n = 0
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === 0x5b || c === 0x7b) n++ // [ {
  }
  return n
}

export type Framed = { body: string, problem: null } | { body: null, problem: string, tooLarge: boolean }

/**
 * The framed body of a message, or why it cannot be delivered. Never throws: JSON.stringify
 * throws on cycles and BigInt and overflows the stack on deep values, and one such message
 * must not take a fan-out loop (or the process) down with it.
 */
export function frame (event: string, data: unknown, limits: MessageLimits): Framed {
  // A line break in the event name would let a message write frames of its own.
  if (typeof event !== 'string' || event.length === 0 || NEEDS_SPLIT.test(event)) return { body: null, problem: 'has an event name that cannot be framed', tooLarge: false }
  const deep: Framed = { body: null, problem: `nests deeper than ${limits.maxDepth} levels`, tooLarge: false }
  let text: string | undefined
  try {
    text = typeof data === 'string' ? data : JSON.stringify(data)
  } catch {
    // A stack overflow on a deep value, a cycle, a BigInt, a throwing toJSON.
    if (deeperThan(data, limits.maxDepth)) return deep
    text = undefined
  }
  if (text === undefined) return { body: null, problem: 'is not a JSON value', tooLarge: false }
  // The exact walk only when the text holds enough brackets to be that deep (most never do).
  if (typeof data !== 'string' && brackets(text) > limits.maxDepth && deeperThan(data, limits.maxDepth)) return deep
  const body = bodyOf(event, text)
  // Length in UTF-16 units is a lower bound of the UTF-8 size: count bytes only when it may matter.
  if (body.length * 3 > limits.maxFrameBytes) {
    const bytes = Buffer.byteLength(body)
    if (bytes > limits.maxFrameBytes) return { body: null, problem: `frames to ${bytes} bytes, above MAX_FRAME_BYTES (${limits.maxFrameBytes})`, tooLarge: true }
  }
  return { body, problem: null }
}
