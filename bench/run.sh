#!/usr/bin/env bash
# bench/run.sh NAME [extra chat-bench flags]
#
# Runs one chat-bench scenario against a fresh chatd: builds nothing; starts
# $BUILD_DIR/bin/chatd (default build/) on a free port of 127.0.0.1 with the
# flags a benchmark needs, raises the open-file limit, runs chat-bench with
# --server-pid (so the server's RSS and CPU are sampled), stops the server
# with SIGTERM and prints the figures. Everything is bounded in time.
#
#   NAME: smoke idle fanout fanout-max bigroom manyrooms storm durable
#   env:  BUILD_DIR   build directory (default: <repo>/build)
#         CHATD       server binary (default: $BUILD_DIR/bin/chatd)
#         CHAT_BENCH  bench binary (default: $BUILD_DIR/bin/chat-bench)
#         CHATD_FLAGS extra server flags (e.g. "--io-threads 2")
#         JWT_SECRET  if set: the server checks HS256 tokens and the bench mints them
#         BENCH_TIMEOUT  seconds before the bench is killed (default 900)
#         KEEP_TMP=1  keep the temp dir (server log, sqlite db)
set -uo pipefail

usage() { echo "usage: $0 {smoke|idle|fanout|fanout-max|bigroom|manyrooms|storm|durable} [chat-bench flags]" >&2; exit 2; }
[ $# -ge 1 ] || usage
name=$1; shift
case "$name" in
  smoke|idle|fanout|fanout-max|bigroom|manyrooms|storm|durable) ;;
  -h|--help) usage ;;
  *) echo "unknown scenario: $name" >&2; usage ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
BUILD_DIR=${BUILD_DIR:-$root/build}
CHATD=${CHATD:-$BUILD_DIR/bin/chatd}
CHAT_BENCH=${CHAT_BENCH:-$BUILD_DIR/bin/chat-bench}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-900}
for b in "$CHATD" "$CHAT_BENCH"; do
  [ -x "$b" ] || { echo "run.sh: $b not found (build first, or set BUILD_DIR/CHATD/CHAT_BENCH)" >&2; exit 2; }
done

# One process may hold at most `ulimit -Hn` files: raise the soft limit for
# both the server and the bench (chat-bench splits itself into processes).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

tmp=$(mktemp -d /tmp/chat-bench-run.XXXXXX)
server_pid=

stop_server() {
  [ -n "$server_pid" ] || return 0
  if kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$server_pid" 2>/dev/null; then
      echo "run.sh: chatd did not stop within 10 s of SIGTERM; killing it" >&2
      kill -KILL "$server_pid" 2>/dev/null
    fi
  fi
  wait "$server_pid" 2>/dev/null
  server_rc=$?
  server_pid=
}
cleanup() {
  stop_server
  if [ "${KEEP_TMP:-0}" = 1 ]; then echo "run.sh: kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The server flags a benchmark run needs: anonymous hello (distinct names are
# distinct users), no per-connection rate limit and no per-user cap in the way
# of the load, memory store except for `durable` (SQLite in the temp dir).
server_flags=(--listen 127.0.0.1:0 --port-file "$tmp/port" --allow-anonymous
              --rate 1000000 --burst 1000000 --max-conns-per-user 100000
              --log-level warn)
if [ "$name" = durable ]; then
  server_flags+=(--store sqlite --db "$tmp/chat.db")
else
  server_flags+=(--store memory)
fi
bench_flags=()
if [ -n "${JWT_SECRET:-}" ]; then
  server_flags+=(--jwt-secret "$JWT_SECRET")
  bench_flags+=(--jwt-secret "$JWT_SECRET")
fi
# shellcheck disable=SC2206
[ -n "${CHATD_FLAGS:-}" ] && server_flags+=($CHATD_FLAGS)

echo "run.sh: $CHATD ${server_flags[*]}" >&2
"$CHATD" "${server_flags[@]}" >"$tmp/chatd.log" 2>&1 &
server_pid=$!

port=
for _ in $(seq 100); do
  if [ -s "$tmp/port" ]; then port=$(cat "$tmp/port"); break; fi
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$port" ]; then
  echo "run.sh: chatd did not start (no port within 10 s); its log:" >&2
  tail -n 30 "$tmp/chatd.log" >&2
  exit 1
fi
# Ready: /healthz answers.
for _ in $(seq 50); do
  curl -fsS -m 1 "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

echo "run.sh: chatd pid $server_pid on 127.0.0.1:$port; chat-bench --scenario $name $*" >&2
timeout -k 10 "$BENCH_TIMEOUT" "$CHAT_BENCH" --scenario "$name" --host 127.0.0.1 --port "$port" \
  --server-pid "$server_pid" "${bench_flags[@]}" "$@"
rc=$?
[ $rc -eq 124 ] && echo "run.sh: chat-bench timed out after ${BENCH_TIMEOUT}s" >&2

if ! kill -0 "$server_pid" 2>/dev/null; then
  wait "$server_pid" 2>/dev/null
  echo "run.sh: chatd DIED during the run (exit status $?); last lines of its log:" >&2
  tail -n 30 "$tmp/chatd.log" >&2
  server_pid=
  [ $rc -eq 0 ] && rc=1
else
  stop_server
  if [ "${server_rc:-0}" -ne 0 ] && [ "${server_rc:-0}" -ne 143 ]; then
    echo "run.sh: chatd exited with status $server_rc after SIGTERM; last lines of its log:" >&2
    tail -n 30 "$tmp/chatd.log" >&2
  fi
fi
if grep -qiE "error|fatal|assert" "$tmp/chatd.log" 2>/dev/null; then
  echo "run.sh: chatd log has errors (first 10):" >&2
  grep -iE "error|fatal|assert" "$tmp/chatd.log" | head -n 10 >&2
fi
exit $rc
