// The floor of node:http for an SSE connect: every request gets the stream head and one frame,
// nothing else (no auth, no bus). Run it, then point the bench at it:
//   PORT=9911 node bench/floors/node-http.mjs &
//   npm run bench -- --scenario connect --connections 10000 --url http://127.0.0.1:9911 --pid $! --secret x
import http from 'node:http'

const server = http.createServer((req, res) => {
  if (req.url.startsWith('/readyz') || req.url.startsWith('/healthz') || req.url.startsWith('/metrics')) {
    res.end('{}')
    return
  }
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' })
  req.socket.setNoDelay(true)
  res.write('retry: 2000\n: connected\n\nid: x\n\n')
})
server.listen(Number(process.env.PORT ?? 9911), '127.0.0.1')
process.on('SIGINT', () => process.exit(0))
