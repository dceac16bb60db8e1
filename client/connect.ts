import { SharedConnection } from './share'
import { DirectConnection } from './stream'
import type { BroadcastChannelLike, Connection, ConnectOptions, LockManagerLike } from './types'

/**
 * Opens a resumable stream from the gateway. It reconnects with backoff and the last event id
 * until `close()`, `maxRetries` consecutive failures, or an answer that retrying cannot fix
 * (401, 403, 4xx); every status change goes to `onStatus`.
 *
 * With `shareAcrossTabs` and no Web Locks / BroadcastChannel (Node, old browsers), each caller
 * simply gets its own stream.
 */
export function connect (options: ConnectOptions): Connection {
  if (options.shareAcrossTabs === true) {
    const g = globalThis as { navigator?: { locks?: LockManagerLike }, BroadcastChannel?: new (name: string) => BroadcastChannelLike }
    const locks = options.locks ?? g.navigator?.locks
    const BC = options.BroadcastChannel ?? g.BroadcastChannel
    if (locks !== undefined && BC !== undefined) return new SharedConnection(options, locks, BC)
  }
  return new DirectConnection(options)
}
