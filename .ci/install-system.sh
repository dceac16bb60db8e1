#!/usr/bin/env bash
# Installs the Debian packages CI needs, only those missing:
#   redis-server  single Redis and the local Redis Cluster (.ci/redis-cluster.sh)
#   nginx         the load-balancer failover test (deploy/nginx.conf)
#   chromium      browser tests
#   openssl       the tests' self-signed certificates (HTTP/2 over TLS)
#   libnginx-mod-nchan  only with the argument `nchan`: the peer of `npm run bench -- --compare nchan`
# Other package names as arguments: those instead (the compose end-to-end asks for
# docker.io, docker-compose and debootstrap this way: .ci/compose-e2e.sh).
# A machine that already has them costs no apt-get update and prints one line.
# The machine may be fresh (nothing installed by hand survives), so CI calls this
# first rather than assuming.
set -euo pipefail

# package -> commands it must provide
declare -A provides=(
  [redis-server]="redis-server redis-cli"
  [nginx]="nginx"
  [chromium]="chromium"
  [openssl]="openssl"
  [libnginx-mod-nchan]="/usr/lib/nginx/modules/ngx_nchan_module.so"
  [docker.io]="docker dockerd"
  [docker-compose]="docker-compose"
  [debootstrap]="debootstrap"
)
wanted=("$@")
if [ "${#wanted[@]}" -eq 0 ]; then wanted=(redis-server nginx chromium openssl); fi
if [ "${1:-}" = nchan ]; then wanted=(nginx libnginx-mod-nchan); fi

# a command on PATH, or (starting with /) a file
present() { if [ "${1:0:1}" = / ]; then [ -e "$1" ]; else command -v "$1" >/dev/null 2>&1; fi; }

missing=()
for pkg in "${wanted[@]}"; do
  for cmd in ${provides[$pkg]:-$pkg}; do
    if ! present "$cmd"; then missing+=("$pkg"); break; fi
  done
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-system: ${wanted[*]} already present"
  exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-system: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi

log=$(mktemp)
# Package scripts would start system nginx on :80 and Redis on :6379; the tests
# start their own on other ports, so forbid service starts while installing
# (policy-rc.d exit 101 = "action not allowed"), unless a policy already exists.
policy=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod +x "$policy"
  added_policy=1
fi
cleanup() {
  if [ "$added_policy" = 1 ]; then "${sudo[@]}" rm -f "$policy"; fi
  rm -f "$log"
}
trap cleanup EXIT

echo "install-system: installing ${missing[*]}"
if ! { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
       "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "install-system: apt-get failed" >&2
  exit 1
fi

for pkg in "${missing[@]}"; do
  for cmd in ${provides[$pkg]:-$pkg}; do
    present "$cmd" || { echo "install-system: $pkg installed but $cmd not found" >&2; exit 1; }
  done
done
