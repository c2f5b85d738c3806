#!/usr/bin/env bash
# Installs what the build and the tests need from Debian 12 packages, only
# what is missing. Usage: deploy/install-deps.sh [--browser] [--fuzz]
set -euo pipefail
pkgs=(build-essential cmake g++ ccache pkg-config libcaf-dev libboost-dev libboost-system-dev
      nlohmann-json3-dev libgtest-dev libsqlite3-dev sqlite3 libjwt-dev libssl-dev libcli11-dev
      libspdlog-dev curl openssl libpq-dev postgresql)
for arg in "$@"; do
  case "$arg" in
    --browser)
      pkgs+=(chromium)
      command -v node >/dev/null || pkgs+=(nodejs npm)
      ;;
    --fuzz) pkgs+=(clang libclang-rt-14-dev) ;;  # libFuzzer and the sanitizer runtimes (deploy/fuzz.sh)
    *) echo "install-deps.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  sudo_cmd=""
  [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
