import { isId } from '../bus/bus'

/**
 * A stream's SSE id is a cursor over ALL of its channels: `<set>:<id0>,<id1>,...` where `<set>`
 * is a short hash of the sorted channel list and `<idN>` is the last message id delivered on
 * the N-th channel. Any instance can resume from it, because ids come from the shared history.
 */
export function channelSetHash (sortedChannels: readonly string[]): string {
  let h = 0x811c9dc5
  for (const c of sortedChannels) {
    for (let i = 0; i < c.length; i++) {
      h ^= c.charCodeAt(i)
      h = Math.imul(h, 0x01000193)
    }
    h ^= 0x1f // separator, so ['ab'] and ['a','b'] differ
    h = Math.imul(h, 0x01000193)
  }
  return (h >>> 0).toString(36)
}

/** Positions per channel, or null when the cursor is malformed or for another channel set. */
export function decodeCursor (cursor: string, hash: string, n: number): string[] | null {
  const colon = cursor.indexOf(':')
  if (colon <= 0 || cursor.slice(0, colon) !== hash) return null
  const ids = cursor.slice(colon + 1).split(',')
  if (ids.length !== n || !ids.every(isId)) return null
  return ids
}
