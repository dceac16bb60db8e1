import type { PresenceBackend, PresenceView } from './presence'

/** One process: its own members are the channel's. */
export class MemoryPresenceBackend implements PresenceBackend {
  private readonly channels = new Map<string, Map<string, number>>()

  async update (channel: string, counts: Array<[string, number]>): Promise<{ joined: string[], left: string[] }> {
    let members = this.channels.get(channel)
    if (members === undefined) {
      members = new Map()
      this.channels.set(channel, members)
    }
    const joined: string[] = []
    const left: string[] = []
    for (const [sub, n] of counts) {
      const before = members.get(sub) ?? 0
      if (n > 0) members.set(sub, n)
      else members.delete(sub)
      if (before === 0 && n > 0) joined.push(sub)
      else if (before > 0 && n === 0) left.push(sub)
    }
    if (members.size === 0) this.channels.delete(channel)
    return { joined, left }
  }

  async heartbeat (): Promise<{ lost: boolean, left: string[] }> {
    return { lost: false, left: [] }
  }

  async query (channel: string, max: number): Promise<PresenceView> {
    const members = [...(this.channels.get(channel)?.keys() ?? [])].sort()
    return { count: members.length, members: members.slice(0, max) }
  }
}
