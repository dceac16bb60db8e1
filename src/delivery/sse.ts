// SSE framing. A message frame is built once per message and shared by every recipient; only
// the `id:` line (the recipient's cursor) is appended per connection.
import { messageBody } from '../bus/frame'

export { messageBody }

export function controlFrame (event: string, data: unknown): string {
  return `${messageBody(event, data)}\n`
}

export function retryFrame (ms: number): string {
  return `retry: ${ms}\n\n`
}

export const HEARTBEAT = ':\n\n'
