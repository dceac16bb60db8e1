// SSE framing. A message frame is built once per message and shared by every recipient; only
// the `id:` line (the recipient's cursor) is appended per connection.

const NEEDS_SPLIT = /[\r\n]/
const LINE_BREAK = /\r\n|\r|\n/

/** `event:` + `data:` lines of a message, without the id line and the blank line. */
export function messageBody (event: string, data: unknown): string {
  const head = event === 'message' ? '' : `event: ${event}\n`
  const text = typeof data === 'string' ? data : JSON.stringify(data) ?? 'null'
  if (!NEEDS_SPLIT.test(text)) return `${head}data: ${text}\n`
  let out = head
  for (const line of text.split(LINE_BREAK)) out += `data: ${line}\n`
  return out
}

export function controlFrame (event: string, data: unknown): string {
  return `${messageBody(event, data)}\n`
}

export function retryFrame (ms: number): string {
  return `retry: ${ms}\n\n`
}

export const HEARTBEAT = ':\n\n'
