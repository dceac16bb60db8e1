import closeWithGrace from 'close-with-grace'
import { loadConfig, ConfigError, type Config } from './config'
import { buildApp } from './app'
import { signToken } from './auth/sign'

async function start (): Promise<void> {
  let config: Config
  try {
    config = loadConfig()
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`)
      process.exit(1)
    }
    throw err
  }
  const app = await buildApp({ config })
  // Drain first (streams get a jittered retry and move to other instances), then close.
  // A second signal exits at once (close-with-grace).
  closeWithGrace({ delay: config.shutdownDrainMs + 5000 }, async ({ signal, err }) => {
    if (err !== undefined) app.log.error({ err }, 'fatal error, shutting down')
    app.log.info({ signal, streams: app.hub.connections.size, drainMs: config.shutdownDrainMs }, 'draining')
    await app.hub.drain(config.shutdownDrainMs)
    await app.close()
  })
  await app.listen({ port: config.port, host: config.host })
  if (config.jwt.ephemeral) {
    const base = `http://localhost:${config.port}`
    const user = signToken(config, { sub: 'demo', channels: ['topic:*'] }, 24 * 3600)
    const publisher = signToken(config, { sub: 'backend', role: 'publisher' }, 24 * 3600)
    app.log.warn('no JWT_SECRET or JWT_PUBLIC_KEY: using an ephemeral secret (development only); these tokens work until restart')
    process.stdout.write([
      '',
      `  stream:  curl -N -H 'Authorization: Bearer ${user}' '${base}/events?channel=topic:news'`,
      `  publish: curl -X POST -H 'Authorization: Bearer ${publisher}' -H 'content-type: application/json' \\`,
      `             -d '{"channel":"user:demo","event":"hello","data":{"text":"hi"}}' ${base}/publish`,
      ''
    ].join('\n') + '\n')
  }
}

start().catch((err) => {
  process.stderr.write(`failed to start: ${(err as Error).message}\n`)
  process.exit(1)
})
