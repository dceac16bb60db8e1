// Progress from tqdm-style log lines, e.g.
//   ` 40%|████      | 20/50 [00:01<00:02, 15.0it/s]`
// Not the client's parseProgressFromLogs: it anchors the percentage at the start of the line
// (so `Sampling:  40%|…` with a tqdm `desc` is missed), needs a non-empty bar, and splits
// only on `\n`, so tqdm's in-place `\r` redraws on one line report the oldest value.

export interface Progress {
  /** 0..1 */
  percentage: number
  current: number
  total: number
}

const BAR = /(\d{1,3})%[ \t]*\|[^|\r\n]*\|[ \t]*(\d+)\/(\d+)/g

export function parseProgress (logs: string | null | undefined): Progress | null {
  if (!logs) return null
  let last: RegExpExecArray | undefined
  // The last match in the text is the newest redraw, whether separated by \n or \r.
  for (const m of logs.matchAll(BAR)) last = m
  if (!last) return null
  const [, pct, cur, tot] = last
  const current = Number(cur)
  const total = Number(tot)
  // current/total is finer than tqdm's rounded percent; the percent covers total = 0.
  const ratio = total > 0 ? current / total : Number(pct) / 100
  return { percentage: Math.min(1, Math.max(0, ratio)), current, total }
}
