import t from 'tap'
import { TokenCache } from '../../src/auth/token-cache'

t.test('a cached token answers inside its nbf..exp window only', async t => {
  const c = new TokenCache<string>(10)
  const now = 1_000_000
  c.set('a', 'A', now, (now + 5000) / 1000, (now + 60_000) / 1000)
  t.equal(c.get('a', now), undefined, 'before nbf: a miss (and the entry goes)')
  t.equal(c.size, 0)
  c.set('a', 'A', now, (now - 1000) / 1000, (now + 60_000) / 1000)
  t.equal(c.get('a', now), 'A')
  t.equal(c.get('a', now + 59_999), 'A')
  t.equal(c.get('a', now + 60_000), undefined, 'at exp: a miss (the verifier then says why)')
  t.equal(c.get('b', now), undefined, 'never seen')
})

t.test('without exp an entry lasts the ttl; the oldest goes first when full; 0 caches nothing', async t => {
  const c = new TokenCache<number>(2, 1000)
  c.set('a', 1, 0, undefined, undefined)
  t.equal(c.get('a', 999), 1)
  t.equal(c.get('a', 1000), undefined, 'past the ttl')
  c.set('a', 1, 0, undefined, undefined)
  c.set('b', 2, 0, undefined, undefined)
  c.set('c', 3, 0, undefined, undefined)
  t.equal(c.size, 2)
  t.equal(c.get('a', 1), undefined, 'the oldest was evicted')
  t.equal(c.get('b', 1), 2)
  t.equal(c.get('c', 1), 3)
  const none = new TokenCache<number>(0)
  none.set('a', 1, 0, undefined, undefined)
  t.equal(none.size, 0)
})
