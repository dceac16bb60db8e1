import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { loadConfig, ConfigError } from '../config'
import { signToken } from '../auth/sign'

// npm run token -- --sub alice [--channels 'topic:*,team:42'] [--role publisher] [--ttl 1h]
const USAGE = "usage: npm run token -- --sub USER [--channels 'topic:*,team:42'] [--role publisher] [--ttl 1h] [--private-key FILE]"

function parseTtl (s: string): number {
  const m = /^(\d+)([smhd]?)$/.exec(s)
  if (m === null) throw new Error(`--ttl "${s}" is not a duration like 30s, 15m, 1h or 7d`)
  return Number(m[1]) * ({ '': 1, s: 1, m: 60, h: 3600, d: 86400 } as Record<string, number>)[m[2]]
}

try {
  const { values } = parseArgs({
    options: {
      sub: { type: 'string' },
      channels: { type: 'string', multiple: true },
      role: { type: 'string' },
      ttl: { type: 'string', default: '1h' },
      'private-key': { type: 'string' }
    }
  })
  if (values.sub === undefined) throw new Error(USAGE)
  const config = loadConfig()
  if (config.jwt.ephemeral) throw new Error('set JWT_SECRET (the same value the gateway runs with) to sign a token')
  const claims: Record<string, unknown> = { sub: values.sub }
  const channels = (values.channels ?? []).flatMap(c => c.split(',')).map(c => c.trim()).filter(Boolean)
  if (channels.length > 0) claims.channels = channels
  if (values.role !== undefined) claims.role = values.role
  const key = values['private-key'] !== undefined ? readFileSync(values['private-key'], 'utf8') : undefined
  process.stdout.write(signToken(config, claims, parseTtl(values.ttl as string), key) + '\n')
} catch (err) {
  process.stderr.write(`${err instanceof ConfigError ? err.message : (err as Error).message}\n`)
  process.exit(1)
}
