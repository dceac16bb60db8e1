# No `# syntax=` line: with BuildKit it makes every build fetch the dockerfile frontend
# image from a registry, and nothing here needs a newer syntax than the builder's own.

# Dependencies: the full tree, installed once; the runtime gets the same tree pruned, so a
# build downloads the packages one time only. Cached until package*.json change.
FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: the package's own `prepare` builds, and src/ is not here yet. No runtime
# dependency has an install script.
RUN npm ci --ignore-scripts --no-audit --no-fund

# Build: compile TypeScript and the client bundles to dist/.
FROM deps AS build
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY client ./client
COPY scripts ./scripts
# The dev-only servers (dev/: `npm run dev`, the fake Replicate) are not copied, and
# .dockerignore keeps them out of the context too.
RUN npm run build && rm -f dist/.tsbuildinfo

# Production dependencies only: the dev tree (compiler, test runner, linters, bundlers) removed.
FROM deps AS prod-deps
RUN npm prune --omit=dev --ignore-scripts --no-audit --no-fund

# Runtime: production dependencies and the compiled output, nothing else.
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production
# The gateway never runs npm (or yarn, corepack): the package managers go. `-f` because the
# official base and the CI stand-in ship different sets.
RUN rm -rf /usr/local/lib/node_modules /usr/local/bin/npm /usr/local/bin/npx \
    /usr/local/bin/corepack /usr/local/bin/yarn /usr/local/bin/yarnpkg /opt/yarn-*
WORKDIR /app
COPY package.json package-lock.json ./
COPY --from=prod-deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY public ./public
# Files stay root-owned, so the process cannot rewrite its own code.
USER node
EXPOSE 3000
# Liveness only (/healthz): /readyz turns 503 while draining, and Docker must not
# treat a replica handing its streams over as broken. The slim image has no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# Exec form: node is PID 1 and receives SIGTERM itself, which starts the drain.
CMD ["node", "dist/main.js"]
