#!/usr/bin/env bash
# deploy/local-cluster.sh start|stop|status DIR
# Three chatd nodes (n1, n2, n3) on 127.0.0.1 from one generated cluster file:
# WebSocket/HTTP on BASE_PORT+1..+3 (default BASE_PORT=8080), CAF remoting on
# REMOTING_BASE+1..+3 (default 9080+), anonymous access on. Data, logs, pid files
# and the cluster file live under DIR; binaries come from BUILD_DIR (default build).
# `start` returns once all three nodes answer /readyz?full (the whole cluster is up; bounded: 30 s).
# STORE=postgres: the three nodes share one PostgreSQL database instead of a
# SQLite file each, so a room fails over to another node when its home dies
# (placement live). PG_URL names the database; without it a private
# PostgreSQL is started under DIR/pg (initdb + pg_ctl, run as the postgres
# user when started as root; unix socket only) and stopped by `stop`.
set -euo pipefail
cmd=${1:-}; dir=${2:-}
[[ -n "$cmd" && -n "$dir" ]] || { echo "usage: $0 start|stop|status DIR" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-build}
[[ "$BUILD_DIR" = /* ]] || BUILD_DIR="$root/$BUILD_DIR"
BASE_PORT=${BASE_PORT:-8080}
REMOTING_BASE=${REMOTING_BASE:-$((BASE_PORT + 1000))}
nodes=(n1 n2 n3)
STORE=${STORE:-sqlite}
PG_URL=${PG_URL:-${CHAT_PG_URL:-}}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# A private PostgreSQL under $dir/pg; prints nothing, sets PG_URL.
private_pg() {
  local bin; bin=$(pg_bin)
  [[ -n "$bin" ]] || { echo "STORE=postgres needs PostgreSQL (bash deploy/install-deps.sh)" >&2; exit 1; }
  local data="$dir/pg/data" sock="$dir/pg"
  mkdir -p "$sock"
  [[ $(id -u) == 0 ]] && chown postgres "$sock"
  if [[ ! -f "$data/PG_VERSION" ]]; then
    as_pg "$bin/initdb" -D "$data" -U chat -A trust -E UTF8 --locale=C.UTF-8 >"$dir/pg/initdb.log"
    printf "\nlisten_addresses = ''\nunix_socket_directories = '%s'\n" "$sock" >>"$data/postgresql.conf"
  fi
  if ! as_pg "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    as_pg "$bin/pg_ctl" -D "$data" -l "$dir/pg/postgres.log" -w -t 60 start >/dev/null
  fi
  PG_URL="host=$sock user=chat dbname=postgres"
}

start() {
  mkdir -p "$dir"
  if [[ "$STORE" == postgres && -z "$PG_URL" ]]; then private_pg; fi
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
    local store=(--db "$dir/$n/chat.db")
    [[ "$STORE" == postgres ]] && store=(--store postgres --pg-url "$PG_URL")
    "$BUILD_DIR/bin/chatd" --cluster "$cfg" --node "$n" --allow-anonymous \
      "${store[@]}" "${CHATD_ARGS[@]}" >"$dir/$n.out" 2>"$dir/$n.log" &
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
  if [[ -f "$dir/pg/data/PG_VERSION" ]]; then
    as_pg "$(pg_bin)/pg_ctl" -D "$dir/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
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
