// One request-id sequence for fastify (genReqId in app.ts) and the front door, so ids in the
// log stay unique whichever of them answered; an `x-request-id` header wins in both.
// Below 2^31 the counter stays a small integer for V8 (fastify's default does the same).
let next = 0

export function nextRequestId (): string {
  next = (next + 1) & 0x7fffffff
  return 'req-' + next.toString(36)
}
