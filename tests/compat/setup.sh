#!/usr/bin/env bash
# Installs the rqlite JavaScript client (rqlite-js, pinned by package.json) into
# tests/compat/node_modules for the compatibility test (tests/system/test_compat.py).
#
# Idempotent: when the pinned versions are already installed and load, it does
# nothing and needs no network. Otherwise it runs `npm install` against the npm
# registry, and fails loudly if it cannot.
#
# rqlite-js 2.5.7 requires @babel/runtime at run time but declares it only as a
# devDependency, so package.json names it explicitly.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

die() {
  echo "tests/compat/setup.sh: $*" >&2
  exit 1
}

command -v node >/dev/null 2>&1 || die "node not found: install Node.js (scripts/deps.sh installs Debian's nodejs and npm)"

# Already installed? rqlite-js at the version package.json pins, and it loads with all
# of its own dependencies (no network needed then).
if [ -d node_modules ] && node -e '
  const want = require("./package.json").dependencies["rqlite-js"];
  const have = require("./node_modules/rqlite-js/package.json").version;
  if (want !== have) process.exit(1);
  require("rqlite-js");
' >/dev/null 2>&1; then
  exit 0
fi

command -v npm >/dev/null 2>&1 || die "npm not found: install npm (scripts/deps.sh installs it)"

echo "tests/compat/setup.sh: installing rqlite-js into $here/node_modules"
cmd=(npm install --no-audit --no-fund --no-save --loglevel=error)
if ! "${cmd[@]}"; then
  die "'${cmd[*]}' failed: the npm registry must be reachable once to install rqlite-js; the compatibility test cannot run without it"
fi
node -e 'require("rqlite-js")' || die "rqlite-js was installed but does not load"
echo "tests/compat/setup.sh: rqlite-js $(node -p 'require("./node_modules/rqlite-js/package.json").version') installed"
