// Fixtures shared by the Replicate proxy's tests: a gateway in front of the fake Replicate,
// API calls, prediction streams and the readers of their frames.
import type { Test } from 'tap'
import { startFakeReplicate, type FakeReplicate, type FakeReplicateOptions } from '../dev/fake-replicate'
import type { BuildOptions } from '../src/app'
import type { ReplicateOptions } from '../src/replicate/service'
import { build, RawStream, sign, type Gateway, type SseFrame } from './helper'

// Fast timings: a poll every 30 ms, locks that expire in 600 ms, retries from 20 ms.
export const FAST: ReplicateOptions = { pollIntervalMs: 30, lockTtlMs: 600, retryBaseDelayMs: 20, streamGraceMs: 3000 }
export const alice = sign({ sub: 'alice' })
export const mallory = sign({ sub: 'mallory' })

export interface SetupOptions {
  fake?: FakeReplicateOptions
  env?: Record<string, string>
  replicate?: ReplicateOptions
  build?: Partial<BuildOptions>
  /** create predictions with a webhook to this gateway (PUBLIC_URL = its own address) */
  webhooks?: boolean
}

export async function setup (t: Test, o: SetupOptions = {}): Promise<{ fake: FakeReplicate, gw: Gateway }> {
  const fake = await startFakeReplicate(o.fake)
  t.teardown(() => fake.close())
  const gw = await build(t, {
    REPLICATE_API_TOKEN: fake.token,
    REPLICATE_BASE_URL: fake.url,
    REPLICATE_WEBHOOK_SECRET: fake.webhookSecret,
    BATCH_WINDOW_MS: '10',
    ...(o.webhooks === true ? { PUBLIC_URL: 'http://127.0.0.1:1' } : {}),
    ...o.env
  }, { replicate: { ...FAST, ...o.replicate }, ...o.build })
  // The gateway's own address is known only now; the fake sends Replicate's webhooks there.
  if (o.webhooks === true) gw.app.config.replicate.publicUrl = gw.url
  return { fake, gw }
}

export async function api (gw: Gateway, method: string, path: string, token?: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number, body: any, headers: Headers }> {
  const res = await fetch(gw.url + path, {
    method,
    redirect: 'manual',
    headers: { ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  const text = await res.text()
  let parsed: unknown = text === '' ? undefined : text
  try { parsed = JSON.parse(text) } catch {}
  // Headers not enumerable, so `t.same(await api(...), { status, body })` compares just those.
  return Object.defineProperty({ status: res.status, body: parsed }, 'headers', { value: res.headers, enumerable: false }) as { status: number, body: any, headers: Headers }
}

export async function create (gw: Gateway, body: Record<string, unknown> = {}, token = alice): Promise<string> {
  const res = await api(gw, 'POST', '/predictions', token, { version: 'v1', input: { prompt: 'a cat' }, ...body })
  if (res.status !== 201) throw new Error(`create answered ${res.status}: ${JSON.stringify(res.body)}`)
  return res.body.id
}

export function watch (t: Test, gw: Gateway, id: string, token = alice, headers: Record<string, string> = {}): RawStream {
  const s = new RawStream(gw.port, `/predictions/${id}/events`, { Authorization: `Bearer ${token}`, ...headers })
  t.teardown(() => s.close())
  return s
}

export const data = (f: SseFrame): any => JSON.parse(f.data as string)
export const statuses = (s: RawStream): any[] => s.messages().filter(f => f.event === 'status').map(data)

export async function history (gw: Gateway, id: string): Promise<Array<{ event: string, data: any }>> {
  return (await gw.app.bus.read(`prediction:${id}`, '0-0')).messages.map(m => ({ event: m.event, data: m.data }))
}

export async function metric (gw: Gateway, name: string, labels: Record<string, string>): Promise<number> {
  const m = await gw.app.metrics.registry.getSingleMetric(name)?.get()
  const v = m?.values.find(v => Object.entries(labels).every(([k, l]) => v.labels[k] === l))
  return v?.value ?? 0
}
