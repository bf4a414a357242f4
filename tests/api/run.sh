#!/usr/bin/env bash
# run.sh - run the API tests against a fresh `vectron serve`.
#
#   tests/api/run.sh PATH/TO/vectron [test files...]
#
# Starts `vectron serve --data-dir <temp dir> --http-port <free port>`, waits
# for /readyz (deadline VX_START_TIMEOUT seconds, default 60), runs
# `node --test` on the test files (default: all of test/*.test.mjs) with
# VECTRON_URL pointing at it, stops the server and exits with the tests'
# status.  Installs the pinned npm packages with `npm ci` when node_modules
# is missing.  VX_SEED=<n> reruns with the same generated data (it is printed
# either way).  VX_KEEP_DATA=1 keeps the data dir and log for inspection.
# VX_API_TARGET=cluster runs the same tests against `vectron gateway` in front
# of a local 3-PD, 3-worker cluster (scripts/cluster.sh) instead.
set -euo pipefail
# npm and node trust the system CA store too (a registry reached through a
# TLS-inspecting proxy presents a certificate signed by a local CA that
# update-ca-certificates put there, and node's bundled list lacks it)
if [ -z "${NODE_EXTRA_CA_CERTS:-}" ] && [ -r /etc/ssl/certs/ca-certificates.crt ]; then
  export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
fi

if [ $# -lt 1 ]; then
  echo "usage: $0 PATH/TO/vectron [test files...]" >&2
  exit 2
fi
BIN=$1
shift
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac
if [ ! -x "$BIN" ]; then
  echo "run.sh: $BIN is not an executable" >&2
  exit 2
fi

HERE=$(cd "$(dirname "$0")" && pwd)
# Test files given on the command line: relative to the caller's directory if
# they exist there, else relative to tests/api.
FILES=()
for f in "$@"; do
  case $f in /*) FILES+=("$f") ;; *) if [ -e "$f" ]; then FILES+=("$PWD/$f"); else FILES+=("$HERE/$f"); fi ;; esac
done
cd "$HERE"

if ! command -v node >/dev/null 2>&1; then
  echo "run.sh: node is not installed (Debian: apt-get install nodejs npm)" >&2
  exit 2
fi
node -e '
const [maj, min] = process.versions.node.split(".").map(Number);
if (maj < 18 || (maj === 18 && min < 17)) {
  console.error(`run.sh: node ${process.versions.node} is too old; 18.17 or later is needed`);
  process.exit(2);
}'

if [ ! -d node_modules ]; then
  echo "run.sh: installing the pinned npm packages (npm ci)"
  npm ci --no-audit --no-fund
fi

if [ -z "${VX_SEED:-}" ]; then
  VX_SEED=$(node -e 'console.log(require("crypto").randomBytes(4).readUInt32LE(0))')
fi
export VX_SEED
echo "run.sh: VX_SEED=$VX_SEED"

DATA=$(mktemp -d "${TMPDIR:-/tmp}/vectron-api.XXXXXX")
LOG="$DATA.log"
SERVER_PID=

stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    # Graceful stop with a deadline, then SIGKILL.
    for _ in $(seq 1 100); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "run.sh: server did not stop on SIGTERM within 10 s; killing it" >&2
      kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=
}

cleanup() {
  stop_server
  if [ "${VX_KEEP_DATA:-0}" = 1 ]; then
    echo "run.sh: kept data dir $DATA and log $LOG"
  else
    rm -rf "$DATA" "$LOG"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

show_log() {
  echo "----- server log (last 80 lines of $LOG) -----" >&2
  tail -n 80 "$LOG" >&2 || true
  echo "-----" >&2
}

# A free port: bind port 0, read the port, release it.  A tiny race remains
# until the server binds it; a failed start is reported with the log.
PORT=$(node -e '
const s = require("net").createServer();
s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });')

if [ "${VX_API_TARGET:-serve}" = cluster ]; then
  # The same tests through `vectron gateway` in front of a local cluster of
  # 3 placement drivers and 3 workers (scripts/cluster.sh), ports from a base
  # below Linux's ephemeral range picked from the seed.
  BASE=$((20000 + (VX_SEED % 240) * 50))
  echo "run.sh: starting a local cluster in $DATA (ports $BASE..$((BASE + 40)))"
  # a generous per-shard search deadline: this machine runs 7 processes and node
  if ! URL=$(GW_FLAGS="--max-body-bytes 8388608 --conn-timeout-s 4 --shard-timeout-ms 5000" \
      "$HERE/../../scripts/cluster.sh" up --dir "$DATA" --base-port "$BASE" --bin "$BIN" | tail -n 1); then
    for f in "$DATA"/*.log; do echo "----- $f" >&2; tail -n 20 "$f" >&2; done
    "$HERE/../../scripts/cluster.sh" down --dir "$DATA" || true
    exit 1
  fi
  export VECTRON_URL="$URL"
  SERVER_PID=$(cat "$DATA/gw.pid")
  LOG="$DATA/gw.log"
  stop_server() {
    [ -f "$DATA/cluster.env" ] && "$HERE/../../scripts/cluster.sh" down --dir "$DATA" || true
    SERVER_PID=
  }
  show_log() {
    for f in "$DATA"/*.log; do echo "----- $f (last 30 lines)" >&2; tail -n 30 "$f" >&2; done
  }
  echo "run.sh: cluster ready, gateway on $VECTRON_URL"
else
"$BIN" serve --data-dir "$DATA" --http-port "$PORT" --max-body-bytes 8388608 --conn-timeout-s 4 \
  >"$LOG" 2>&1 &
SERVER_PID=$!
export VECTRON_URL="http://127.0.0.1:$PORT"
echo "run.sh: started $BIN serve (pid $SERVER_PID) on $VECTRON_URL, data in $DATA"

# Poll /readyz until 200, the server exits, or the deadline passes.
if ! node - "$VECTRON_URL" "$SERVER_PID" "${VX_START_TIMEOUT:-60}" <<'JS'
const [url, pid, secs] = process.argv.slice(2);
const deadline = Date.now() + Number(secs) * 1000;
const alive = () => { try { process.kill(Number(pid), 0); return true; } catch { return false; } };
(async () => {
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (!alive()) { console.error(`run.sh: the server exited before it was ready (${last})`); process.exit(1); }
    try {
      const r = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2000) });
      if (r.status === 200) { console.log(`run.sh: ready after ${((Date.now() - deadline) / 1000 + Number(secs)).toFixed(2)} s`); process.exit(0); }
      last = `readyz answered ${r.status}`;
    } catch (e) { last = e.cause?.code || e.message; }
    await new Promise((r) => setTimeout(r, 50));
  }
  console.error(`run.sh: not ready within ${secs} s (${last})`);
  process.exit(1);
})();
JS
then
  show_log
  exit 1
fi
fi

if [ ${#FILES[@]} -eq 0 ]; then
  FILES=(test/*.test.mjs)
fi

status=0
node --test "${FILES[@]}" || status=$?

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "run.sh: the server died during the tests" >&2
  [ "$status" = 0 ] && status=1
fi
if [ "$status" != 0 ]; then
  show_log
fi
stop_server
exit "$status"
