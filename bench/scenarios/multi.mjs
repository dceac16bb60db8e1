// multi: idle, broadcast and per-user with K gateways on one Redis, N streams per instance.

import { idle } from './idle.mjs'
import { broadcast } from './broadcast.mjs'
import { perUser } from './per-user.mjs'

export async function multi (o) {
  const M = Math.max(2, o.instances ?? 2)
  const mo = { ...o, instances: M, rate: null }
  return [
    await idle(mo, { label: 'multi-idle', instances: M, redis: true, perInstance: true }),
    await broadcast({ ...mo, rate: o.rate }, { label: 'multi-broadcast', instances: M, redis: true, perInstance: true }),
    await perUser(mo, { label: 'multi-per-user', instances: M, redis: true, perInstance: true })
  ]
}
