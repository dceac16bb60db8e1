// Lua run inside Redis, so that a publish touches history and pub/sub in one atomic step and a
// read sees a consistent (head, trimmed-up-to, entries) triple; and their client side, shared
// by both Redis buses, the store and the publisher helper.
import type { Cluster, Redis } from 'ioredis'
import type { BusMessage, Envelope, ReadResult } from '../bus'
import { decodeStored, encodeEnvelope, type KeyLayout } from './codec'

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
 * read(key, after, count), READ_LUA as KEYS[1], ARGV[1], ARGV[2]: a history stream, a cursor
 * id ('' = only the head, see `headOf`), max entries. Returns { reset (0|1), head id, entries }. A cursor is stale when it is below the first
 * retained id of a trimmed stream (a gap), above the newest id (another history), or names a stream that expired.
 */
const READ_FN = `
local function cmp(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am = tonumber(am); bm = tonumber(bm)
  if am ~= bm then if am < bm then return -1 else return 1 end end
  as = tonumber(as); bs = tonumber(bs)
  if as ~= bs then if as < bs then return -1 else return 1 end end
  return 0
end
local function read(key, after, count)
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
  return {0, head, redis.call('XRANGE', key, '(' .. after, '+', 'COUNT', count)}
end
`

export const READ_LUA = READ_FN + `return read(KEYS[1], ARGV[1], ARGV[2])
`

/**
 * KEYS: history streams; ARGV: a cursor and a count per key, as READ_LUA takes them. Returns one
 * READ_LUA reply per key: the reads asked for in one tick (the head reads of a SUBSCRIBE batch,
 * the replays of the streams it let through) share one call. Single Redis only: the keys of a
 * call would span slots on a cluster.
 */
export const READS_LUA = READ_FN + `
local out = {}
for i = 1, #KEYS do out[i] = read(KEYS[i], ARGV[2 * i - 1], ARGV[2 * i]) end
return out
`

export const REFRESH_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`

export const RELEASE_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`

export type ScriptClient = Redis & {
  ssePublish (numKeys: number, ...args: string[]): Promise<string[]>
  sseRead (key: string, after: string, count: string): Promise<ReadReply>
  sseReads (numKeys: number, ...keysThenArgs: string[]): Promise<ReadReply[]>
  sseRefresh (key: string, value: string, ttl: string): Promise<number>
  sseRelease (key: string, value: string): Promise<number>
}

/** `publishLua`: PUBLISH_LUA, or SPUBLISH_LUA on Redis Cluster. */
export function defineScripts (r: Redis | Cluster, publishLua = PUBLISH_LUA): void {
  r.defineCommand('ssePublish', { lua: publishLua })
  r.defineCommand('sseRead', { numberOfKeys: 1, lua: READ_LUA })
  r.defineCommand('sseReads', { lua: READS_LUA })
  r.defineCommand('sseRefresh', { numberOfKeys: 1, lua: REFRESH_LUA })
  r.defineCommand('sseRelease', { numberOfKeys: 1, lua: RELEASE_LUA })
}

/** Builds the argument list of PUBLISH_LUA; shared with the publisher helper. */
export function publishArgs (keys: KeyLayout, messages: Envelope[], historySize: number, ttlS: number): string[] {
  const args: string[] = [String(messages.length)]
  for (const m of messages) args.push(keys.history(m.channel))
  args.push(String(historySize), String(ttlS))
  for (const m of messages) args.push(keys.pubsub(m.channel), encodeEnvelope(m))
  return args
}

/** What READ_LUA returns: reset flag, head id, entries `[id, ['m', envelope]]`. */
export type ReadReply = [number, string, Array<[string, string[]]>]

/**
 * Reads a channel's history after `after` with READ_LUA, paging until it is drained: the
 * `read` of both Redis buses. `run` executes the script on the history key.
 */
export async function readHistory (
  run: (key: string, after: string, count: string) => Promise<ReadReply>,
  key: string,
  after: string,
  historySize: number,
  onDropped?: (reason: string) => void
): Promise<ReadResult> {
  const count = historySize + 1
  const messages: BusMessage[] = []
  let cursor = after
  for (;;) {
    const [reset, head, entries] = await run(key, cursor, String(count))
    if (reset === 1) return { messages: [], head, reset: true }
    for (const [id, fields] of entries) {
      const m = decodeStored(id, fields[1])
      if (m !== null) messages.push(m)
      else onDropped?.('malformed')
      cursor = id
    }
    if (entries.length < count) return { messages, head, reset: false }
  }
}

/** The newest id of a history stream ('0-0' when it has none): READ_LUA's head-only mode. */
export async function headOf (run: (key: string, after: string, count: string) => Promise<ReadReply>, key: string): Promise<string> {
  return (await run(key, '', '0'))[1]
}

/** The cluster client with the same scripts defined. */
export type ClusterScriptClient = Cluster & Omit<ScriptClient, keyof Redis>
