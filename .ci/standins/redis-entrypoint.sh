#!/bin/sh
# As the official image's entrypoint: `redis-server` runs with protected mode off, since the
# compose network is the only way in. Debian's default keeps it on and refuses every client
# from another container, which the gateways report as "failed to start: Connection is closed."
set -e
if [ "${1#-}" != "$1" ]; then set -- redis-server "$@"; fi
if [ "$1" = redis-server ]; then
  shift
  set -- redis-server "$@" --protected-mode no
fi
exec "$@"
