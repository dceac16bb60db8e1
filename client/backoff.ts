// One backoff and Retry-After rule for the client and the gateway's upstream calls.
export { backoffDelay, parseRetryAfter, type BackoffOptions, type Jitter } from '../src/shared/backoff'
