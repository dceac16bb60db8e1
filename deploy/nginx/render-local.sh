#!/usr/bin/env bash
# Prepare a directory that runs deploy/nginx.conf unchanged outside Docker, on
# loopback: DIR/nginx.conf is a symlink to the repo file (so a test exercises the
# exact proxy settings compose ships) and DIR/sse-site/ holds the two
# deployment-specific includes: a loopback listen, and one loopback server per
# gateway with the same per-server parameters as nginx/docker/upstream-servers.conf.
#
#   deploy/nginx/render-local.sh DIR LB_PORT UPSTREAM_PORT [UPSTREAM_PORT...]
#   nginx -p DIR/ -c DIR/nginx.conf -e stderr -g "pid DIR/nginx.pid; daemon off;"
#
# -e stderr keeps nginx off the system log path before the config is read; the
# pid file and `daemon off` come from -g because nginx.conf must not set them.
set -euo pipefail

if [ "$#" -lt 3 ]; then
  echo "usage: $0 DIR LB_PORT UPSTREAM_PORT [UPSTREAM_PORT...]" >&2
  exit 2
fi

dir=$1 lb_port=$2
shift 2
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
conf="$(cd "$here/.." && pwd)/nginx.conf"
# Per-server parameters (max_fails, fail_timeout ...) are proxy behaviour, not
# addresses: take them from the compose include so both runs balance alike.
params=$(awk '$1 == "server" { $1 = ""; $2 = ""; sub(/^ +/, ""); sub(/;$/, ""); print; exit }' \
  "$here/docker/upstream-servers.conf")

mkdir -p "$dir/sse-site"
ln -sfn "$conf" "$dir/nginx.conf"
printf 'listen 127.0.0.1:%s;\n' "$lb_port" > "$dir/sse-site/listen.conf"
: > "$dir/sse-site/upstream-servers.conf"
for port in "$@"; do
  printf 'server 127.0.0.1:%s%s;\n' "$port" "${params:+ $params}" >> "$dir/sse-site/upstream-servers.conf"
done
