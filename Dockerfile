# No `# syntax=` line: with BuildKit it makes every build fetch the dockerfile frontend
# image from a registry, and nothing here needs a newer syntax than the builder's own.

# Build: full dependency tree, compile TypeScript to dist/.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: the package's own `prepare` builds, and src/ is not here yet.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY client ./client
COPY scripts ./scripts
# The dev-only entry points (`npm run dev`, the fake Replicate) are kept out by .dockerignore,
# so they are never compiled into the image.
RUN npm run build && rm -f dist/.tsbuildinfo

# Runtime: production dependencies and the compiled output, nothing else.
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
# No runtime dependency has an install script, and skipping scripts also skips
# the package's own `prepare` (a build that needs the dev tools left behind).
# The gateway never runs npm (or yarn, corepack): once the dependencies are in, the
# package managers go. `-f` because the official base and the CI stand-in ship different sets.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm cache clean --force \
 && rm -rf /usr/local/lib/node_modules /usr/local/bin/npm /usr/local/bin/npx \
    /usr/local/bin/corepack /usr/local/bin/yarn /usr/local/bin/yarnpkg /opt/yarn-* /root/.npm
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
