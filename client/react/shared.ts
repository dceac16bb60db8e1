// Helpers shared by the React hooks: the tracked external store that keeps a component from
// re-rendering for fields it never read, and error plumbing.
import { useCallback, useEffect, useLayoutEffect, useMemo, useRef, useSyncExternalStore } from 'react'
import { GatewayClientError } from '../index'

/** How long a stream whose last subscriber left stays open for a new one (StrictMode's
 * mount → unmount → mount, a route change that unmounts and remounts). */
export const CLOSE_DELAY_MS = 100

// useLayoutEffect warns during server rendering; effects do not run there anyway.
export const useIsomorphicLayoutEffect = typeof document !== 'undefined' ? useLayoutEffect : useEffect

export function toClientError (err: unknown, code: string): GatewayClientError {
  if (err instanceof GatewayClientError) return err
  return new GatewayClientError(code, err instanceof Error ? err.message : String(err), { cause: err })
}

export function reportUncaught (err: unknown): void {
  const report = (globalThis as { reportError?: (e: unknown) => void }).reportError
  if (typeof report === 'function') report(err)
  else console.error(err)
}

/**
 * useSyncExternalStore with field tracking: the returned object's getters record which fields
 * the component read, and a store change re-renders the component only when one of those
 * changed. A component that shows `status` does not re-render for every event.
 */
export function useTrackedStore<S extends object> (
  subscribe: (notify: () => void) => () => void,
  read: () => S,
  readServer: () => S
): S {
  const tracked = useRef<Set<keyof S>>(new Set()).current
  const last = useRef<S | null>(null)
  const getSnapshot = useCallback((): S => {
    const next = read()
    const prev = last.current
    if (prev !== null && prev !== next) {
      let same = true
      for (const f of tracked) {
        if (!Object.is(prev[f], next[f])) { same = false; break }
      }
      if (same) return prev
    }
    last.current = next
    return next
  }, [read, tracked])
  const snap = useSyncExternalStore(subscribe, getSnapshot, readServer)
  return useMemo(() => {
    // Fields tracked when `snap` was chosen are current in it; a field read for the first time
    // may have changed since (nobody was watching it), so it comes from the store itself.
    const fresh = new Set(tracked)
    const seen = new Map<keyof S, unknown>()
    const view = {} as S
    for (const f of Object.keys(snap) as Array<keyof S>) {
      Object.defineProperty(view, f, {
        enumerable: true,
        get: () => {
          if (!seen.has(f)) {
            tracked.add(f)
            seen.set(f, fresh.has(f) ? snap[f] : read()[f])
          }
          return seen.get(f)
        }
      })
    }
    return view
  }, [snap, read, tracked])
}
