#!/usr/bin/env bash
# Fuzzes the client frame decoder (tests/messages/fuzz_decode.cpp) with libFuzzer
# for a bounded time. Configures a clang build in build-fuzz/ (coverage, ASan,
# UBSan), builds only chat_fuzz_decode and runs it on the seed corpus.
#   deploy/fuzz.sh [SECONDS] [extra libFuzzer flags]    (default 60 s)
# New inputs go to build-fuzz/corpus/decode (the seeds in tests/fuzz/decode stay
# as they are); a crash is written to build-fuzz/artifacts/ and the exit code is
# non-zero. Add a crashing input to tests/fuzz/decode/ once fixed: every build
# replays that folder (ctest fuzz_decode_replay).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "usage: $0 [SECONDS] [libFuzzer flags]" >&2; exit 2; }
command -v clang++ >/dev/null || bash deploy/install-deps.sh --fuzz
build_dir=${BUILD_DIR:-build-fuzz}
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.ccache}" CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCHAT_FUZZ=ON \
  -DCMAKE_CXX_COMPILER=clang++ >/dev/null
cmake --build "$build_dir" -j "$(nproc)" --target chat_fuzz_decode
corpus=$build_dir/corpus/decode
mkdir -p "$corpus" "$build_dir/artifacts"
# One worker: the machine is shared. -max_len leaves room for deep nesting and
# long texts; the dictionary holds the protocol's keys and values.
exec "$build_dir/bin/chat_fuzz_decode" "$corpus" tests/fuzz/decode \
  -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
  -dict=tests/fuzz/decode.dict -artifact_prefix="$build_dir/artifacts/" -print_final_stats=1 "$@"
