// What one small socket write costs on this machine: a plain node:http server holds N SSE-like
// responses over loopback and writes one ~230-byte frame to each of them, round after round,
// every 100 ms (like the gateway's flush tick). Prints user and kernel CPU µs per write for
//   http    res.write(frame)                        (what the gateway does today)
//   socket  res.socket.write(<chunk header>frame\r\n) (the chunk framing by hand)
// The reader is a separate process that just drains the sockets.
//
//   node bench/lib/write-cost.mjs [N=10000] [rounds=10]

import { fork } from 'node:child_process'
import http from 'node:http'
import net from 'node:net'
import { fileURLToPath } from 'node:url'

const frame = 'event: tick\ndata: ' + JSON.stringify({ s: 1, t: Date.now() + 0.5, p: 'x'.repeat(100) }) + '\nid: 1x2y3z:1795427274670-0,1795427274670-0\n\n'

if (process.argv[2] === '--server') {
  const mode = process.argv[3]
  const streams = []
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.write(': connected\n\n')
    req.socket.setNoDelay(true)
    streams.push(res)
  })
  server.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }))
  process.on('message', () => {
    const c0 = process.cpuUsage()
    const t0 = performance.now()
    if (mode === 'http') {
      for (const res of streams) res.write(frame)
    } else {
      for (const res of streams) res.socket.write(Buffer.byteLength(frame).toString(16) + '\r\n' + frame + '\r\n')
    }
    setImmediate(() => {
      const c = process.cpuUsage(c0)
      process.send({ ms: performance.now() - t0, user: c.user / streams.length, system: c.system / streams.length })
    })
  })
} else {
  const N = Number(process.argv[2] ?? 10000)
  const rounds = Number(process.argv[3] ?? 10)
  for (const mode of ['http', 'socket']) {
    const srv = fork(fileURLToPath(import.meta.url), ['--server', mode])
    const { port } = await new Promise(resolve => srv.once('message', resolve))
    const conns = []
    for (let i = 0; i < N; i++) {
      const s = net.connect(port, '127.0.0.1')
      s.on('data', () => {})
      s.on('error', () => {})
      s.write('GET / HTTP/1.1\r\nHost: bench\r\n\r\n')
      conns.push(s)
      if (i % 200 === 199) await new Promise(resolve => setTimeout(resolve, 10))
    }
    await new Promise(resolve => setTimeout(resolve, 1000))
    const res = []
    for (let r = 0; r < rounds + 2; r++) {
      srv.send('go')
      res.push(await new Promise(resolve => srv.once('message', resolve)))
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    const warm = res.slice(2)
    const avg = (k) => warm.reduce((a, x) => a + x[k], 0) / warm.length
    console.log(`${mode.padEnd(6)} ${N} streams: ${avg('ms').toFixed(0)} ms per round, per write ${avg('user').toFixed(1)} µs user + ${avg('system').toFixed(1)} µs kernel = ${(avg('user') + avg('system')).toFixed(1)} µs → at most ${Math.round(1e6 / (avg('user') + avg('system'))).toLocaleString('en-US')} writes/s per core`)
    srv.kill()
    for (const c of conns) c.destroy()
    await new Promise(resolve => setTimeout(resolve, 500))
  }
  process.exit(0)
}
