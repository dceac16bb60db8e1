// `npm run dev:replicate`: the fake Replicate next to a local gateway, so predictions can be
// tried without a Replicate account. Point the gateway at it with REPLICATE_BASE_URL.
//   node dist-dev/fake-replicate-cli.js [--port 8787] [--step-ms 700] [--token r8_fake_token]
import { startFakeReplicate } from './fake-replicate'

function arg (name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : undefined
}

function int (name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback
  const n = Number(value)
  if (!Number.isInteger(n) || n < 0) {
    console.error(`fake-replicate: ${name} must be a non-negative integer, not "${value}"`)
    process.exit(2)
  }
  return n
}

async function main (): Promise<void> {
  const fake = await startFakeReplicate({
    port: int('--port', arg('port') ?? process.env.PORT, 8787),
    host: arg('host') ?? process.env.HOST ?? '127.0.0.1',
    // A wall-clock step so a prediction runs by itself while someone watches it.
    stepMs: int('--step-ms', arg('step-ms') ?? process.env.STEP_MS, 700),
    token: arg('token') ?? process.env.REPLICATE_API_TOKEN,
    webhookSecret: process.env.REPLICATE_WEBHOOK_SECRET,
    plan: { steps: 5, tokens: ['Once', ' upon', ' a', ' time', '.'], stream: true }
  })
  console.log(`fake Replicate at ${fake.url}`)
  console.log(`  REPLICATE_BASE_URL=${fake.url} REPLICATE_API_TOKEN=${fake.token} REPLICATE_WEBHOOK_SECRET=${fake.webhookSecret}`)
  const stop = (): void => { fake.close().then(() => process.exit(0), () => process.exit(1)) }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
}

main().catch(err => {
  console.error(`fake-replicate: ${err instanceof Error ? err.message : String(err)}`)
  process.exit(1)
})
