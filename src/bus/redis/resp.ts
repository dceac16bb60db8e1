// The slice of RESP2 (the Redis protocol) that ShardConn speaks: parse any reply, encode a
// command. Small enough that owning it beats a client whose reply matching is wrong for
// sharded pub/sub (see shard-conn.ts).

export type Resp = string | number | Buffer | null | RespError | Resp[]

export class RespError {
  constructor (readonly message: string) {}
}

/** Parses one RESP2 value at `at`; undefined when the buffer does not hold all of it yet. */
export function parseResp (buf: Buffer, at: number): [Resp, number] | undefined {
  if (at >= buf.length) return undefined
  const nl = buf.indexOf('\r\n', at)
  if (nl === -1) return undefined
  const line = buf.toString('utf8', at + 1, nl)
  switch (buf[at]) {
    case 0x2b: return [line, nl + 2] // +
    case 0x2d: return [new RespError(line), nl + 2] // -
    case 0x3a: return [Number(line), nl + 2] // :
    case 0x24: { // $
      const len = Number(line)
      if (len < 0) return [null, nl + 2]
      const end = nl + 2 + len
      if (buf.length < end + 2) return undefined
      return [buf.subarray(nl + 2, end), end + 2]
    }
    case 0x2a: { // *
      const n = Number(line)
      if (n < 0) return [null, nl + 2]
      const out: Resp[] = []
      let p = nl + 2
      for (let i = 0; i < n; i++) {
        const r = parseResp(buf, p)
        if (r === undefined) return undefined
        out.push(r[0])
        p = r[1]
      }
      return [out, p]
    }
    default: throw new Error(`redis protocol error: unexpected byte ${buf[at]}`)
  }
}

export function encodeCommand (args: string[]): string {
  let s = `*${args.length}\r\n`
  for (const a of args) s += `$${Buffer.byteLength(a)}\r\n${a}\r\n`
  return s
}
