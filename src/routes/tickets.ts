import type { FastifyInstance } from 'fastify'
import { TICKET_TTL_MS } from '../auth/plugin'

export default async function ticketRoutes (app: FastifyInstance): Promise<void> {
  // A ticket carries the caller's claims for one stream within 30 s, so the long-lived token
  // never has to appear in a URL (proxy logs, browser history).
  app.post('/tickets', async (request, reply) => {
    const claims = await app.auth.claims(request)
    const ticket = await app.auth.issueTicket(claims)
    reply.code(201).header('cache-control', 'no-store')
    return { ticket, expires_in: TICKET_TTL_MS / 1000 }
  })
}
