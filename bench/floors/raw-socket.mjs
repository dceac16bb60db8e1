// The floor of a bare socket for an SSE connect: accept, one read, one write of the same head
// and frame node-http.mjs sends; no HTTP parser at all. What the front door (src/http1/) is
// measured against. Same usage as node-http.mjs (PORT, --url, --pid).
import net from 'node:net'

const body = 'retry: 2000\n: connected\n\nid: x\n\n'
const head = 'HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n'
const first = head + Buffer.byteLength(body).toString(16) + '\r\n' + body + '\r\n'

const server = net.createServer(socket => {
  socket.setNoDelay(true)
  socket.on('error', () => {})
  socket.once('data', chunk => {
    const line = chunk.toString('latin1', 0, 16)
    if (line.startsWith('GET /readyz') || line.startsWith('GET /healthz') || line.startsWith('GET /metrics')) {
      socket.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}')
      return
    }
    socket.write(first)
  })
})
server.listen(Number(process.env.PORT ?? 9912), '127.0.0.1')
process.on('SIGINT', () => process.exit(0))
