import type { FastifyRequest } from 'fastify'

const SECRET_PARAMS = /([?&](?:access_token|ticket|token)=)[^&#]*/gi

/** A URL with every credential-bearing query parameter replaced: tokens never reach a log. */
export function redactUrl (url: string): string {
  return url.replace(SECRET_PARAMS, '$1[REDACTED]')
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
