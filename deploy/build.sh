#!/usr/bin/env bash
# Configures and builds into BUILD_DIR (default build/); binaries in BUILD_DIR/bin.
# Extra arguments go to cmake, e.g. -DCHAT_SANITIZE=address,undefined
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${BUILD_DIR:-build}"
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" "$@" >/dev/null
cmake --build "$build_dir" -j "$(nproc)"
