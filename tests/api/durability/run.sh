#!/usr/bin/env bash
# run.sh - durability tests: restarts of `vectron serve` (kill -9, SIGTERM).
#
#   tests/api/durability/run.sh PATH/TO/vectron
#
# The tests start their own servers (fresh data dirs under $TMPDIR, free
# ports), so no server is started here.  Installs the pinned npm packages with
# `npm ci` when tests/api/node_modules is missing.  VX_SEED=<n> reruns with
# the same generated data (it is printed either way); VX_KEEP_DATA=1 keeps the
# data dirs and server logs; VX_DEADLINE_S sets the per-wait deadline (30).
set -euo pipefail
# npm and node trust the system CA store too (a registry reached through a
# TLS-inspecting proxy presents a certificate signed by a local CA that
# update-ca-certificates put there, and node's bundled list lacks it)
if [ -z "${NODE_EXTRA_CA_CERTS:-}" ] && [ -r /etc/ssl/certs/ca-certificates.crt ]; then
  export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
fi

# A second argument names another directory of process tests under
# tests/api to run the same way (tests/api/cluster/run.sh uses it).
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 PATH/TO/vectron [TEST_DIR]" >&2
  exit 2
fi
BIN=$1
DIR=${2:-durability}
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac
if [ ! -x "$BIN" ]; then
  echo "run.sh: $BIN is not an executable" >&2
  exit 2
fi

HERE=$(cd "$(dirname "$0")/.." && pwd) # tests/api
cd "$HERE"

if ! command -v node >/dev/null 2>&1; then
  echo "run.sh: node is not installed (Debian: apt-get install nodejs npm)" >&2
  exit 2
fi
if [ ! -d node_modules ]; then
  echo "run.sh: installing the pinned npm packages (npm ci)"
  npm ci --no-audit --no-fund
fi

export VECTRON_BIN=$BIN
exec node --test "$DIR"/*.test.mjs
