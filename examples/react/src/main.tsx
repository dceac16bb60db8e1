import { StrictMode } from 'react'
import { createRoot } from 'react-dom/client'
import { App } from './App'

// StrictMode on purpose: its double mount must not open a second stream.
createRoot(document.getElementById('root') as HTMLElement).render(<StrictMode><App /></StrictMode>)
