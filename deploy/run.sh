#!/usr/bin/env bash
# One command: install what is missing, build, and start chatd on the embedded
# default (SQLite file ./data/chat.db, one node, anonymous demo access) with
# the web client at http://127.0.0.1:8080/. Extra arguments go to chatd.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/build.sh
exec "${BUILD_DIR:-build}/bin/chatd" --allow-anonymous --listen 127.0.0.1:8080 --db ./data/chat.db "$@"
