#!/usr/bin/env bash
# bench/run.sh NAME [extra chat-bench flags]
#
# Runs one chat-bench scenario against a fresh chatd: builds nothing; starts
# $BUILD_DIR/bin/chatd (default build/) on a free port of 127.0.0.1 with the
# flags a benchmark needs, raises the open-file limit, runs chat-bench with
# --server-pid (so the server's RSS and CPU are sampled), stops the server
# with SIGTERM and prints the figures. Everything is bounded in time.
#
#   NAME: smoke idle fanout fanout-max bigroom manyrooms storm durable cluster failover
#   cluster: starts a 3-node local cluster (deploy/local-cluster.sh) instead and
#         runs the same load twice: every connection on the room's home node,
#         then senders and receivers on the two other nodes; prints the extra
#         delivery latency of the cross-node path (see bench/README.md).
#   failover: 3 nodes on one PostgreSQL (a private one the test binary starts),
#         12 rooms, writers and readers on two nodes; the third is killed with
#         SIGKILL (then restarted), then, in a second run, paused for 5 s with
#         SIGSTOP: prints per room the longest a send waited and the acked /
#         stored / lost / duplicate counts (tests postgres_chatd.failover_under_load_*).
#   env:  BUILD_DIR   build directory (default: <repo>/build)
#         CHATD       server binary (default: $BUILD_DIR/bin/chatd)
#         CHAT_BENCH  bench binary (default: $BUILD_DIR/bin/chat-bench)
#         CHATD_FLAGS extra server flags (e.g. "--io-threads 2")
#         JWT_SECRET  if set: the server checks HS256 tokens and the bench mints them
#         BENCH_TIMEOUT  seconds before the bench is killed (default 900; cluster: 120 a run)
#         KEEP_TMP=1  keep the temp dir (server log, sqlite db)
set -uo pipefail

usage() { echo "usage: $0 {smoke|idle|fanout|fanout-max|bigroom|manyrooms|storm|durable|cluster|failover} [chat-bench flags]" >&2; exit 2; }
[ $# -ge 1 ] || usage
name=$1; shift
case "$name" in
  smoke|idle|fanout|fanout-max|bigroom|manyrooms|storm|durable|cluster|failover) ;;
  -h|--help) usage ;;
  *) echo "unknown scenario: $name" >&2; usage ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
BUILD_DIR=${BUILD_DIR:-$root/build}
if [ "$name" = failover ]; then
  tests=$BUILD_DIR/bin/chat_integration_tests
  [ -x "$tests" ] || { echo "run.sh: $tests not found (build first)" >&2; exit 2; }
  # Real chatd processes and a real PostgreSQL; the test asserts the counts
  # (0 lost, 0 duplicates, one gapless order, every room back within 5 s).
  timeout -k 10 "${BENCH_TIMEOUT:-300}" "$tests" --gtest_filter='postgres_chatd.failover_under_load_*' \
    > "/tmp/chat-failover.$$.log" 2>&1
  rc=$?
  grep -E '^\[ measure  \]|^\[  (FAILED|PASSED) |Failure' "/tmp/chat-failover.$$.log" | sed 's/^\[ measure  \] //'
  [ $rc -eq 0 ] || echo "run.sh: failover run failed (rc=$rc); full output in /tmp/chat-failover.$$.log" >&2
  [ $rc -eq 0 ] && rm -f "/tmp/chat-failover.$$.log"
  exit $rc
fi
CHATD=${CHATD:-$BUILD_DIR/bin/chatd}
CHAT_BENCH=${CHAT_BENCH:-$BUILD_DIR/bin/chat-bench}
if [ "$name" = cluster ]; then BENCH_TIMEOUT=${BENCH_TIMEOUT:-120}; else BENCH_TIMEOUT=${BENCH_TIMEOUT:-900}; fi
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
cluster_dir='' base_port=''  # set while the cluster scenario's nodes run
cleanup() {
  stop_server
  if [ -n "$cluster_dir" ]; then
    BUILD_DIR="$BUILD_DIR" BASE_PORT="$base_port" bash "$root/deploy/local-cluster.sh" stop "$cluster_dir" >&2
    cluster_dir=
  fi
  if [ "${KEEP_TMP:-0}" = 1 ]; then echo "run.sh: kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- cluster: the extra latency of a message that crosses nodes ----------------
# Three nodes from deploy/local-cluster.sh (ports BASE_PORT+1..3, remoting
# BASE_PORT+1001..1003), the run's server flags through its CHATD_EXTRA. The
# room (bench-0) has one home node, found by asking the nodes (API key): the
# home runs the room actor, and GET /api/rooms on a node lists the rooms it is
# home to. Run (a): everyone on the home node. Run (b): senders on one other
# node, receivers on the third: send goes sender node -> home, each delivery
# home -> receiver node. Same load, same binaries, same cluster.
free_port() { ! ss -Htln "sport = :$1" 2>/dev/null | grep -q .; }
pick_base_port() {
  local b i ok
  for _ in $(seq 50); do
    # Below the ephemeral range (32768+), which the bench's connections use.
    b=$((20000 + (RANDOM % 1100) * 10))
    ok=1
    for i in 1 2 3 1001 1002 1003; do free_port $((b + i)) || { ok=0; break; }; done
    [ $ok = 1 ] && { echo "$b"; return 0; }
  done
  return 1
}
# p50, p99 and max delivery latency and the machine's load from a --json-out file.
figures() {
  awk '
    /^ *"latency_ms": \{/ { inlat = 1 }
    inlat && /"p50":/ { gsub(/[ ",]/, ""); split($0, a, ":"); p50 = a[2] }
    inlat && /"p99":/ { gsub(/[ ",]/, ""); split($0, a, ":"); p99 = a[2] }
    inlat && /"max":/ { gsub(/[ ",]/, ""); split($0, a, ":"); mx = a[2] }
    inlat && /\}/ { inlat = 0 }
    /"busy_pct_during_load":/ { gsub(/[ ",]/, ""); split($0, a, ":"); busy = a[2] }
    /"others_pct_during_load":/ { gsub(/[ ",]/, ""); split($0, a, ":"); oth = a[2] }
    END { if (p50 == "") exit 1
          printf "%.2f %.2f %.2f %.0f %.0f\n", p50, p99, mx, busy, oth }' "$1"
}
run_cluster() {
  local key=bench-$$-$RANDOM room=bench-0 i home='' n1 n2 pids rc=0 rc_a rc_b
  base_port=$(pick_base_port) || { echo "run.sh: no free BASE_PORT found" >&2; return 1; }
  local extra="--store memory --rate 1000000 --burst 1000000 --max-conns-per-user 100000"
  extra+=" --max-conns-per-address 0 --max-prehello-per-address 0 --handshake-rate 0"
  extra+=" --log-level warn --api-key $key"
  local bench_flags=()
  if [ -n "${JWT_SECRET:-}" ]; then
    extra+=" --jwt-secret $JWT_SECRET"
    bench_flags+=(--jwt-secret "$JWT_SECRET")
  fi
  extra+=" ${CHATD_FLAGS:-}"
  cluster_dir=$tmp/cluster
  echo "run.sh: deploy/local-cluster.sh start (BASE_PORT=$base_port, BUILD_DIR=$BUILD_DIR, CHATD_EXTRA=${extra/$key/<key>})" >&2
  if ! BUILD_DIR="$BUILD_DIR" BASE_PORT="$base_port" CHATD_EXTRA="$extra" \
      bash "$root/deploy/local-cluster.sh" start "$cluster_dir" >&2; then
    tail -n 20 "$cluster_dir"/n*.log >&2
    return 1
  fi
  pids=$(cat "$cluster_dir/n1.pid"),$(cat "$cluster_dir/n2.pid"),$(cat "$cluster_dir/n3.pid")

  # A presence lookup through any node starts the room's actor on its home
  # (for a new room it answers 404 not_found, and the actor lives on for
  # --room-grace seconds: long enough to be listed below).
  local code
  code=$(curl -sS -m 5 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" \
    "http://127.0.0.1:$((base_port + 1))/api/rooms/$room/presence")
  case "$code" in
    200|404) ;;
    *) echo "run.sh: presence lookup of $room failed (HTTP $code)" >&2; return 1 ;;
  esac
  for i in 1 2 3; do
    if curl -fsS -m 5 -H "Authorization: Bearer $key" "http://127.0.0.1:$((base_port + i))/api/rooms" |
        grep -q "\"$room\""; then
      home=$i
    fi
  done
  [ -n "$home" ] || { echo "run.sh: no node lists $room as its room" >&2; return 1; }
  # The two other nodes: senders on the first, receivers on the second.
  n1=$((home % 3 + 1)); n2=$(((home + 1) % 3 + 1))
  echo "run.sh: $room is homed on n$home; run (b): senders on n$n1, receivers on n$n2" >&2

  local url_home="ws://127.0.0.1:$((base_port + home))/ws"
  local url_snd="ws://127.0.0.1:$((base_port + n1))/ws" url_rcv="ws://127.0.0.1:$((base_port + n2))/ws"
  echo "run.sh: (a) same node: chat-bench --scenario cluster --url $url_home $*" >&2
  timeout -k 10 "$BENCH_TIMEOUT" "$CHAT_BENCH" --scenario cluster --url "$url_home" \
    --server-pid "$pids" --json-out "$tmp/same.json" "${bench_flags[@]}" "$@"
  rc_a=$?
  sleep 1  # let the nodes close run (a)'s connections
  echo "run.sh: (b) cross node: chat-bench --scenario cluster --url $url_rcv --sender-url $url_snd $*" >&2
  timeout -k 10 "$BENCH_TIMEOUT" "$CHAT_BENCH" --scenario cluster --url "$url_rcv" --sender-url "$url_snd" \
    --server-pid "$pids" --json-out "$tmp/cross.json" "${bench_flags[@]}" "$@"
  rc_b=$?
  for r in $rc_a $rc_b; do
    [ "$r" -eq 124 ] && echo "run.sh: chat-bench timed out after ${BENCH_TIMEOUT}s" >&2
    [ "$r" -ne 0 ] && rc=1
  done

  local a b
  if read -r -a a < <(figures "$tmp/same.json" 2>/dev/null) &&
     read -r -a b < <(figures "$tmp/cross.json" 2>/dev/null); then
    # "other processes": the machine minus all three nodes (--server-pid lists them) and the bench.
    echo "cluster: delivery latency, same node vs across nodes (ms; one room, home n$home)"
    printf '  %-34s %9s %9s %9s   %s\n' "path" "p50" "p99" "max" "machine busy / other processes (% of one core)"
    printf '  %-34s %9s %9s %9s   %s / %s\n' "(a) all on n$home (home)" "${a[@]}"
    printf '  %-34s %9s %9s %9s   %s / %s\n' "(b) send n$n1 -> home n$home -> recv n$n2" "${b[@]}"
    awk -v a50="${a[0]}" -v a99="${a[1]}" -v amx="${a[2]}" -v b50="${b[0]}" -v b99="${b[1]}" -v bmx="${b[2]}" \
      'BEGIN { printf "  %-34s %+9.2f %+9.2f %+9.2f\n", "extra for crossing nodes (b - a)", b50 - a50, b99 - a99, bmx - amx }'
  fi
  for i in 1 2 3; do
    kill -0 "$(cat "$cluster_dir/n$i.pid")" 2>/dev/null ||
      { echo "run.sh: node n$i DIED during the run; its log:" >&2; tail -n 30 "$cluster_dir/n$i.log" >&2; rc=1; }
    if grep -qiE "error|fatal|assert" "$cluster_dir/n$i.log" 2>/dev/null; then
      echo "run.sh: n$i log has errors (first 10):" >&2
      grep -iE "error|fatal|assert" "$cluster_dir/n$i.log" | head -n 10 >&2
    fi
  done
  return $rc
}
if [ "$name" = cluster ]; then
  run_cluster "$@"
  exit $?
fi

# The server flags a benchmark run needs: anonymous hello (distinct names are
# distinct users), no per-connection rate limit, no per-user cap and no
# per-address limits (every bench connection comes from 127.0.0.1) in the way
# of the load, memory store except for `durable` (SQLite in the temp dir).
server_flags=(--listen 127.0.0.1:0 --port-file "$tmp/port" --allow-anonymous
              --rate 1000000 --burst 1000000 --max-conns-per-user 100000
              --max-conns-per-address 0 --max-prehello-per-address 0 --handshake-rate 0
              --log-level warn)
if [[ "${CHATD_FLAGS:-}" == *--store* ]]; then
  :  # the caller chose (e.g. CHATD_FLAGS="--store memory" for durable's in-memory figures)
elif [ "$name" = durable ]; then
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
