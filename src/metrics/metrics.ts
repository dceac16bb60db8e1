import { Counter, Gauge, Histogram, collectDefaultMetrics, Registry } from 'prom-client'
import { FastHistogram } from './fast-histogram'

/**
 * Every metric of the gateway, defined once. Labels are bounded enums (reasons, operations,
 * outcomes); never a user, channel or prediction id. Hot paths hold labelled children
 * resolved here, not looked up per message.
 */
export function createMetrics (registry: Registry = new Registry(), opts: { defaults?: boolean } = {}) {
  if (opts.defaults !== false) collectDefaultMetrics({ register: registry })
  const r = [registry]

  const connectionsActive = new Gauge({ name: 'gateway_connections_active', help: 'Open SSE streams on this instance', registers: r })
  const connectionsOpened = new Counter({ name: 'gateway_connections_opened_total', help: 'SSE streams opened', registers: r })
  const connectionsRejected = new Counter({
    name: 'gateway_connections_rejected_total',
    help: 'SSE stream requests refused, by reason',
    labelNames: ['reason'] as const,
    registers: r
  })
  const connectionsClosed = new Counter({
    name: 'gateway_connections_closed_total',
    help: 'SSE streams closed, by reason',
    labelNames: ['reason'] as const,
    registers: r
  })
  const connectionDuration = new Histogram({
    name: 'gateway_connections_duration_seconds',
    help: 'How long SSE streams stayed open',
    buckets: [1, 10, 60, 300, 1800, 3600, 14400],
    registers: r
  })
  const published = new Counter({
    name: 'gateway_bus_messages_published_total',
    help: 'Messages published into the bus by this instance, by source',
    labelNames: ['source'] as const,
    registers: r
  })
  const delivered = new Counter({ name: 'gateway_delivery_messages_delivered_total', help: 'Message frames written to SSE streams (live and replay)', registers: r })
  const replayed = new Counter({ name: 'gateway_delivery_messages_replayed_total', help: 'Message frames replayed from history on resume', registers: r })
  const dropped = new Counter({
    name: 'gateway_delivery_messages_dropped_total',
    help: 'Messages not delivered, by reason (conflated: replaced by a newer value with the same key; malformed: not an envelope; undeliverable: cannot be framed within the limits)',
    labelNames: ['reason'] as const,
    registers: r
  })
  const resets = new Counter({ name: 'gateway_delivery_resets_total', help: 'reset events sent because a cursor was older than the history', registers: r })
  const socketWrites = new Counter({ name: 'gateway_delivery_socket_writes_total', help: 'Socket writes carrying message frames (compare with messages delivered)', registers: r })
  // Observed once per socket write and once per frame per recipient: the allocation-free kind.
  const batchSize = new FastHistogram('gateway_delivery_batch_messages', 'Message frames per socket write', [1, 2, 5, 10, 20, 50, 100, 500], registry)
  const latency = new FastHistogram('gateway_delivery_latency_seconds', 'From the envelope ts (publish) to the socket write',
    [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5], registry)
  const presenceMembers = new Gauge({ name: 'gateway_presence_members', help: 'Presence members on this instance, summed over shared channels (a member on two channels counts twice)', registers: r })
  const presenceChannels = new Gauge({ name: 'gateway_presence_channels', help: 'Shared channels with a presence member on this instance', registers: r })
  const presenceEvents = new Counter({
    name: 'gateway_presence_members_announced_total',
    help: 'Members announced in join and leave events published by this instance, by event',
    labelNames: ['event'] as const,
    registers: r
  })
  const revocations = new Counter({ name: 'gateway_auth_revocations_total', help: 'Revocations received (POST /disconnect on any instance)', registers: r })
  const busSubscriptions = new Gauge({ name: 'gateway_bus_subscriptions', help: 'Bus channels this instance is subscribed to', registers: r })
  const busReconnects = new Counter({ name: 'gateway_bus_reconnects_total', help: 'Times the bus subscriber reconnected and resynchronised', registers: r })
  const busUp = new Gauge({ name: 'gateway_bus_up', help: '1 when the bus is connected', registers: r })
  const replicateCalls = new Counter({
    name: 'gateway_replicate_calls_total',
    help: 'Calls to the Replicate API, by operation and outcome',
    labelNames: ['operation', 'outcome'] as const,
    registers: r
  })
  const replicatePolls = new Counter({
    name: 'gateway_replicate_polls_total',
    help: 'Polls of a prediction by its poller, by mode (poll: no webhooks yet; safety_net: webhooks arrive, polled rarely)',
    labelNames: ['mode'],
    registers: r
  })
  const webhooks = new Counter({
    name: 'gateway_replicate_webhooks_total',
    help: 'Replicate webhooks received, by outcome',
    labelNames: ['outcome'] as const,
    registers: r
  })

  return {
    registry,
    connectionsActive,
    presenceMembers,
    presenceChannels,
    presenceEvents,
    presenceEventsOf: childrenOf(presenceEvents),
    revocations,
    connectionsOpened,
    connectionsRejected,
    rejectedFor: childrenOf(connectionsRejected),
    connectionsClosed,
    closedFor: childrenOf(connectionsClosed),
    connectionDuration,
    published,
    delivered,
    replayed,
    dropped,
    droppedFor: childrenOf(dropped),
    droppedConflated: dropped.labels('conflated'),
    droppedMalformed: dropped.labels('malformed'),
    droppedUndeliverable: dropped.labels('undeliverable'),
    resets,
    socketWrites,
    batchSize,
    latency,
    busSubscriptions,
    busReconnects,
    busUp,
    replicateCalls,
    replicatePolls,
    webhooks
  }
}

export type Metrics = ReturnType<typeof createMetrics>

/**
 * A one-label counter's child per value, made on first use and kept: prom-client's labels()
 * hashes its arguments on every call, which a connect or close storm would pay each time. The
 * values are the bounded enums of the label, so the cache is bounded too.
 */
export function childrenOf (counter: Counter<string>): (value: string) => Counter.Internal {
  const made = new Map<string, Counter.Internal>()
  return (value) => {
    let child = made.get(value)
    if (child === undefined) made.set(value, child = counter.labels(value))
    return child
  }
}
