#!/usr/bin/env bash
# Local Redis Cluster for the bus tests: 3 masters + 3 replicas of Debian's
# redis-server on loopback, ports BASE..BASE+5 (cluster bus on +10000).
#
#   .ci/redis-cluster.sh start  [base_port]   # default 7001; no-op if already up
#   .ci/redis-cluster.sh stop   [base_port]   # shuts the nodes down, removes their dirs
#   .ci/redis-cluster.sh status [base_port]   # exit 0 iff every node says cluster_state:ok
#
# Seeds for the gateway: REDIS_CLUSTER_NODES=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
# Nothing is persisted: every start is a fresh, empty cluster.
set -euo pipefail

cmd=${1:-}
base=${2:-7001}
nodes=6
# Canonical, because `ours` compares it with the path Redis reports.
root="$(realpath -m "${TMPDIR:-/tmp}")/sse-gateway-redis-cluster-$base"

usage() { echo "usage: $0 start|stop|status [base_port]" >&2; exit 2; }
die() { echo "redis-cluster: $*" >&2; exit 1; }

[[ $base =~ ^[0-9]+$ ]] || usage
# The cluster bus listens on port+10000, which must still be a valid port.
(( base >= 1024 && base + nodes - 1 + 10000 <= 65535 )) || die "base_port $base out of range (1024..$((65535 - 10000 - nodes + 1)))"

ports() { seq "$base" $((base + nodes - 1)); }
cli() { local port=$1; shift; redis-cli -h 127.0.0.1 -p "$port" "$@"; }
alive() { [ "$(cli "$1" ping 2>/dev/null)" = PONG ]; }

# A node is ours when its working directory is the one this script gave it, so
# stop never shuts down a Redis someone else runs on the same port.
ours() { cli "$1" config get dir 2>/dev/null | tail -n 1 | grep -qx "$root/$1"; }

cluster_ok() {
  local port info
  for port in $(ports); do
    info=$(cli "$port" cluster info 2>/dev/null | tr -d '\r') || return 1
    grep -qx 'cluster_state:ok' <<<"$info" || return 1
    grep -qx "cluster_known_nodes:$nodes" <<<"$info" || return 1
  done
}

# Failover tests need replicas that have finished their first sync.
replicas_synced() {
  local port info
  for port in $(ports); do
    info=$(cli "$port" info replication 2>/dev/null | tr -d '\r') || return 1
    if grep -qx 'role:slave' <<<"$info"; then
      grep -qx 'master_link_status:up' <<<"$info" || return 1
    fi
  done
}

wait_for() {
  local what=$1 tries=$2; shift 2
  for ((i = 0; i < tries; i++)); do
    "$@" && return 0
    sleep 0.2
  done
  die "timed out waiting for $what (logs in $root/*/redis.log)"
}

stop() {
  local port pid
  for port in $(ports); do
    if alive "$port"; then
      ours "$port" || { echo "redis-cluster: port $port is not ours, left running" >&2; continue; }
      cli "$port" shutdown nosave >/dev/null 2>&1 || true
    fi
    # Also covers a node that stopped answering but whose process lingers.
    pid=$(cat "$root/$port/redis.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    for ((i = 0; i < 50; i++)); do alive "$port" || break; sleep 0.1; done
  done
  rm -rf "$root"
}

start() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null \
    || die "redis-server/redis-cli not installed (run .ci/install-system.sh)"

  local port all_ours=1
  for port in $(ports); do
    if alive "$port"; then ours "$port" || die "port $port is taken by a Redis this script did not start"
    else all_ours=0; fi
  done
  if ((all_ours)) && cluster_ok; then
    echo "redis cluster already up on 127.0.0.1:$base-$((base + nodes - 1))"
    return 0
  fi
  # Half-started or broken leftovers of ours: start over from empty nodes.
  stop

  local -a addrs=()
  for port in $(ports); do
    mkdir -p "$root/$port"
    # Small node timeout so a killed master's replica takes over in seconds;
    # validity factor 0 lets a replica fail over however long its link was idle.
    redis-server \
      --bind 127.0.0.1 --port "$port" \
      --dir "$root/$port" \
      --daemonize yes --pidfile "$root/$port/redis.pid" --logfile "$root/$port/redis.log" \
      --save "" --appendonly no \
      --cluster-enabled yes --cluster-config-file nodes.conf \
      --cluster-node-timeout 2000 --cluster-replica-validity-factor 0 \
      --enable-debug-command local \
      >/dev/null
    addrs+=("127.0.0.1:$port")
  done
  for port in $(ports); do wait_for "node $port" 50 alive "$port"; done

  redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes \
    >"$root/create.log" 2>&1 || { cat "$root/create.log" >&2; die "cluster create failed"; }

  wait_for "cluster_state:ok on every node" 150 cluster_ok
  wait_for "replica sync" 150 replicas_synced
  echo "redis cluster up on 127.0.0.1:$base-$((base + nodes - 1))"
}

case $cmd in
  start) start ;;
  stop) stop ;;
  status) cluster_ok ;;
  *) usage ;;
esac
