/**
 * The one wait of the suite: polls until `cond` holds, fails after `ms` naming `what`. Tests
 * wait for a condition, never for a fixed time; an absence is checked by waiting for a marker
 * published after the thing that must not arrive (see `publishMarker` in helper.ts).
 */
export async function waitFor (cond: () => boolean | Promise<boolean>, ms = 10_000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms
  for (;;) {
    if (await cond()) return
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}
