# Stand-in for node:20-bookworm-slim, built only when the official image cannot be pulled:
# the machine's own Node 20 and npm on a Debian bookworm base, laid out as the official image
# (/usr/local, user `node` uid 1000). The context is prepared by .ci/docker-standins.sh.
FROM sse-gateway-ci/bookworm-minbase
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
# The registry is reached through a TLS-intercepting proxy: without the machine's CA bundle
# `npm ci` in the image build fails with "self-signed certificate in certificate chain".
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && groupadd --gid 1000 node \
 && useradd --uid 1000 --gid node --shell /bin/bash --create-home node \
 && node --version && npm --version
CMD ["node"]
