import t from 'tap'
import { existsSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs'
import http2 from 'node:http2'
import { join } from 'node:path'
import { spawn, spawnSync } from 'node:child_process'
import type { TLSSocket } from 'node:tls'
import { build, freePort, parseFrames, publisherToken, selfSignedCert, sign, waitFor } from './helper'

// deploy/nginx-tls.conf unchanged on loopback (only the two includes written here): nginx
// terminates TLS and speaks HTTP/2 to the client, HTTP/1.1 to a plain gateway. Three SSE
// streams share one HTTP/2 connection and each gets the event.

const NGINX = ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/bin/nginx']

t.test('nginx-tls.conf: HTTP/2 to the client, streams multiplexed on one connection', async t => {
  const bin = NGINX.find(p => existsSync(p))
  if (bin === undefined) {
    t.fail(`nginx is not installed (looked for ${NGINX.join(', ')}); .ci/install-system.sh installs Debian's package`)
    return
  }
  const cert = selfSignedCert(t)
  const gw = await build(t)
  const port = await freePort()
  const dir = join(cert.certFile, '..', 'nginx')
  mkdirSync(join(dir, 'sse-site'), { recursive: true })
  symlinkSync(join(__dirname, '..', 'deploy', 'nginx-tls.conf'), join(dir, 'nginx.conf'))
  writeFileSync(join(dir, 'sse-site', 'tls-listen.conf'), `listen 127.0.0.1:${port} ssl http2;\nssl_certificate ${cert.certFile};\nssl_certificate_key ${cert.keyFile};\n`)
  writeFileSync(join(dir, 'sse-site', 'upstream-servers.conf'), `server 127.0.0.1:${gw.port};\n`)
  const prefix = ['-p', `${dir}/`, '-c', join(dir, 'nginx.conf'), '-e', 'stderr']
  const check = spawnSync(bin, [...prefix, '-t', '-q', '-g', `pid ${dir}/nginx.pid;`], { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] })
  t.equal(check.status, 0, `nginx -t accepts deploy/nginx-tls.conf ${check.stderr}`)
  let stderr = ''
  const nginx = spawn(bin, [...prefix, '-g', `pid ${dir}/nginx.pid; daemon off;`], { stdio: ['ignore', 'ignore', 'pipe'] })
  nginx.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s })
  t.teardown(() => { if (nginx.exitCode === null) nginx.kill('SIGTERM') })

  let session: http2.ClientHttp2Session | null = null
  t.teardown(() => session?.destroy())
  await waitFor(async () => {
    if (nginx.exitCode !== null) throw new Error(`nginx exited (${nginx.exitCode}): ${stderr}`)
    const s = http2.connect(`https://127.0.0.1:${port}`, { ca: cert.cert })
    const up = await new Promise<boolean>(resolve => { s.once('connect', () => resolve(true)); s.once('error', () => resolve(false)) })
    if (up) session = s
    else s.destroy()
    return up
  }, 20000, 'nginx listening with TLS')
  const h2 = session as unknown as http2.ClientHttp2Session
  t.equal((h2.socket as TLSSocket).alpnProtocol, 'h2', 'ALPN chose h2 at nginx')

  const token = sign({ sub: 'viewer', channels: ['topic:*'] })
  const streams = [0, 1, 2].map(() => {
    const st = { text: '', status: 0, headers: {} as http2.IncomingHttpHeaders }
    const req = h2.request({ ':path': '/events?channel=topic:lb', authorization: `Bearer ${token}` })
    req.setEncoding('utf8')
    req.on('response', h => { st.status = Number(h[':status']); st.headers = h })
    req.on('data', (c: string) => { st.text += c })
    req.on('error', () => {})
    return st
  })
  await waitFor(() => streams.every(s => s.text.includes('\nid: ')), 10000, 'three stream heads through nginx')
  t.same(streams.map(s => s.status), [200, 200, 200])
  t.equal(streams[0].headers['content-type'], 'text/event-stream; charset=utf-8')
  t.equal(gw.app.hub.connections.size, 3, 'one upstream stream each')

  const pub = await new Promise<number>((resolve, reject) => {
    const req = h2.request({ ':method': 'POST', ':path': '/publish', authorization: `Bearer ${publisherToken()}`, 'content-type': 'application/json' })
    req.on('response', h => resolve(Number(h[':status'])))
    req.on('error', reject)
    req.resume()
    req.end(JSON.stringify({ channel: 'topic:lb', event: 'hello', data: { via: 'nginx h2' } }))
  })
  t.equal(pub, 202)
  await waitFor(() => streams.every(s => s.text.includes('event: hello')), 10000, 'the event on all three streams')
  for (const s of streams) {
    const msg = parseFrames(s.text).find(f => f.event === 'hello')
    t.equal(msg?.data, '{"via":"nginx h2"}')
  }
})
