#!/usr/bin/env bash
# run.sh - the gateway with real processes: a local cluster (scripts/cluster.sh)
# and `vectron serve`, driven by the Qdrant JS client: exact results equal to
# serve's, per-shard deadlines and partial answers, the result cache's
# freshness, kill -9 of a shard leader's worker under a 4-writer ingest.  The
# tests start their own processes (data under $TMPDIR, ports below the
# ephemeral range); VX_SEED=<n> reproduces the data, VX_KEEP_DATA=1 keeps it.
#
#   tests/api/cluster/run.sh PATH/TO/vectron
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 PATH/TO/vectron" >&2
  exit 2
fi
exec bash "$(dirname "$0")/../durability/run.sh" "$1" cluster
