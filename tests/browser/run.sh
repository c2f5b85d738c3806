#!/usr/bin/env bash
# Browser tests of the web client: Debian's chromium driven by playwright-core, against a real chatd.
#   tests/browser/run.sh                      # uses $BUILD_DIR/bin/chatd (BUILD_DIR default: build)
#   CHATD=/path/to/chatd tests/browser/run.sh # any other binary
# Artefacts (screenshots, server logs) land in tests/browser/artifacts/.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BUILD_DIR="${BUILD_DIR:-build}"
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac
CHATD="${CHATD:-$BUILD_DIR/bin/chatd}"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
ARTIFACTS_DIR="${ARTIFACTS_DIR:-$HERE/artifacts}"

if [ ! -x "$CHATD" ]; then
  echo "run.sh: no chatd at $CHATD (build it, or set CHATD=... or BUILD_DIR=...)" >&2
  exit 1
fi
CHATD="$(cd "$(dirname "$CHATD")" && pwd)/$(basename "$CHATD")"

# Debian's chromium; playwright never downloads a browser here.
if [ ! -x "$CHROMIUM" ]; then
  echo "run.sh: installing chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }
fi

# An emoji font only makes the screenshots nicer: best effort.
if ! fc-list 2>/dev/null | grep -qi emoji; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y fonts-noto-color-emoji >/dev/null 2>&1 ||
    echo "run.sh: no emoji font; screenshots will show boxes for emoji" >&2
fi

# CHAT_WEB_DIR=web: relative to where run.sh was started, else to the repository root.
if [ -n "${CHAT_WEB_DIR:-}" ]; then
  case "$CHAT_WEB_DIR" in
    /*) ;;
    *) if [ -d "$CHAT_WEB_DIR" ]; then CHAT_WEB_DIR="$(cd "$CHAT_WEB_DIR" && pwd)"; else CHAT_WEB_DIR="$ROOT/$CHAT_WEB_DIR"; fi ;;
  esac
  [ -f "$CHAT_WEB_DIR/app.js" ] || { echo "run.sh: no app.js in CHAT_WEB_DIR=$CHAT_WEB_DIR" >&2; exit 1; }
  export CHAT_WEB_DIR
fi

cd "$HERE"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error
fi

mkdir -p "$ARTIFACTS_DIR"
rm -f "$ARTIFACTS_DIR"/chatd-*.log
WORK="$(mktemp -d)"
PORT_FILE="$WORK/port"
PID_FILE="$WORK/chatd.pid"   # the restart test replaces the pid in here
JWT_SECRET="browser-test-$RANDOM$RANDOM"
CHATD_ARGS="--allow-anonymous --store memory --jwt-secret $JWT_SECRET"

stop_server() {
  [ -s "$PID_FILE" ] || return 0
  local pid
  pid="$(cat "$PID_FILE")"
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  echo "run.sh: chatd $pid ignored SIGTERM for 10 s, killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() { stop_server; rm -rf "$WORK"; }
trap cleanup EXIT

# shellcheck disable=SC2086
"$CHATD" $CHATD_ARGS --listen 127.0.0.1:0 --port-file "$PORT_FILE" >"$ARTIFACTS_DIR/chatd-0.log" 2>&1 &
echo $! >"$PID_FILE"
for _ in $(seq 200); do   # at most 20 s
  [ -s "$PORT_FILE" ] && break
  if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
    echo "run.sh: chatd exited before listening; its log:" >&2
    cat "$ARTIFACTS_DIR/chatd-0.log" >&2
    exit 1
  fi
  sleep 0.1
done
[ -s "$PORT_FILE" ] || { echo "run.sh: chatd wrote no port file within 20 s" >&2; exit 1; }
CHAT_PORT="$(tr -d '[:space:]' <"$PORT_FILE")"
echo "run.sh: chatd $(cat "$PID_FILE") listening on 127.0.0.1:$CHAT_PORT"

set +e
CHAT_PORT="$CHAT_PORT" CHATD="$CHATD" CHATD_ARGS="$CHATD_ARGS" CHATD_PIDFILE="$PID_FILE" \
  CHAT_TEST_JWT_SECRET="$JWT_SECRET" CHROMIUM="$CHROMIUM" ARTIFACTS_DIR="$ARTIFACTS_DIR" \
  node "$HERE/chat.spec.mjs"
status=$?
# TLS and Origin: starts its own servers.
CHATD="$CHATD" CHROMIUM="$CHROMIUM" ARTIFACTS_DIR="$ARTIFACTS_DIR" node "$HERE/tls.spec.mjs" || status=1
set -e
echo "run.sh: screenshots and server logs in $ARTIFACTS_DIR"
exit $status
