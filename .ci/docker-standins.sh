#!/usr/bin/env bash
# Makes sure the four images the Dockerfile and compose files name are in the engine:
#   node:20-bookworm-slim  redis:7-alpine  nginx:1.27-alpine  prom/prometheus:v2.55.1
# Each is pulled when the registry answers; only when it cannot be pulled is a local stand-in
# built and tagged with the official name, so the Dockerfile and compose files stay as they
# are. Stand-ins start from one Debian bookworm root file system (debootstrap --variant=minbase
# from the machine's configured Debian mirror, then `docker import`). Every decision is printed.
#
#   bash .ci/docker-standins.sh        (DOCKER_HOST as for the docker client)
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=sse-gateway-ci/bookworm-minbase
LABEL=org.sse-gateway.ci.standin
say() { printf 'standins: %s\n' "$*"; }

# The bookworm mirror apt is configured with: deb822 stanzas (*.sources) whose Suites list
# `bookworm` itself (not bookworm-security), or one-line `deb URL bookworm ...` entries.
debian_mirror() {
  local m=''
  if compgen -G '/etc/apt/sources.list.d/*.sources' >/dev/null; then
    m=$(awk 'BEGIN { RS = ""; IGNORECASE = 1 }
      /(^|\n)Types:[^\n]*deb([ \t]|\n|$)/ && /(^|\n)Suites:([^\n]*[ \t])?bookworm([ \t]|\n|$)/ {
        if (match($0, /(^|\n)URIs:[ \t]*[^ \t\n]+/)) { s = substr($0, RSTART, RLENGTH); sub(/^\n?URIs:[ \t]*/, "", s); print s; exit }
      }' /etc/apt/sources.list.d/*.sources)
  fi
  if [ -z "$m" ]; then
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      sed -E 's/\[[^]]*\]//' | awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }')
  fi
  echo "${m:-http://deb.debian.org/debian}"
}

need_root_tool() { # command package
  command -v "$1" >/dev/null 2>&1 && return 0
  say "installing $2 (for $1)"
  bash .ci/install-system.sh "$2"
}

build_base() {
  if docker image inspect "$BASE" >/dev/null 2>&1; then return 0; fi
  need_root_tool debootstrap debootstrap
  local mirror tmp
  mirror=$(debian_mirror)
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/sse-standin-rootfs.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" RETURN
  say "debootstrap --variant=minbase bookworm from $mirror"
  if ! debootstrap --variant=minbase bookworm "$tmp/rootfs" "$mirror" >"$tmp/log" 2>&1; then
    tail -20 "$tmp/log" >&2
    say "debootstrap failed" >&2
    return 1
  fi
  # Package scripts must not try to start services while the stand-ins install theirs.
  printf '#!/bin/sh\nexit 101\n' >"$tmp/rootfs/usr/sbin/policy-rc.d"
  chmod +x "$tmp/rootfs/usr/sbin/policy-rc.d"
  rm -rf "$tmp/rootfs"/var/cache/apt/archives/*.deb "$tmp/rootfs"/var/lib/apt/lists/*
  tar -C "$tmp/rootfs" --numeric-owner -c . |
    docker import --change 'CMD ["/bin/bash"]' --change "LABEL $LABEL=bookworm-minbase" - "$BASE" >/dev/null
  say "imported $BASE"
}

build_node() {
  local node npmdir ca tmp
  node=$(readlink -f "$(command -v node)")
  case "$("$node" -p 'process.versions.node')" in
    20.*) ;;
    *) say "this machine's node is $("$node" --version), not 20: cannot stand in for node:20-bookworm-slim" >&2; return 1 ;;
  esac
  npmdir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
  ca=/etc/ssl/certs/ca-certificates.crt
  [ -f "$ca" ] || { say "no CA bundle at $ca" >&2; return 1; }
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/sse-standin-node.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" RETURN
  cp "$node" "$tmp/node"
  cp -a "$npmdir" "$tmp/npm"
  cp "$ca" "$tmp/ca-certificates.crt"
  cp .ci/standins/node.Dockerfile "$tmp/Dockerfile"
  quiet_build --label "$LABEL=node" -t node:20-bookworm-slim "$tmp"
}

build_from() { # image dockerfile-name
  quiet_build --label "$LABEL=$2" -t "$1" -f ".ci/standins/$2.Dockerfile" .ci/standins
}

# The build's output only when it fails (a newer client also warns that the classic builder
# is deprecated on every build, which is noise here).
quiet_build() {
  local log
  log=$(mktemp)
  if ! docker build "$@" >"$log" 2>&1; then
    tail -40 "$log" >&2
    rm -f "$log"
    say "docker build $* failed" >&2
    return 1
  fi
  rm -f "$log"
}

ensure() { # image builder...
  local image=$1 out
  shift
  if docker image inspect "$image" >/dev/null 2>&1 &&
     [ -z "$(docker image inspect -f "{{ index .Config.Labels \"$LABEL\" }}" "$image" 2>/dev/null | sed 's/<no value>//')" ]; then
    say "$image: official image present"
    return 0
  fi
  # A stand-in from an earlier run is replaced as soon as the official image can be pulled.
  if out=$(timeout 120 docker pull -q "$image" 2>&1); then
    say "$image: pulled the official image"
    return 0
  fi
  if docker image inspect "$image" >/dev/null 2>&1; then
    say "$image: official image cannot be pulled; using the local stand-in built earlier"
    return 0
  fi
  say "$image: official image cannot be pulled ($(printf '%s' "$out" | tail -1)); building a local stand-in"
  local t0=$SECONDS
  build_base
  "$@"
  say "$image: stand-in built in $((SECONDS - t0)) s"
}

ensure node:20-bookworm-slim build_node
ensure redis:7-alpine build_from redis:7-alpine redis
ensure nginx:1.27-alpine build_from nginx:1.27-alpine nginx
ensure prom/prometheus:v2.55.1 build_from prom/prometheus:v2.55.1 prometheus
