import type { FastifyRequest } from 'fastify'
import { decodedName } from './auth/plugin'

const SECRET_PARAMS = new Set(['access_token', 'ticket', 'token'])

/**
 * A URL with every credential-bearing query parameter replaced: tokens never reach a log.
 * Names are matched decoded (`access%5Ftoken` is `access_token` to the query parser) and in
 * any case.
 */
export function redactUrl (url: string): string {
  const q = url.indexOf('?')
  if (q === -1) return url
  const hash = url.indexOf('#', q)
  const end = hash === -1 ? url.length : hash
  const parts = url.slice(q + 1, end).split('&').map(part => {
    const eq = part.indexOf('=')
    const raw = eq === -1 ? part : part.slice(0, eq)
    return SECRET_PARAMS.has(decodedName(raw).toLowerCase()) ? `${raw}=[REDACTED]` : part
  })
  return url.slice(0, q + 1) + parts.join('&') + url.slice(end)
}

export function loggerOptions (level: string) {
  return {
    level,
    redact: {
      paths: ['req.headers.authorization', 'req.headers.cookie', 'headers.authorization', 'headers.cookie', '*.token', '*.access_token', '*.ticket'],
      censor: '[REDACTED]'
    },
    serializers: {
      req (req: FastifyRequest | any) {
        return {
          method: req.method,
          url: redactUrl(req.url ?? ''),
          remoteAddress: req.ip ?? req.socket?.remoteAddress,
          userAgent: req.headers?.['user-agent']
        }
      }
    }
  }
}
