// A small log-linear histogram (HdrHistogram-like): values in units of 10 µs, exact below
// 2,048 units (20.48 ms), then 1,024 sub-buckets per power of two (0.1 % relative error).
// 16,384 Uint32 counters cover 0 .. ~83 s; larger values land in the last bucket but `max`
// stays exact. Histograms of several processes are merged by adding their arrays.

export const UNIT_MS = 0.01
const SIZE = 16384

function index (u) {
  if (u < 2048) return u
  const e = 31 - Math.clz32(u) - 10 // u >> e is in [1024, 2047]
  const i = 2048 + (e - 1) * 1024 + ((u >> e) - 1024)
  return i < SIZE ? i : SIZE - 1
}

/** Lower bound, in units, of bucket i. */
function lower (i) {
  if (i < 2048) return i
  const e = ((i - 2048) >> 10) + 1
  const m = ((i - 2048) & 1023) + 1024
  return m * 2 ** e
}

export class Histogram {
  constructor () {
    this.counts = new Uint32Array(SIZE)
    this.n = 0
    this.sum = 0
    this.max = 0
    this.negative = 0
  }

  /** Records a value in milliseconds (negative values count as 0 and are tallied). */
  record (ms) {
    if (ms < 0) {
      this.negative++
      ms = 0
    }
    const u = Math.floor(ms / UNIT_MS)
    this.counts[index(u)]++
    this.n++
    this.sum += ms
    if (ms > this.max) this.max = ms
  }

  reset () {
    this.counts.fill(0)
    this.n = 0
    this.sum = 0
    this.max = 0
    this.negative = 0
  }

  /** Sparse, IPC-friendly form. */
  toJSON () {
    const idx = []
    const cnt = []
    for (let i = 0; i < SIZE; i++) {
      if (this.counts[i] !== 0) {
        idx.push(i)
        cnt.push(this.counts[i])
      }
    }
    return { idx, cnt, n: this.n, sum: this.sum, max: this.max, negative: this.negative }
  }

  merge (o) {
    if (o instanceof Histogram) {
      for (let i = 0; i < SIZE; i++) this.counts[i] += o.counts[i]
    } else {
      for (let k = 0; k < o.idx.length; k++) this.counts[o.idx[k]] += o.cnt[k]
    }
    this.n += o.n
    this.sum += o.sum
    this.negative += o.negative
    if (o.max > this.max) this.max = o.max
    return this
  }

  /** Value (ms) at quantile q in [0, 1]: the upper edge of the bucket, capped by max. */
  quantile (q) {
    if (this.n === 0) return null
    const rank = Math.max(1, Math.ceil(q * this.n))
    let seen = 0
    for (let i = 0; i < SIZE; i++) {
      seen += this.counts[i]
      if (seen >= rank) return Math.min(this.max, lower(i + 1) * UNIT_MS)
    }
    return this.max
  }

  summary () {
    if (this.n === 0) return { n: 0, mean: null, p50: null, p95: null, p99: null, p999: null, max: null }
    const r = (v) => Math.round(v * 100) / 100
    return {
      n: this.n,
      mean: r(this.sum / this.n),
      p50: r(this.quantile(0.5)),
      p95: r(this.quantile(0.95)),
      p99: r(this.quantile(0.99)),
      p999: r(this.quantile(0.999)),
      max: r(this.max),
      ...(this.negative > 0 ? { negative: this.negative } : {})
    }
  }

  static from (json) {
    return new Histogram().merge(json)
  }
}

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across processes. */
export function nowMs () {
  return performance.timeOrigin + performance.now()
}
