#!/usr/bin/env bash
# The Docker Compose stacks, for real: builds the image, brings up docker-compose.yml and then
# docker-compose.cluster.yml, and checks each through the load balancer (test/compose.e2e.ts:
# every service healthy, stream + publish, `docker stop` of the replica serving an open stream
# with nothing lost or repeated, /readyz of the stopping one false while it drains, Prometheus
# scraping both replicas; on the cluster file three masters and a stream delivered across
# replicas; the image: non-root, HEALTHCHECK, no dev tooling, tests or fake servers).
#
#   sudo bash .ci/compose-e2e.sh            (CI: .ci/run; needs root for dockerd and apt)
#
# When no Docker engine answers it starts one with its own data root, exec root, pidfile and
# socket, and stops it at the end. The data root persists (SSE_CI_STATE, default
# /var/lib/sse-gateway-ci) so later runs reuse the stand-in images and build layers; from
# empty it builds them. Everything it started is torn down however the run ends; nothing else
# is touched. Host ports are picked free (LB_PORT, PROMETHEUS_PORT) so a stack already on
# :8080/:9090 does not clash.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=${SSE_CI_STATE:-/var/lib/sse-gateway-ci}
RUNDIR=${SSE_CI_RUN:-/run/sse-gateway-ci}
t0=$SECONDS
say() { printf 'compose-e2e [%3ss]: %s\n' "$((SECONDS - t0))" "$*"; }

# --- tools ------------------------------------------------------------------------------------
bash .ci/install-system.sh docker.io
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  bash .ci/install-system.sh docker-compose
  compose=(docker-compose)
fi
[ -d node_modules/eventsource ] || { say "node_modules missing: run npm ci first" >&2; exit 1; }

# --- teardown: only what this run started ------------------------------------------------------
started_engine=0
projects=()   # "project file" pairs brought up
current=''
dockerd_pid=''

dump_logs() { # project file
  say "--- state of $1 (failed run) ---"
  "${compose[@]}" -p "$1" -f "$2" ps || true
  "${compose[@]}" -p "$1" -f "$2" logs --no-color --tail 40 || true
}

down() { # project file
  "${compose[@]}" -p "$1" -f "$2" down -v --remove-orphans --timeout 5 >/dev/null 2>&1 ||
    say "warning: compose down of $1 failed"
}

stop_engine() {
  [ "$started_engine" = 1 ] || return 0
  # Our own data root only: superseded builds go after three days; younger untagged images
  # stay, since the classic builder's stage cache (the npm install) is made of them.
  docker image prune -f --filter until=72h >/dev/null 2>&1 || true
  kill -TERM "$dockerd_pid" 2>/dev/null || return 0
  for _ in $(seq 1 150); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$dockerd_pid" 2>/dev/null; then
    say "dockerd did not stop in 30 s; killing it"
    kill -KILL "$dockerd_pid" 2>/dev/null || true
  fi
  say "stopped the Docker engine it started (pid $dockerd_pid)"
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$rc" -ne 0 ] && [ -n "$current" ]; then dump_logs $current; fi
  for p in "${projects[@]}"; do down $p; done
  stop_engine
  if [ "$rc" -eq 0 ]; then say "passed in $((SECONDS - t0)) s"; else say "FAILED (exit $rc) after $((SECONDS - t0)) s"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- engine -----------------------------------------------------------------------------------
if docker info >/dev/null 2>&1; then
  say "using the Docker engine that answers ($(docker version -f '{{.Server.Version}}' 2>/dev/null))"
else
  mkdir -p "$STATE/docker" "$RUNDIR"
  sock="$RUNDIR/docker.sock"
  export DOCKER_HOST="unix://$sock"
  if docker info >/dev/null 2>&1; then
    say "using the engine on $sock"
  else
    say "no Docker engine answers: starting dockerd (data root $STATE/docker)"
    dockerd --data-root "$STATE/docker" --exec-root "$RUNDIR/exec" --pidfile "$RUNDIR/docker.pid" \
      -H "$DOCKER_HOST" >"$RUNDIR/dockerd.log" 2>&1 &
    dockerd_pid=$!
    started_engine=1
    for _ in $(seq 1 300); do
      docker info >/dev/null 2>&1 && break
      kill -0 "$dockerd_pid" 2>/dev/null || break
      sleep 0.2
    done
    if ! docker info >/dev/null 2>&1; then
      tail -30 "$RUNDIR/dockerd.log" >&2
      say "dockerd did not come up" >&2
      exit 1
    fi
    say "dockerd $(docker version -f '{{.Server.Version}}') up (pid $dockerd_pid, $sock)"
  fi
fi
say "compose: ${compose[*]} ($("${compose[@]}" version --short 2>/dev/null || true))"

# --- images -----------------------------------------------------------------------------------
bash .ci/docker-standins.sh
say "images ready"

# --- stacks -----------------------------------------------------------------------------------
free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
LB_PORT=$(free_port)
PROMETHEUS_PORT=$(free_port)
while [ "$PROMETHEUS_PORT" = "$LB_PORT" ]; do PROMETHEUS_PORT=$(free_port); done
JWT_SECRET=compose-e2e-$(node -p 'require("crypto").randomBytes(16).toString("hex")')
export LB_PORT PROMETHEUS_PORT JWT_SECRET
export COMPOSE_E2E_COMPOSE="${compose[*]}"

run_stack() { # kind project file
  local kind=$1 project=$2 file=$3 s=$SECONDS
  current="$project $file"
  projects+=("$project $file")
  # Leftovers of an earlier run that was killed before its teardown (same project name: ours).
  down "$project" "$file"
  say "$kind: ${compose[*]} -p $project -f $file build, then up -d (LB :$LB_PORT, Prometheus :$PROMETHEUS_PORT)"
  # The build's log only when it fails: the classic builder prints every step.
  local log
  log=$(mktemp)
  if ! "${compose[@]}" -p "$project" -f "$file" build >"$log" 2>&1; then
    tail -60 "$log" >&2
    rm -f "$log"
    say "$kind: image build failed" >&2
    return 1
  fi
  rm -f "$log"
  say "$kind: image built in $((SECONDS - s)) s"
  # `up` waits for every depends_on condition; a replica that never turns healthy fails it.
  if ! "${compose[@]}" -p "$project" -f "$file" up -d; then
    say "$kind: compose up failed (a service did not start or did not become healthy)" >&2
    return 1
  fi
  say "$kind: up in $((SECONDS - s)) s; checking"
  COMPOSE_E2E_STACK=$kind COMPOSE_E2E_PROJECT=$project COMPOSE_E2E_FILE=$file \
    npx tap --disable-coverage --timeout 600 --reporter tap test/compose.e2e.ts
  down $project $file
  projects=("${projects[@]:0:${#projects[@]}-1}")
  current=''
  say "$kind: passed and torn down in $((SECONDS - s)) s"
}

run_stack single sse-gateway-e2e docker-compose.yml
run_stack cluster sse-gateway-e2e-cluster docker-compose.cluster.yml
