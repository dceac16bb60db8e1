import t from 'tap'
import { spawnSync } from 'node:child_process'
import { loadConfig, ConfigError } from '../src/config'

t.test('defaults and parsing', async t => {
  const c = loadConfig({ JWT_SECRET: 's' })
  t.equal(c.port, 3000)
  t.equal(c.batchWindowMs, 100)
  t.equal(c.heartbeatMs, 30000)
  t.equal(c.historySize, 1000)
  t.equal(c.channelPrefix, 'sse:')
  t.equal(c.redisUrl, undefined, 'no REDIS_URL: in-memory bus')
  const d = loadConfig({ JWT_SECRET: 's', REPLICATE_MODELS: 'a/b, c/d', CORS_ORIGINS: 'https://x.test', REDIS_CLUSTER_NODES: '127.0.0.1:7001,127.0.0.1:7002' })
  t.same(d.replicate.models, ['a/b', 'c/d'])
  t.same(d.redisClusterNodes, [{ host: '127.0.0.1', port: 7001 }, { host: '127.0.0.1', port: 7002 }])
})

t.test('a bad value is one error naming the variable', async t => {
  const bad: Array<[Record<string, string>, RegExp]> = [
    [{ PORT: 'eighty' }, /PORT/],
    [{ PORT: '70000' }, /PORT/],
    [{ BATCH_WINDOW_MS: '-1' }, /BATCH_WINDOW_MS/],
    [{ REDIS_URL: 'localhost:6379' }, /REDIS_URL/],
    [{ LOG_LEVEL: 'loud' }, /LOG_LEVEL/],
    [{ REDIS_URL: 'redis://a', REDIS_CLUSTER_NODES: 'b:1' }, /REDIS_URL and REDIS_CLUSTER_NODES/],
    [{ REPLICATE_WEBHOOK_SECRET: 'nope' }, /REPLICATE_WEBHOOK_SECRET/]
  ]
  for (const [env, re] of bad) {
    t.throws(() => loadConfig({ JWT_SECRET: 's', ...env }), re)
    try { loadConfig({ JWT_SECRET: 's', ...env }) } catch (err) {
      t.ok(err instanceof ConfigError)
      t.notOk((err as Error).message.includes('\n'), 'one line')
    }
  }
})

t.test('no key: ephemeral secret in development, refusal in production', async t => {
  const dev = loadConfig({})
  t.ok(dev.jwt.ephemeral)
  t.ok((dev.jwt.secret ?? '').length >= 32)
  t.throws(() => loadConfig({ NODE_ENV: 'production' }), /JWT_SECRET or JWT_PUBLIC_KEY is required/)
})

t.test('the process refuses to start with one line on stderr', async t => {
  const r = spawnSync(process.execPath, ['dist/main.js'], { env: { PATH: process.env.PATH, PORT: 'nope', JWT_SECRET: 's' }, encoding: 'utf8', timeout: 20000 })
  t.equal(r.status, 1)
  t.equal(r.stderr.trim().split('\n').length, 1)
  t.match(r.stderr, /PORT/)
  const p = spawnSync(process.execPath, ['dist/main.js'], { env: { PATH: process.env.PATH, NODE_ENV: 'production' }, encoding: 'utf8', timeout: 20000 })
  t.equal(p.status, 1)
  t.match(p.stderr, /JWT_SECRET or JWT_PUBLIC_KEY is required/)
})

t.test('npm run token signs with the configured secret', async t => {
  const r = spawnSync(process.execPath, ['dist/cli/token.js', '--sub', 'alice', '--channels', 'topic:*', '--role', 'publisher', '--ttl', '2h'], { env: { PATH: process.env.PATH, JWT_SECRET: 'cli-secret' }, encoding: 'utf8' })
  t.equal(r.status, 0, r.stderr)
  const payload = JSON.parse(Buffer.from(r.stdout.trim().split('.')[1], 'base64url').toString())
  t.equal(payload.sub, 'alice')
  t.same(payload.channels, ['topic:*'])
  t.equal(payload.role, 'publisher')
  t.ok(payload.exp - payload.iat >= 7199 && payload.exp - payload.iat <= 7201)
  const bad = spawnSync(process.execPath, ['dist/cli/token.js'], { env: { PATH: process.env.PATH, JWT_SECRET: 'x' }, encoding: 'utf8' })
  t.equal(bad.status, 1)
  t.match(bad.stderr, /usage/)
})
