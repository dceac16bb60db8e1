import t from 'tap'
import { backoffDelay, parseRetryAfter } from '../client/backoff'

const seq = (n: number, f: (i: number) => number): number[] => Array.from({ length: n }, (_, i) => f(i))

t.test('nominal sequence: 1, 2, 4, 8, 16 s, capped', async (t) => {
  t.same(seq(8, (i) => backoffDelay(i, { jitter: 'none' })), [1000, 2000, 4000, 8000, 16000, 16000, 16000, 16000])
  t.same(seq(4, (i) => backoffDelay(i, { jitter: 'none', baseMs: 10, maxMs: 50 })), [10, 20, 40, 50], 'injectable base and cap')
  t.equal(backoffDelay(5000, { jitter: 'none' }), 16000, 'huge attempt numbers stay capped')
  t.equal(backoffDelay(5000, { jitter: 'none', baseMs: 0 }), 0, 'no NaN with a zero base')
})

t.test('full jitter stays in [0, nominal]; equal jitter in [nominal/2, nominal]', async (t) => {
  for (const attempt of [0, 1, 2, 3, 4, 9]) {
    const nominal = backoffDelay(attempt, { jitter: 'none' })
    t.equal(backoffDelay(attempt, { jitter: 'full', random: () => 0 }), 0)
    t.equal(backoffDelay(attempt, { jitter: 'full', random: () => 0.999999 }), nominal * 0.999999)
    t.equal(backoffDelay(attempt, { jitter: 'equal', random: () => 0 }), nominal / 2)
    t.equal(backoffDelay(attempt, { jitter: 'equal', random: () => 0.999999 }), nominal / 2 + nominal / 2 * 0.999999)
    for (let i = 0; i < 200; i++) {
      const f = backoffDelay(attempt, { jitter: 'full' })
      const e = backoffDelay(attempt)
      if (f < 0 || f > nominal) t.fail(`full ${f} outside [0, ${nominal}]`)
      if (e < nominal / 2 || e > nominal) t.fail(`equal ${e} outside [${nominal / 2}, ${nominal}]`)
    }
  }
  t.equal(backoffDelay(0, { random: () => 0.5 }), 750, 'default jitter is equal')
})

t.test('the server retry: is the base of the sequence and a floor', async (t) => {
  t.same(seq(6, (i) => backoffDelay(i, { jitter: 'none' }, 3000)), [3000, 6000, 12000, 16000, 16000, 16000])
  t.same(seq(3, (i) => backoffDelay(i, { jitter: 'none' }, 200)), [200, 400, 800], 'a short retry shortens the sequence too')
  t.equal(backoffDelay(0, { jitter: 'none' }, 30000), 30000, 'a retry above the cap raises the cap')
  const r = 0.75
  t.equal(backoffDelay(0, { jitter: 'full', random: () => 0 }, 3000), 3000, 'full: never below retry')
  t.equal(backoffDelay(0, { jitter: 'equal', random: () => 0 }, 3000), 3000, 'equal: never below retry')
  t.equal(backoffDelay(2, { jitter: 'full', random: () => r }, 3000), 3000 + r * (12000 - 3000), 'full: [retry, nominal]')
  t.equal(backoffDelay(2, { jitter: 'equal', random: () => r }, 3000), 6000 + r * (12000 - 6000), 'equal: [nominal/2, nominal]')
  t.equal(backoffDelay(1, { jitter: 'none' }, Number.NaN), 2000, 'an invalid retry is ignored')
})

t.test('Retry-After: delta-seconds or an HTTP date', async (t) => {
  t.equal(parseRetryAfter('5'), 5000)
  t.equal(parseRetryAfter(' 0 '), 0)
  const now = Date.parse('2025-01-01T00:00:00Z')
  t.equal(parseRetryAfter('Wed, 01 Jan 2025 00:00:30 GMT', now), 30000)
  t.equal(parseRetryAfter('Tue, 31 Dec 2024 23:59:00 GMT', now), 0, 'a past date means now')
  t.equal(parseRetryAfter(null), undefined)
  t.equal(parseRetryAfter(''), undefined)
  t.equal(parseRetryAfter('soon'), undefined)
  t.equal(parseRetryAfter('-1'), undefined)
})
