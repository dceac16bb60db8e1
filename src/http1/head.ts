// The request heads the stream front door (./front-door.ts) serves itself. It parses only what
// it can serve with certainty: one complete `GET <path> HTTP/1.1` head, in one read, with no
// body, no upgrade and no header twice. Anything else, malformed or merely unusual, answers
// null and goes to node:http, whose parser accepts or refuses it as for every other route.

/** A parsed request head: header names lower-cased, values trimmed (latin1, as node's). */
export interface RequestHead {
  url: string
  headers: Record<string, string>
}

/** node:http's default --max-http-header-size: a bigger head is node's to refuse (431). */
export const MAX_HEAD_BYTES = 16384
const MAX_HEADERS = 100

// RFC 9110 token characters (header names) and field-value characters; request targets in
// origin form from printable ASCII only (no spaces, no controls, nothing percent-encodable raw).
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/
const VALUE = /^[\t\x20-\x7e\x80-\xff]*$/
const TARGET = /^\/[\x21-\x7e]*$/
// Framing and protocol-switch headers: a request carrying one is not a plain stream GET.
const NOT_OURS = new Set(['content-length', 'transfer-encoding', 'upgrade', 'expect', 'http2-settings'])

/** `chunk` as a stream request for `path` (exactly, or followed by `?`), or null: node's. */
export function parseHead (chunk: Buffer, path: string): RequestHead | null {
  const end = chunk.indexOf('\r\n\r\n')
  // Bytes after the head (a body, a pipelined request) or a head spread over reads: node's.
  if (end === -1 || end + 4 !== chunk.length || end > MAX_HEAD_BYTES) return null
  const text = chunk.toString('latin1', 0, end)
  const first = text.indexOf('\r\n')
  const line = first === -1 ? text : text.slice(0, first)
  if (!line.startsWith('GET ') || !line.endsWith(' HTTP/1.1')) return null
  const url = line.slice(4, -9)
  if (!TARGET.test(url) || !(url.startsWith(path) && (url.length === path.length || url[path.length] === '?'))) return null
  const headers: Record<string, string> = Object.create(null)
  let n = 0
  let at = first === -1 ? text.length : first + 2
  while (at < text.length) {
    const nl = text.indexOf('\r\n', at)
    const l = text.slice(at, nl === -1 ? text.length : nl)
    at = nl === -1 ? text.length : nl + 2
    const colon = l.indexOf(':')
    // colon <= 0 also refuses obs-fold continuation lines (a leading space has no name).
    if (colon <= 0 || ++n > MAX_HEADERS) return null
    const name = l.slice(0, colon).toLowerCase()
    const value = l.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '')
    if (!TOKEN.test(name) || !VALUE.test(value) || NOT_OURS.has(name) || name in headers) return null
    headers[name] = value
  }
  return { url, headers }
}
