#!/usr/bin/env bash
# One command: install what is missing, build, and run every test:
# unit + integration tests (with the ThreadSanitizer binary for shared state),
# again under AddressSanitizer + UBSan, the browser
# tests of the web client, and a smoke run of the load generator.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh --browser
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.ccache}"
# Cache hits across checkouts in different directories.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1

echo "== build"
BUILD_DIR=build bash deploy/build.sh
echo "== unit and integration tests"
ctest --test-dir build --output-on-failure -j 2 --timeout 300

echo "== AddressSanitizer + UBSan"
BUILD_DIR=build-asan BUILD_TYPE=Debug bash deploy/build.sh -DCHAT_SANITIZE=address,undefined
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j 2 --timeout 600

if [[ -x build/bin/chat-bench && -f bench/run.sh ]]; then
  echo "== chat-bench smoke"
  BUILD_DIR=build bash bench/run.sh smoke
fi

if [[ -f tests/browser/run.sh ]]; then
  echo "== browser tests"
  BUILD_DIR=build bash tests/browser/run.sh
fi
echo "== all tests passed"
