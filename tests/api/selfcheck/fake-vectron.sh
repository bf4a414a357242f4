#!/usr/bin/env bash
# Stand-in for the vectron binary, for checking the test suite itself:
#   tests/api/run.sh tests/api/selfcheck/fake-vectron.sh
# Accepts `serve --data-dir DIR --http-port PORT` and runs the in-memory
# reference server (reference-server.mjs).  Passing against it proves nothing
# about Vectron.
set -euo pipefail
[ "${1:-}" = serve ] || { echo "usage: $0 serve --data-dir DIR --http-port PORT" >&2; exit 2; }
shift
port=6333
while [ $# -gt 0 ]; do
  case $1 in
    --data-dir) [ -d "$2" ] || { echo "no such dir $2" >&2; exit 2; }; shift 2 ;;
    --http-port) port=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
exec node "$(dirname "$0")/reference-server.mjs" "$port"
