import t from 'tap'
import { loadConfig } from '../src/config'
import { SECRET } from './helper'

const base = { JWT_SECRET: SECRET }

t.test('presence, auth hook and admin variables: defaults and bad values', async t => {
  const c = loadConfig(base)
  t.same(c.presence, { maxMembers: 100, ttlS: 15, events: undefined })
  t.equal(c.authHook, undefined)
  t.same(c.admin, { enabled: false, key: undefined })
  const set = loadConfig({ ...base, PRESENCE_MAX_MEMBERS: '5', PRESENCE_TTL_S: '3', PRESENCE_EVENTS: 'room:*, team:1', AUTH_HOOK_URL: 'http://backend/hook', AUTH_HOOK_CACHE_S: '0', ADMIN: 'true' })
  t.same(set.presence, { maxMembers: 5, ttlS: 3, events: ['room:*', 'team:1'] })
  t.same(set.authHook, { url: 'http://backend/hook', cacheS: 0 })
  t.same(set.admin, { enabled: true, key: undefined })
  t.same(loadConfig({ ...base, ADMIN: 'false' }).admin, { enabled: false, key: undefined })
  t.same(loadConfig({ ...base, ADMIN: 'x'.repeat(32) }).admin, { enabled: true, key: 'x'.repeat(32) })
  for (const [name, value] of [['PRESENCE_MAX_MEMBERS', '0'], ['PRESENCE_MAX_MEMBERS', '1001'], ['PRESENCE_TTL_S', '0'], ['AUTH_HOOK_URL', 'ftp://x'], ['AUTH_HOOK_CACHE_S', '-1'], ['ADMIN', 'yes']]) {
    t.throws(() => loadConfig({ ...base, [name]: value }), new RegExp(`^invalid configuration: ${name}`), `${name}=${value}`)
  }
})
