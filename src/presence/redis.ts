import type { Cluster, Redis } from 'ioredis'
import type { PresenceBackend, PresenceView } from './presence'

// Per channel two hashes in one slot (the channel is a hash tag; channel names hold no braces):
// `<prefix>presence:{<channel>}:i` instance -> heartbeat expiry (epoch ms, Redis clock), and
// `<prefix>presence:{<channel>}:m` "<instance>|<sub>" -> that instance's stream count. A member
// counts while its instance's expiry is ahead, so a crashed instance's members drop out after
// PRESENCE_TTL_S without anyone removing them; the next heartbeat on the channel clears them.
// Instance ids hold no '|'; a sub may, so the first '|' splits.

const NOW = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

/** ARGV: instance, ttl ms, empty ('1': none of this instance's members is left), then sub, count pairs. Returns { joined, left }. */
export const UPDATE_LUA = NOW + `
local inst, ttl = ARGV[1], tonumber(ARGV[2])
local others = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i] ~= inst and tonumber(all[i + 1]) > now then others[#others + 1] = all[i] end
end
local function elsewhere (sub)
  for _, o in ipairs(others) do
    if redis.call('HEXISTS', KEYS[2], o .. '|' .. sub) == 1 then return true end
  end
  return false
end
local joined, left = {}, {}
for j = 4, #ARGV, 2 do
  local sub, n = ARGV[j], tonumber(ARGV[j + 1])
  local f = inst .. '|' .. sub
  local before = tonumber(redis.call('HGET', KEYS[2], f) or '0')
  if n > 0 then redis.call('HSET', KEYS[2], f, n) else redis.call('HDEL', KEYS[2], f) end
  if before == 0 and n > 0 and not elsewhere(sub) then joined[#joined + 1] = sub end
  if before > 0 and n == 0 and not elsewhere(sub) then left[#left + 1] = sub end
end
if ARGV[3] == '1' then redis.call('HDEL', KEYS[1], inst) else redis.call('HSET', KEYS[1], inst, now + ttl) end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return {joined, left}
`

/** ARGV: instance, ttl ms. Returns { lost (0|1), left }. */
export const HEARTBEAT_LUA = NOW + `
local inst, ttl = ARGV[1], tonumber(ARGV[2])
local mine = redis.call('HGET', KEYS[1], inst)
local lost = 0
if not mine or tonumber(mine) <= now then lost = 1 end
redis.call('HSET', KEYS[1], inst, now + ttl)
local dead, any = {}, false
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) <= now then
    dead[all[i]] = true
    any = true
    redis.call('HDEL', KEYS[1], all[i])
  end
end
local left = {}
if any then
  local gone, present = {}, {}
  local fields = redis.call('HGETALL', KEYS[2])
  for i = 1, #fields, 2 do
    local f = fields[i]
    local p = string.find(f, '|', 1, true)
    local sub = string.sub(f, p + 1)
    if dead[string.sub(f, 1, p - 1)] then
      redis.call('HDEL', KEYS[2], f)
      gone[sub] = true
    else
      present[sub] = true
    end
  end
  for sub in pairs(gone) do
    if not present[sub] then left[#left + 1] = sub end
  end
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return {lost, left}
`

/** ARGV: max members. Returns { count, members (sorted, at most max) }. */
export const QUERY_LUA = NOW + `
local alive = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) > now then alive[all[i]] = true end
end
local seen, members, count = {}, {}, 0
local fields = redis.call('HKEYS', KEYS[2])
for i = 1, #fields do
  local f = fields[i]
  local p = string.find(f, '|', 1, true)
  local sub = string.sub(f, p + 1)
  if alive[string.sub(f, 1, p - 1)] and not seen[sub] then
    seen[sub] = true
    count = count + 1
    members[#members + 1] = sub
  end
end
table.sort(members)
local max = tonumber(ARGV[1])
local out = {}
for i = 1, math.min(max, #members) do out[i] = members[i] end
return {count, out}
`

type Scripts = {
  ssePresenceUpdate: (ki: string, km: string, ...args: string[]) => Promise<[string[], string[]]>
  ssePresenceBeat: (ki: string, km: string, inst: string, ttl: string) => Promise<[number, string[]]>
  ssePresenceQuery: (ki: string, km: string, max: string) => Promise<[number, string[]]>
}

export class RedisPresenceBackend implements PresenceBackend {
  private readonly r: (Redis | Cluster) & Scripts
  private readonly ttlMs: string

  constructor (r: Redis | Cluster, private readonly prefix: string, private readonly instance: string, ttlS: number) {
    const c = r as (Redis | Cluster) & Partial<Scripts>
    if (c.ssePresenceUpdate === undefined) {
      c.defineCommand('ssePresenceUpdate', { numberOfKeys: 2, lua: UPDATE_LUA })
      c.defineCommand('ssePresenceBeat', { numberOfKeys: 2, lua: HEARTBEAT_LUA })
      c.defineCommand('ssePresenceQuery', { numberOfKeys: 2, lua: QUERY_LUA })
    }
    this.r = c as typeof this.r
    this.ttlMs = String(ttlS * 1000)
  }

  private keys (channel: string): [string, string] {
    const base = `${this.prefix}presence:{${channel}}`
    return [`${base}:i`, `${base}:m`]
  }

  async update (channel: string, counts: Array<[string, number]>, empty: boolean): Promise<{ joined: string[], left: string[] }> {
    const args = [this.instance, this.ttlMs, empty ? '1' : '0']
    for (const [sub, n] of counts) args.push(sub, String(n))
    const [joined, left] = await this.r.ssePresenceUpdate(...this.keys(channel), ...args)
    return { joined, left }
  }

  async heartbeat (channel: string): Promise<{ lost: boolean, left: string[] }> {
    const [lost, left] = await this.r.ssePresenceBeat(...this.keys(channel), this.instance, this.ttlMs)
    return { lost: lost === 1, left }
  }

  async query (channel: string, max: number): Promise<PresenceView> {
    const [count, members] = await this.r.ssePresenceQuery(...this.keys(channel), String(max))
    return { count, members }
  }
}
