#!/usr/bin/env bash
# deploy/local-cluster.sh start|stop|status DIR
# Three chatd nodes (n1, n2, n3) on 127.0.0.1 from one generated cluster file:
# WebSocket/HTTP on BASE_PORT+1..+3 (default BASE_PORT=8080), CAF remoting on
# REMOTING_BASE+1..+3 (default 9080+), anonymous access on. Data, logs, pid files
# and the cluster file live under DIR; binaries come from BUILD_DIR (default build).
# `start` returns once all three nodes answer /readyz?full (the whole cluster is up; bounded: 30 s).
set -euo pipefail
cmd=${1:-}; dir=${2:-}
[[ -n "$cmd" && -n "$dir" ]] || { echo "usage: $0 start|stop|status DIR" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-build}
[[ "$BUILD_DIR" = /* ]] || BUILD_DIR="$root/$BUILD_DIR"
BASE_PORT=${BASE_PORT:-8080}
REMOTING_BASE=${REMOTING_BASE:-$((BASE_PORT + 1000))}
nodes=(n1 n2 n3)

start() {
  mkdir -p "$dir"
  local cfg="$dir/cluster.json"
  {
    echo '{"nodes":['
    for i in 1 2 3; do
      sep=","; [[ $i == 3 ]] && sep=""
      echo "  {\"name\":\"n$i\",\"listen\":\"127.0.0.1:$((BASE_PORT + i))\",\"remoting\":\"127.0.0.1:$((REMOTING_BASE + i))\"}$sep"
    done
    echo ']}'
  } > "$cfg"
  for i in 1 2 3; do
    local n="n$i"
    if [[ -f "$dir/$n.pid" ]] && kill -0 "$(cat "$dir/$n.pid")" 2>/dev/null; then
      echo "$n already running"; continue
    fi
    mkdir -p "$dir/$n"
    "$BUILD_DIR/bin/chatd" --cluster "$cfg" --node "$n" --allow-anonymous \
      --db "$dir/$n/chat.db" "${CHATD_ARGS[@]}" >"$dir/$n.out" 2>"$dir/$n.log" &
    echo $! > "$dir/$n.pid"
  done
  for _ in $(seq 300); do
    local ready=0
    for i in 1 2 3; do
      curl -sf "http://127.0.0.1:$((BASE_PORT + i))/readyz?full" >/dev/null 2>&1 && ready=$((ready + 1))
    done
    if [[ $ready == 3 ]]; then
      echo "cluster ready: http://127.0.0.1:$((BASE_PORT + 1))/ http://127.0.0.1:$((BASE_PORT + 2))/ http://127.0.0.1:$((BASE_PORT + 3))/"
      return 0
    fi
    sleep 0.1
  done
  echo "cluster not ready after 30 s; logs in $dir/n*.log" >&2
  return 1
}

stop() {
  for n in "${nodes[@]}"; do
    [[ -f "$dir/$n.pid" ]] || continue
    local pid; pid=$(cat "$dir/$n.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$dir/$n.pid"
  done
  echo "cluster stopped"
}

status() {
  for i in 1 2 3; do
    printf 'n%s: ' "$i"; curl -s "http://127.0.0.1:$((BASE_PORT + i))/readyz" || echo "down"; echo
  done
}

CHATD_ARGS=()
if [[ -n "${CHATD_EXTRA:-}" ]]; then read -r -a CHATD_ARGS <<<"$CHATD_EXTRA"; fi
case "$cmd" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status DIR" >&2; exit 2 ;;
esac
