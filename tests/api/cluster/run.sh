#!/usr/bin/env bash
# run.sh - the gateway with real processes: a local cluster (scripts/cluster.sh)
#
#   tests/api/cluster/run.sh PATH/TO/vectron
#
# and `vectron serve`, driven by the Qdrant JS client: exact results equal to
# serve's, per-shard deadlines and partial answers, kill -9 of a shard
# leader's worker under a 4-writer ingest.  The tests start their own
# processes (data under $TMPDIR, ports below the ephemeral range).  Installs the pinned npm packages with
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

if [ $# -ne 1 ]; then
  echo "usage: $0 PATH/TO/vectron" >&2
  exit 2
fi
BIN=$1
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
exec node --test cluster/*.test.mjs
