#!/usr/bin/env bash
# Installs s3rver (a local S3 API from the npm registry, pinned by package.json and
# package-lock.json) into tests/s3/node_modules for the S3 client's system tests
# (tests/system/test_s3_client.py, which also needs Debian's python3-botocore and
# python3-boto3: scripts/deps.sh installs them).
#
# Idempotent: when the pinned version is already installed and loads, it does nothing
# and needs no network. Otherwise it runs `npm ci` against the npm registry, and fails
# loudly if it cannot.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

die() {
  echo "tests/s3/setup.sh: $*" >&2
  exit 1
}

command -v node >/dev/null 2>&1 || die "node not found: install Node.js (scripts/deps.sh installs Debian's nodejs and npm)"

# Already installed? s3rver at the version package.json pins, and it loads with all of
# its own dependencies (no network needed then).
if [ -d node_modules ] && node -e '
  const want = require("./package.json").dependencies["s3rver"];
  const have = require("./node_modules/s3rver/package.json").version;
  if (want !== have) process.exit(1);
  require("s3rver");
' >/dev/null 2>&1; then
  exit 0
fi

command -v npm >/dev/null 2>&1 || die "npm not found: install npm (scripts/deps.sh installs it)"

echo "tests/s3/setup.sh: installing s3rver into $here/node_modules"
cmd=(npm ci --no-audit --no-fund --loglevel=error)
if ! "${cmd[@]}"; then
  die "'${cmd[*]}' failed: the npm registry must be reachable once to install s3rver; the S3 tests cannot run without it"
fi
node -e 'require("s3rver")' || die "s3rver was installed but does not load"
echo "tests/s3/setup.sh: s3rver $(node -p 'require("./node_modules/s3rver/package.json").version') installed"
