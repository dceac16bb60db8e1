// The frames of an SSE text exactly as sent (id-only frames, retry and comments included), for
// tests that assert the gateway's bytes.

export interface SseFrame { id?: string, event?: string, data?: string, retry?: number, comment?: string }

/** Minimal SSE parser for asserting exact frames. */
export function parseFrames (text: string): SseFrame[] {
  const frames: SseFrame[] = []
  for (const block of text.split('\n\n')) {
    if (block === '') continue
    const f: SseFrame = {}
    const data: string[] = []
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) { f.comment = line.slice(1).trim(); continue }
      const i = line.indexOf(':')
      const field = i === -1 ? line : line.slice(0, i)
      const value = i === -1 ? '' : line.slice(i + 1).replace(/^ /, '')
      if (field === 'data') data.push(value)
      else if (field === 'id') f.id = value
      else if (field === 'event') f.event = value
      else if (field === 'retry') f.retry = Number(value)
    }
    if (data.length > 0) f.data = data.join('\n')
    frames.push(f)
  }
  return frames
}
