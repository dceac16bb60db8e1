import { createSigner } from 'fast-jwt'
import type { Config } from '../config'

/** Signs a token with the configured HS256 secret, or with an RS256/ES256 private key. */
export function signToken (config: Config, claims: Record<string, unknown>, ttlS: number, privateKey?: string): string {
  const key = privateKey ?? config.jwt.secret
  if (key === undefined) throw new Error('JWT_PUBLIC_KEY is configured: pass the matching private key (--private-key FILE) to sign')
  const algorithm = privateKey === undefined ? 'HS256' : /BEGIN EC/.test(privateKey) ? 'ES256' : 'RS256'
  const sign = createSigner({
    key,
    algorithm,
    expiresIn: ttlS * 1000,
    ...(config.jwt.issuer !== undefined ? { iss: config.jwt.issuer } : {}),
    ...(config.jwt.audience !== undefined ? { aud: config.jwt.audience } : {})
  })
  return sign(claims)
}
