// `npm run dev`: the gateway in demo mode next to a fake Replicate, for trying the demo page
// (/demo) and the React example without any account. Development only.
import { startFakeReplicate } from './fake-replicate'
import { buildApp } from '../src/app'
import { loadConfig } from '../src/config'

async function main (): Promise<void> {
  const fake = await startFakeReplicate({
    port: Number(process.env.FAKE_REPLICATE_PORT ?? 8787),
    stepMs: Number(process.env.STEP_MS ?? 600),
    plan: { steps: 8, tokens: ['A', ' lighthouse', ' at', ' dawn', ',', ' painted', ' in', ' oils.'], stream: true }
  })
  const config = loadConfig({
    ...process.env,
    DEMO: 'true',
    REPLICATE_BASE_URL: fake.url,
    REPLICATE_API_TOKEN: fake.token,
    CORS_ORIGINS: process.env.CORS_ORIGINS ?? '*'
  })
  const app = await buildApp({ config })
  await app.listen({ port: config.port, host: config.host })
  process.stdout.write(`\n  demo:        http://localhost:${config.port}/demo\n  replicate:   ${fake.url} (fake)\n\n`)
  const stop = (): void => {
    app.close().then(async () => await fake.close()).then(() => process.exit(0), () => process.exit(1))
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
}

main().catch((err) => {
  process.stderr.write(`dev: ${(err as Error).message}\n`)
  process.exit(1)
})
