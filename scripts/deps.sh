#!/usr/bin/env bash
# Installs the Debian packages cairn needs to build, run and test, only those missing
# (tzdata: the zone files of /usr/share/zoneinfo that cron schedules in a zone read).
# Runs `apt-get update` at most once, and only when something must be installed.
set -euo pipefail

pkgs=(
  build-essential cmake pkg-config
  libsqlite3-dev sqlite3 libraft-dev libuv1-dev libmicrohttpd-dev libjansson-dev
  libzstd-dev liblz4-dev libxxhash-dev zlib1g-dev libsodium-dev libcurl4-openssl-dev libedit-dev
  libcmocka-dev python3-pytest python3-pytest-xdist python3-prometheus-client python3-botocore python3-boto3 clang libclang-rt-14-dev nodejs
  npm tmux restic time tzdata
)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    # nodejs/npm may come from elsewhere on a developer machine: a working binary is enough.
    case "$p" in
      nodejs) command -v node >/dev/null 2>&1 && continue ;;
      npm) command -v npm >/dev/null 2>&1 && continue ;;
    esac
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
