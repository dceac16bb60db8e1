import { join } from 'node:path'
import { spawn, type ChildProcess } from 'node:child_process'
import { REDIS_URL, SECRET, waitFor } from './helper'

const MAIN = join(__dirname, '..', 'dist', 'main.js')
// Generous: CI machines are small and run two test files at a time.
const START_MS = 60000

/**
 * A real gateway process (`node dist/main.js`) on a fixed port and prefix, so it can be stopped
 * and started again as "the same" gateway, or killed outright.
 */
export class GatewayProcess {
  child: ChildProcess | null = null
  private exited: Promise<number | null> = Promise.resolve(null)

  constructor (readonly port: number, readonly prefix: string, private readonly env: Record<string, string> = {}) {}

  get url (): string {
    return `http://127.0.0.1:${this.port}`
  }

  async start (): Promise<void> {
    const child = spawn(process.execPath, [MAIN], {
      cwd: join(__dirname, '..'),
      env: {
        PATH: process.env.PATH,
        JWT_SECRET: SECRET,
        REDIS_URL,
        CHANNEL_PREFIX: this.prefix,
        PORT: String(this.port),
        HOST: '127.0.0.1',
        SHUTDOWN_DRAIN_MS: '200',
        // The drain's retry: hint is RETRY_MS/2..1.5*RETRY_MS; keep restart tests short.
        RETRY_MS: '1000',
        HISTORY_TTL_S: '600',
        LOG_LEVEL: 'warn',
        ...this.env
      },
      stdio: ['ignore', 'ignore', 'inherit']
    })
    this.child = child
    this.exited = new Promise(resolve => child.once('exit', code => resolve(code)))
    await waitFor(async () => {
      if (child.exitCode !== null) throw new Error(`gateway exited with code ${child.exitCode} before it was ready`)
      return (await fetch(`${this.url}/readyz`).catch(() => null))?.status === 200
    }, START_MS, `gateway ready on port ${this.port}`)
  }

  /** SIGTERM (drain, then close) and wait for the process to exit. */
  async stop (): Promise<number | null> {
    if (this.child === null || this.child.exitCode !== null) return this.child?.exitCode ?? null
    this.child.kill('SIGTERM')
    return await this.exited
  }

  /** SIGKILL: a crash, nothing cleaned up. */
  kill (): void {
    if (this.child !== null && this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL')
  }

  async metric (name: string): Promise<number> {
    const text = await (await fetch(`${this.url}/metrics`)).text()
    const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text)
    if (m === null) throw new Error(`metric ${name} not found`)
    return Number(m[1])
  }
}
