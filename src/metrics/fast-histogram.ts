import type { Registry } from 'prom-client'

/**
 * A label-less histogram for the delivery hot path. prom-client's observe() allocates a label
 * object and a closure per call; this one bumps a typed-array slot and nothing else, and
 * renders in prom-client's format when scraped.
 */
export class FastHistogram {
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  private readonly counts: Float64Array
  private sum = 0
  private count = 0

  constructor (readonly name: string, readonly help: string, private readonly bounds: readonly number[], registry: Registry) {
    this.counts = new Float64Array(bounds.length + 1)
    registry.registerMetric(this as any)
  }

  observe (v: number): void {
    const b = this.bounds
    let i = 0
    while (i < b.length && v > b[i]) i++
    this.counts[i]++
    this.sum += v
    this.count++
  }

  async get (): Promise<{ name: string, help: string, type: string, aggregator: string, values: Array<{ labels: Record<string, string | number>, value: number, metricName: string }> }> {
    const values = []
    let acc = 0
    for (let i = 0; i <= this.bounds.length; i++) {
      acc += this.counts[i]
      values.push({ labels: { le: i < this.bounds.length ? this.bounds[i] : '+Inf' }, value: acc, metricName: `${this.name}_bucket` })
    }
    values.push({ labels: {}, value: this.sum, metricName: `${this.name}_sum` })
    values.push({ labels: {}, value: this.count, metricName: `${this.name}_count` })
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values }
  }

  reset (): void {
    this.counts.fill(0)
    this.sum = 0
    this.count = 0
  }
}
