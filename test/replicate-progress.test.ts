import t from 'tap'
import { parseProgressFromLogs } from 'replicate'
import { parseProgress } from '../src/replicate/progress'
import { startFakeReplicate } from '../dev/fake-replicate'

t.test('the last tqdm line wins', async t => {
  const logs = [
    'Using seed: 1234',
    '  0%|          | 0/50 [00:00<?, ?it/s]',
    ' 40%|████      | 20/50 [00:01<00:02, 15.0it/s]',
    'some other line',
    ''
  ].join('\n')
  t.same(parseProgress(logs), { percentage: 0.4, current: 20, total: 50 })
  t.same(parseProgress(logs), parseProgressFromLogs(logs), 'agrees with the client on plain logs')
})

t.test('cases the client gets wrong', async t => {
  // tqdm redraws in place with \r: the newest value is the last one on the line.
  const redraw = ' 10%|█         | 5/50 [00:00<00:04]\r 60%|██████    | 30/50 [00:02<00:01]'
  t.same(parseProgress(redraw), { percentage: 0.6, current: 30, total: 50 })
  t.equal(parseProgressFromLogs(redraw)?.current, 5, 'the client reports the stale redraw')

  const desc = 'Sampling:  76%|███████▋  | 38/50 [00:03<00:01, 12.1it/s]'
  t.same(parseProgress(desc), { percentage: 0.76, current: 38, total: 50 })
  t.equal(parseProgressFromLogs(desc), null, 'the client misses a tqdm desc prefix')

  t.same(parseProgress('0%|| 0/10'), { percentage: 0, current: 0, total: 10 }, 'an empty bar')
})

t.test('no progress', async t => {
  t.equal(parseProgress(undefined), null)
  t.equal(parseProgress(null), null)
  t.equal(parseProgress(''), null)
  t.equal(parseProgress('loading weights\n50% done'), null)
  t.equal(parseProgress('a | b | c'), null)
})

t.test('bounds and odd totals', async t => {
  t.same(parseProgress('100%|██████████| 50/50 [00:03<00:00]'), { percentage: 1, current: 50, total: 50 })
  t.same(parseProgress(' 50%|█████     | 0/0'), { percentage: 0.5, current: 0, total: 0 }, 'total 0 falls back to the percent')
  t.same(parseProgress('100%|██████████| 51/50'), { percentage: 1, current: 51, total: 50 }, 'clamped')
})

t.test('the fake emits logs this parser reads, step by step', async t => {
  const fake = await startFakeReplicate({ advanceOnGet: false })
  t.teardown(() => fake.close())
  const res = await fetch(`${fake.url}/models/acme/sdxl/predictions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${fake.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ input: { prompt: 'x' } })
  })
  const { id } = await res.json() as { id: string }
  const seen: Array<number | undefined> = []
  for (let p = fake.predictions.get(id); p && p.status !== 'succeeded'; p = fake.advance(id)) seen.push(parseProgress(p.logs)?.percentage)
  seen.push(parseProgress(fake.predictions.get(id)?.logs)?.percentage)
  t.same(seen, [undefined, 0.26, 0.5, 0.76, 1])
})
