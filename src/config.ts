import { randomBytes } from 'node:crypto'
import envSchema from 'env-schema'

// The one place that reads process.env. Everything else receives a Config.
const schema = {
  type: 'object',
  properties: {
    NODE_ENV: { type: 'string', enum: ['development', 'production', 'test'], default: 'development' },
    PORT: { type: 'integer', minimum: 0, maximum: 65535, default: 3000 },
    HOST: { type: 'string', minLength: 1, default: '0.0.0.0' },
    REDIS_URL: { type: 'string', pattern: '^rediss?://' },
    REDIS_CLUSTER_NODES: { type: 'string', pattern: '^[^\\s,:]+:[0-9]+(,[^\\s,:]+:[0-9]+)*$' },
    CHANNEL_PREFIX: { type: 'string', pattern: '^[A-Za-z0-9:_.-]{0,64}$', default: 'sse:' },
    JWT_SECRET: { type: 'string', minLength: 1 },
    JWT_PUBLIC_KEY: { type: 'string', minLength: 1 },
    JWT_ISSUER: { type: 'string', minLength: 1 },
    JWT_AUDIENCE: { type: 'string', minLength: 1 },
    BATCH_WINDOW_MS: { type: 'integer', minimum: 0, maximum: 10000, default: 100 },
    HEARTBEAT_MS: { type: 'integer', minimum: 100, maximum: 3600000, default: 30000 },
    RETRY_MS: { type: 'integer', minimum: 0, maximum: 600000, default: 3000 },
    HISTORY_SIZE: { type: 'integer', minimum: 1, maximum: 1000000, default: 1000 },
    HISTORY_TTL_S: { type: 'integer', minimum: 1, default: 86400 },
    MAX_CONNECTIONS: { type: 'integer', minimum: 1, default: 20000 },
    MAX_CONNECTIONS_PER_USER: { type: 'integer', minimum: 1, default: 20 },
    MAX_CHANNELS_PER_STREAM: { type: 'integer', minimum: 1, maximum: 1000, default: 32 },
    MAX_BUFFERED_BYTES: { type: 'integer', minimum: 1024, default: 1048576 },
    MAX_FRAME_BYTES: { type: 'integer', minimum: 256 },
    MAX_BODY_BYTES: { type: 'integer', minimum: 1024, default: 1048576 },
    SHUTDOWN_DRAIN_MS: { type: 'integer', minimum: 0, maximum: 600000, default: 10000 },
    REPLICATE_API_TOKEN: { type: 'string' },
    REPLICATE_BASE_URL: { type: 'string', pattern: '^https?://', default: 'https://api.replicate.com/v1' },
    REPLICATE_WEBHOOK_SECRET: { type: 'string', pattern: '^whsec_' },
    REPLICATE_MODELS: { type: 'string' },
    PUBLIC_URL: { type: 'string', pattern: '^https?://' },
    LOG_LEVEL: { type: 'string', enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info' },
    CORS_ORIGINS: { type: 'string' },
    DEMO: { type: 'boolean' }
  }
} as const

export interface Config {
  nodeEnv: string
  port: number
  host: string
  redisUrl?: string
  redisClusterNodes?: Array<{ host: string, port: number }>
  channelPrefix: string
  jwt: { secret?: string, publicKey?: string, issuer?: string, audience?: string, ephemeral: boolean }
  batchWindowMs: number
  heartbeatMs: number
  retryMs: number
  historySize: number
  historyTtlS: number
  maxConnections: number
  maxConnectionsPerUser: number
  maxChannelsPerStream: number
  maxBufferedBytes: number
  /** Framed size of one message (its `event:` and `data:` lines); below maxBufferedBytes. */
  maxFrameBytes: number
  maxBodyBytes: number
  shutdownDrainMs: number
  replicate: { apiToken?: string, baseUrl: string, webhookSecret?: string, models?: string[], publicUrl?: string }
  logLevel: string
  corsOrigins?: string[]
  demo: boolean
}

export class ConfigError extends Error {}

function list (s: string | undefined): string[] | undefined {
  if (s === undefined) return undefined
  const items = s.split(',').map(x => x.trim()).filter(Boolean)
  return items.length > 0 ? items : undefined
}

/**
 * Reads and validates the environment. A bad value throws a ConfigError whose message is one
 * line naming the variable, so main can print it and exit.
 */
export function loadConfig (env: Record<string, string | undefined> = process.env): Config {
  let raw: Record<string, any>
  try {
    // An empty variable counts as unset (compose files often carry `NAME=`).
    const data = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''))
    // env: false: only the env passed in counts (the default merges process.env underneath).
    raw = envSchema({ schema, data, env: false, dotenv: false }) as Record<string, any>
  } catch (err) {
    throw new ConfigError(`invalid configuration: ${schemaProblem(err)}`)
  }
  if (raw.REDIS_URL !== undefined && raw.REDIS_CLUSTER_NODES !== undefined) {
    throw new ConfigError('invalid configuration: REDIS_URL and REDIS_CLUSTER_NODES are mutually exclusive')
  }
  if (raw.JWT_SECRET !== undefined && raw.JWT_PUBLIC_KEY !== undefined) {
    throw new ConfigError('invalid configuration: JWT_SECRET and JWT_PUBLIC_KEY are mutually exclusive')
  }
  const production = raw.NODE_ENV === 'production'
  let secret: string | undefined = raw.JWT_SECRET
  let ephemeral = false
  if (secret === undefined && raw.JWT_PUBLIC_KEY === undefined) {
    if (production) throw new ConfigError('invalid configuration: JWT_SECRET or JWT_PUBLIC_KEY is required when NODE_ENV=production')
    secret = randomSecret()
    ephemeral = true
  }
  // A frame at the budget would cut even a client that reads at full speed.
  const maxFrameBytes: number = raw.MAX_FRAME_BYTES ?? Math.min(256 * 1024, Math.floor(raw.MAX_BUFFERED_BYTES / 2))
  if (maxFrameBytes >= raw.MAX_BUFFERED_BYTES) {
    throw new ConfigError(`invalid configuration: MAX_FRAME_BYTES (${maxFrameBytes}) must be below MAX_BUFFERED_BYTES (${raw.MAX_BUFFERED_BYTES})`)
  }
  const corsOrigins = list(raw.CORS_ORIGINS)
  // Sandboxed iframes, file: pages and some redirects all send `Origin: null`: allowing it allows them all.
  if (corsOrigins?.some(o => o.toLowerCase() === 'null') === true) {
    throw new ConfigError('invalid configuration: CORS_ORIGINS must not contain "null" (any sandboxed page sends it)')
  }
  if (raw.DEMO === true && production) throw new ConfigError('invalid configuration: DEMO cannot be enabled when NODE_ENV=production')
  return {
    nodeEnv: raw.NODE_ENV,
    port: raw.PORT,
    host: raw.HOST,
    redisUrl: raw.REDIS_URL,
    redisClusterNodes: list(raw.REDIS_CLUSTER_NODES)?.map(hp => {
      const i = hp.lastIndexOf(':')
      return { host: hp.slice(0, i), port: Number(hp.slice(i + 1)) }
    }),
    channelPrefix: raw.CHANNEL_PREFIX,
    jwt: {
      secret,
      publicKey: raw.JWT_PUBLIC_KEY?.replace(/\\n/g, '\n'),
      issuer: raw.JWT_ISSUER,
      audience: raw.JWT_AUDIENCE,
      ephemeral
    },
    batchWindowMs: raw.BATCH_WINDOW_MS,
    heartbeatMs: raw.HEARTBEAT_MS,
    retryMs: raw.RETRY_MS,
    historySize: raw.HISTORY_SIZE,
    historyTtlS: raw.HISTORY_TTL_S,
    maxConnections: raw.MAX_CONNECTIONS,
    maxConnectionsPerUser: raw.MAX_CONNECTIONS_PER_USER,
    maxChannelsPerStream: raw.MAX_CHANNELS_PER_STREAM,
    maxBufferedBytes: raw.MAX_BUFFERED_BYTES,
    maxFrameBytes,
    maxBodyBytes: raw.MAX_BODY_BYTES,
    shutdownDrainMs: raw.SHUTDOWN_DRAIN_MS,
    replicate: {
      apiToken: raw.REPLICATE_API_TOKEN,
      baseUrl: raw.REPLICATE_BASE_URL,
      webhookSecret: raw.REPLICATE_WEBHOOK_SECRET,
      models: list(raw.REPLICATE_MODELS),
      publicUrl: raw.PUBLIC_URL
    },
    logLevel: raw.LOG_LEVEL,
    corsOrigins,
    demo: raw.DEMO ?? (!production && ephemeral)
  }
}

/** The first schema error as `NAME problem`, with the allowed values when there is a list. */
function schemaProblem (err: unknown): string {
  const first = (err as { errors?: Array<{ instancePath?: string, message?: string, params?: { allowedValues?: unknown[] } }> }).errors?.[0]
  if (first?.instancePath === undefined) return (err as Error).message.split(', ')[0].replace(/^env\//, '')
  const name = first.instancePath.replace(/^\//, '')
  const allowed = first.params?.allowedValues
  return allowed !== undefined ? `${name} must be one of ${allowed.join(', ')}` : `${name} ${first.message ?? 'is invalid'}`
}

function randomSecret (): string {
  return randomBytes(32).toString('base64url')
}
