// Where the gateway is and who we are. Dev mode only: `POST /demo/session` hands a token to
// anyone, which is why the gateway refuses demo mode in production. A real app gets its token
// from its own backend.

const params = new URLSearchParams(window.location.search)

/** `?gateway=` wins, then `VITE_GATEWAY_URL` at build time, then `npm run dev`'s default. */
export const GATEWAY = (params.get('gateway') ?? import.meta.env.VITE_GATEWAY_URL ?? 'http://localhost:3000').replace(/\/+$/, '')

/** The demo user (`?user=`); the private channel `user:<name>` comes with its token. */
export const USER = params.get('user') ?? 'ada'

export interface Session {
  user: string
  /** Reads the user's stream and owns the user's predictions. */
  token: string
  /** Lets the page publish test notifications (a real app keeps these on its servers). */
  publisherToken: string
}

export async function signIn (user: string): Promise<Session> {
  let res: Response
  try {
    res = await fetch(`${GATEWAY}/demo/session`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user })
    })
  } catch {
    throw new Error(`no gateway at ${GATEWAY}: is \`npm run dev\` running?`)
  }
  if (!res.ok) {
    const body = await res.json().catch(() => ({})) as { message?: string }
    throw new Error(body.message ?? `POST /demo/session answered ${res.status} (is the gateway in demo mode?)`)
  }
  return await res.json() as Session
}

export async function publishTestNotification (session: Session, text: string): Promise<void> {
  const res = await fetch(`${GATEWAY}/publish`, {
    method: 'POST',
    headers: { authorization: `Bearer ${session.publisherToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ channel: `user:${session.user}`, event: 'notification', data: { text } })
  })
  if (!res.ok) throw new Error(`publish answered ${res.status}`)
}
