// The one abort-aware sleep. It resolves early when a signal aborts rather than rejecting:
// every caller re-checks its own state after waking (stopped? woken to poll now?), and a
// rejection would make each of them catch a reason it does not care about.
export function sleep (ms: number, ...signals: Array<AbortSignal | undefined>): Promise<void> {
  const live = signals.filter((s): s is AbortSignal => s !== undefined)
  return new Promise(resolve => {
    if (live.some(s => s.aborted)) return resolve()
    const done = (): void => {
      clearTimeout(timer)
      for (const s of live) s.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    for (const s of live) s.addEventListener('abort', done, { once: true })
  })
}
