// Lua run inside Redis, so that a publish touches history and pub/sub in one atomic step and a
// read sees a consistent (head, trimmed-up-to, entries) triple.

/**
 * KEYS: history stream of each message. ARGV: maxlen, ttl seconds, then (pubsub channel,
 * payload) per message. Publishes `<id> <payload>` so subscribers learn the id without a
 * second round trip. `command` is PUBLISH (one Redis) or SPUBLISH (Redis Cluster: sharded
 * pub/sub, so the message only travels within the shard that owns the channel's slot).
 */
export function publishLua (command: 'PUBLISH' | 'SPUBLISH'): string {
  return `
local maxlen = ARGV[1]
local ttl = ARGV[2]
local ids = {}
for i = 1, #KEYS do
  local payload = ARGV[2 + i * 2]
  local id = redis.call('XADD', KEYS[i], 'MAXLEN', maxlen, '*', 'm', payload)
  redis.call('EXPIRE', KEYS[i], ttl)
  redis.call('${command}', ARGV[1 + i * 2], id .. ' ' .. payload)
  ids[i] = id
end
return ids
`
}

/** The single-Redis publish script (also what the publisher helper runs). */
export const PUBLISH_LUA = publishLua('PUBLISH')

/** The Redis Cluster variant: every key and channel of one call must share a slot. */
export const SPUBLISH_LUA = publishLua('SPUBLISH')

/**
 * KEYS[1]: history stream. ARGV: cursor id ('' = only the head), max entries.
 * Returns { reset (0|1), head id, entries }. A cursor is stale when it is below the first
 * retained id of a trimmed stream (a gap), above the newest id (another history), or names a stream that expired.
 */
export const READ_LUA = `
local key = KEYS[1]
local after = ARGV[1]
local function cmp(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am = tonumber(am); bm = tonumber(bm)
  if am ~= bm then if am < bm then return -1 else return 1 end end
  as = tonumber(as); bs = tonumber(bs)
  if as ~= bs then if as < bs then return -1 else return 1 end end
  return 0
end
if redis.call('EXISTS', key) == 0 then
  if after == '' or after == '0-0' then return {0, '0-0', {}} end
  return {1, '0-0', {}}
end
local info = redis.call('XINFO', 'STREAM', key)
local head, first, added, len = '0-0', '0-0', 0, 0
for i = 1, #info, 2 do
  local k = info[i]
  if k == 'last-generated-id' then head = info[i + 1]
  elseif k == 'recorded-first-entry-id' then first = info[i + 1]
  elseif k == 'entries-added' then added = info[i + 1]
  elseif k == 'length' then len = info[i + 1] end
end
-- Trimming drops the oldest entries (and max-deleted-entry-id does not track it on 7.0), so
-- a cursor before the first retained entry of a trimmed stream may have missed some.
local trimmed = added > len
if after == '' then return {0, head, {}} end
if (trimmed and cmp(after, first) < 0) or cmp(after, head) > 0 then return {1, head, {}} end
return {0, head, redis.call('XRANGE', key, '(' .. after, '+', 'COUNT', ARGV[2])}
`

export const REFRESH_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`

export const RELEASE_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`
