import t from 'tap'
import { ExpirySweep } from '../../src/delivery/expiry'
import { waitFor } from '../wait'

interface Item { name: string, expiresAt: number }

t.test('one sweep ends each item at its instant, earliest first, and skips removed ones', async t => {
  const ended: string[] = []
  const sweep = new ExpirySweep<Item>((it) => ended.push(it.name))
  t.teardown(() => sweep.close())
  const now = Date.now()
  const a = { name: 'a', expiresAt: 0 }
  const b = { name: 'b', expiresAt: 0 }
  const c = { name: 'c', expiresAt: 0 }
  const gone = { name: 'gone', expiresAt: 0 }
  sweep.add(b, now + 120)
  sweep.add(a, now + 60) // earlier than the armed instant: re-armed
  sweep.add(gone, now + 60)
  sweep.add(c, now + 120) // shares b's instant
  t.equal(sweep.size, 4)
  sweep.remove(gone)
  t.equal(gone.expiresAt, 0, 'a removed item forgets its instant')
  await waitFor(() => ended.length === 3, 5000, 'all three ended')
  t.same(ended, ['a', 'b', 'c'], 'in instant order; the removed one never')
  t.equal(sweep.size, 0)
})

t.test('an instant past the timer range (~24.8 days) never expires', async t => {
  const sweep = new ExpirySweep<Item>(() => t.fail('expired'))
  t.teardown(() => sweep.close())
  const far = { name: 'far', expiresAt: 0 }
  sweep.add(far, Date.now() + 2 ** 31 + 1000)
  t.equal(sweep.size, 0)
  t.equal(far.expiresAt, 0)
})
