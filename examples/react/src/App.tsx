import { useEffect, useRef, useState, type FormEvent } from 'react'
import { useEventStream, usePrediction } from 'sse-gateway/react'
import type { GatewayEvent } from 'sse-gateway/client'
import { GATEWAY, USER, publishTestNotification, signIn, type Session } from './session'

const MODEL = 'black-forest-labs/flux-schnell'

export function App () {
  const [session, setSession] = useState<Session | null>(null)
  const [problem, setProblem] = useState<string | null>(null)

  useEffect(() => {
    let live = true
    signIn(USER).then((s) => { if (live) setSession(s) }, (err: Error) => { if (live) setProblem(err.message) })
    return () => { live = false }
  }, [])

  return (
    <>
      <h1>Image generator <small>· sse-gateway/react</small></h1>
      <p>Gateway: <code>{GATEWAY}</code> · user: <b>{USER}</b></p>
      {problem !== null && <p className="error" role="alert" data-testid="session-error">{problem}</p>}
      {session === null && problem === null && <p>Signing in…</p>}
      {session !== null && (
        <>
          <Generator session={session} />
          <Notifications session={session} />
        </>
      )}
    </>
  )
}

function Generator ({ session }: { session: Session }) {
  const [prompt, setPrompt] = useState('A lighthouse at dawn, painted in oils')
  const { start, cancel, status, progress, output, error, id } = usePrediction({ baseUrl: GATEWAY, token: session.token, model: MODEL })
  const busy = status === 'starting' || status === 'processing'
  const percent = Math.round((progress?.percentage ?? 0) * 100)

  const submit = (e: FormEvent): void => {
    e.preventDefault()
    void start({ prompt }) // never rejects: a refusal shows up in `error`
  }

  return (
    <section aria-label="generator">
      <h2>Generate</h2>
      <form onSubmit={submit}>
        <input name="prompt" value={prompt} onChange={(e) => setPrompt(e.target.value)} aria-label="prompt" />{' '}
        <button type="submit" disabled={busy} data-testid="generate">Generate</button>{' '}
        <button type="button" disabled={!busy} onClick={() => { void cancel() }} data-testid="cancel">Cancel</button>
      </form>
      <p>
        Status: <span className="badge" data-status={status} data-testid="status">{status}</span>
        {id !== null && <small> · {id}</small>}
      </p>
      <progress max={100} value={percent} data-testid="progress-bar" /> <span data-testid="progress">{percent}%</span>
      {error !== null && <p className="error" role="alert" data-testid="error">{error.code}: {error.message}</p>}
      {output !== undefined && output !== null && <Output value={output} />}
    </section>
  )
}

const IMAGE = /^(https?:|data:image\/)/

function Output ({ value }: { value: unknown }) {
  const items = Array.isArray(value) ? value : [value]
  if (items.length > 0 && items.every((v) => typeof v === 'string' && IMAGE.test(v))) {
    return <div className="output" data-testid="output">{(items as string[]).map((src) => <img key={src} src={src} alt="generated" />)}</div>
  }
  // Text models (and `npm run dev`'s fake) stream their output as pieces of text.
  const text = items.every((v) => typeof v === 'string') ? items.join('') : JSON.stringify(value, null, 2)
  return <div className="output" data-testid="output">{text}</div>
}

interface Notification { key: number, at: string, text: string }

function describe (e: GatewayEvent): string {
  const d = e.data as Record<string, unknown> | null
  if (e.type === 'prediction' && d !== null && typeof d === 'object') return `Prediction ${String(d.id).slice(0, 8)}… is ${String(d.status)}`
  if (e.type === 'notification' && d !== null && typeof d === 'object' && typeof d.text === 'string') return d.text
  return `${e.type}: ${e.raw}`
}

function Notifications ({ session }: { session: Session }) {
  const [items, setItems] = useState<Notification[]>([])
  const counter = useRef(0)
  // The user's private stream (user:<name> comes with the token). onEvent sees every event;
  // `lastEvent` alone would miss some when several arrive between two renders.
  const { status, error } = useEventStream({
    url: `${GATEWAY}/events`,
    token: session.token,
    onEvent: (e) => {
      if (e.type === 'reset' || e.type === 'auth-expired') return
      const item = { key: ++counter.current, at: new Date().toLocaleTimeString(), text: e.error !== undefined ? `malformed event: ${e.raw}` : describe(e) }
      setItems((list) => [item, ...list].slice(0, 50))
    }
  })
  const [sending, setSending] = useState(false)

  const send = (): void => {
    setSending(true)
    publishTestNotification(session, `Hello ${session.user}, it is ${new Date().toLocaleTimeString()}`)
      .catch((err: Error) => setItems((list) => [{ key: ++counter.current, at: new Date().toLocaleTimeString(), text: `could not publish: ${err.message}` }, ...list]))
      .finally(() => setSending(false))
  }

  return (
    <section aria-label="notifications">
      <h2>Notifications <span className="badge" data-status={status} data-testid="stream-status">{status}</span></h2>
      {error !== null && <p className="error" data-testid="stream-error">{error.code}: {error.message}</p>}
      <button type="button" onClick={send} disabled={sending}>Send me a test notification</button>
      <ul className="notifications" data-testid="notifications">
        {items.map((n) => <li key={n.key}><time>{n.at}</time>{n.text}</li>)}
      </ul>
      {items.length === 0 && <p><small>Nothing yet: start a prediction or send a test notification.</small></p>}
    </section>
  )
}
