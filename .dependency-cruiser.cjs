// The two layers of docs/architecture.md ("Layers"), checked by `npm run lint`: core (the bus,
// delivery, the prediction domain, the channel rules, outcomes) knows nothing of HTTP; the edge
// (app, auth, routes, error mapping, entry points) turns core's outcomes into HTTP. Imports
// point edge -> core, never back, and no modules import each other in a cycle, type-only
// imports included (tsPreCompilationDeps).
const CORE = '^src/(bus|delivery|replicate|shared|history|revocation|presence|admin)/|^src/(channels|outcome)[.]ts$'
const EDGE = '^src/(auth|routes|http1|cli|dev)/|^src/(app|main|index|publisher|errors|logger)[.]ts$'

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-cycle',
      severity: 'error',
      comment: 'Modules that import each other cannot be understood, tested or replaced one at a time.',
      from: {},
      to: { circular: true }
    },
    {
      name: 'core-imports-no-edge',
      severity: 'error',
      comment: 'Core must not import the HTTP edge (routes, auth plugin, errors.ts, app): return an outcome (src/outcome.ts) for the edge to map.',
      from: { path: CORE },
      to: { path: EDGE }
    },
    {
      name: 'core-imports-no-http',
      severity: 'error',
      comment: 'Core knows nothing of HTTP: no fastify in src/bus, src/delivery, src/replicate or the channel rules.',
      from: { path: CORE },
      to: { path: '(^|/)node_modules/(fastify|fastify-plugin|@fastify/[^/]+)/' }
    }
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    exclude: { path: '^(dist|coverage)/' }
  }
}
