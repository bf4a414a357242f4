#!/usr/bin/env bash
# test_cli.sh - end-to-end test of `vectron cli` against a fresh `vectron serve`.
#
#   tests/cli/test_cli.sh PATH/TO/vectron
#
# Starts `vectron serve` in a temp dir on a free port pair (HTTP, Raft),
# waits until `vectron cli info` says it is ready, then runs the CLI's
# commands and checks their output and exit status: help texts, info,
# collections create/list/info/delete, load of a generated .fvecs file and a
# .jsonl file (a u64 id, a UUID, payloads), search by row and by vector (the
# nearest neighbour of a loaded row is that row's id), filters, and the
# error paths (existing and missing collections, wrong dimension, a bad
# jsonl line, a batch the server rejects, an unreachable server).  Exits
# non-zero at the first failure; the server is killed on exit (trap).
#
# Environment:
#   VECTRON_CLI    the command that runs the CLI (default: "PATH/TO/vectron cli")
#   VX_PORT_BASE   ports are taken from VX_PORT_BASE..+99 (default 16400)
#   VX_START_TIMEOUT  seconds to wait for the server (default 60)
#   VX_KEEP_DATA=1 keep the temp dir (data, server log) for inspection
#   CC             the C compiler for gen_fvecs.c (default cc)
# Needs bash, cc, grep, awk; not python or curl.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 PATH/TO/vectron" >&2
  exit 2
fi
BIN=$1
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac
if [ ! -x "$BIN" ]; then
  echo "test_cli.sh: $BIN is not an executable" >&2
  exit 2
fi
if [ -n "${VECTRON_CLI:-}" ]; then
  read -r -a CLI <<<"$VECTRON_CLI"
else
  CLI=("$BIN" cli)
fi
HERE=$(cd "$(dirname "$0")" && pwd)
PORT_BASE=${VX_PORT_BASE:-16400}
START_TIMEOUT=${VX_START_TIMEOUT:-60}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/vectron-cli-test.XXXXXX")
SERVER_PID=
# SIGTERM, then SIGKILL if it has not stopped within 15 s (a shutdown hang
# is reported, but it is the server's bug, not the CLI's).
stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  local deadline=$((SECONDS + 15))
  while kill -0 "$SERVER_PID" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "test_cli.sh: warning: the server did not stop within 15 s of SIGTERM; killing it" >&2
    kill -9 "$SERVER_PID" 2>/dev/null || true
  fi
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}
cleanup() {
  local rc=$?
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    stop_server
  fi
  if [ "${VX_KEEP_DATA:-0}" = 1 ]; then
    echo "test_cli.sh: kept $TMP" >&2
  else
    rm -rf "$TMP"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
  echo "FAIL: $*" >&2
  if [ -f "$TMP/server.log" ]; then
    echo "--- last lines of the server log:" >&2
    tail -n 20 "$TMP/server.log" >&2
  fi
  exit 1
}

# cli ARGS...: run the CLI against the server; stdout in $OUT, stderr in
# $ERR, exit status in $RC.
cli() {
  set +e
  OUT=$("${CLI[@]}" --url "$URL" "$@" 2>"$TMP/stderr")
  RC=$?
  set -e
  ERR=$(cat "$TMP/stderr")
}
ok() { # ok ARGS...: must exit 0
  cli "$@"
  [ "$RC" -eq 0 ] || fail "cli $* exited $RC; stderr: $ERR"
}
fails() { # fails STATUS ARGS...: must exit STATUS
  local want=$1
  shift
  cli "$@"
  [ "$RC" -eq "$want" ] || fail "cli $* exited $RC, expected $want; stdout: $OUT; stderr: $ERR"
}
has() { # has REGEX: stdout matches
  grep -qE -- "$1" <<<"$OUT" || fail "stdout lacks /$1/:"$'\n'"$OUT"
}
lacks() {
  if grep -qE -- "$1" <<<"$OUT"; then fail "stdout has /$1/:"$'\n'"$OUT"; fi
}
says() { # says REGEX: stderr matches
  grep -qE -- "$1" <<<"$ERR" || fail "stderr lacks /$1/:"$'\n'"$ERR"
}
nearest_is() { # nearest_is ID: the first line of the search output is ID with score ~0
  local first
  first=$(head -n 1 <<<"$OUT")
  awk -v want="$1" '{ if ($1 != want || ($2 + 0 > 1e-4) || ($2 + 0 < -1e-4)) exit 1 }' <<<"$first" ||
    fail "nearest neighbour is \"$first\", expected id $1 at distance 0:"$'\n'"$OUT"
}

# ---- data ------------------------------------------------------------------------------

"${CC:-cc}" -O2 -o "$TMP/gen_fvecs" "$HERE/gen_fvecs.c"
N=2000
DIM=16
"$TMP/gen_fvecs" $N $DIM 42 "$TMP/base.fvecs"
[ "$(wc -c <"$TMP/base.fvecs")" -eq $((N * (4 + 4 * DIM))) ] || fail "gen_fvecs wrote a wrong size"

BIG=18446744073709551615
UUID=5c56c793-69f3-4fbf-87e6-c4bf54c28c26
{
  printf '{"id":1,"vector":[1,0,0,0],"payload":{"color":"red","n":1}}\n'
  printf '{"id":2,"vector":[0,1,0,0],"payload":{"color":"blue","n":2}}\r\n'
  printf '\n'
  printf '{"id":"%s","vector":[0,0,1,0],"payload":{"color":"green"}}\n' $UUID
  printf '  {"id":%s,"vector":[0,0,0,1],"payload":{"color":"blue","n":3}}\n' $BIG
  printf '{"id":7,"vector":[0.5,0.5,0,0]}'
} >"$TMP/docs.jsonl"
printf '{"id":1,"vector":[1,0,0,0]}\n{"id":2,"vector":[0,1,0]}\n' >"$TMP/short.jsonl"
DEEP=$(printf '{"a":%.0s' $(seq 70))1$(printf '}%.0s' $(seq 70))
{
  printf '{"id":11,"vector":[1,0,0,0]}\n{"id":12,"vector":[0,1,0,0]}\n'
  printf '{"id":13,"vector":[0,0,1,0],"payload":%s}\n' "$DEEP"
  printf '{"id":14,"vector":[0,0,0,1]}\n'
} >"$TMP/deep.jsonl"

# ---- server ----------------------------------------------------------------------------

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_server() {
  local k http raft deadline
  for ((try = 0; try < 50; try++)); do
    k=$(((($$ + try) % 50) * 2))
    http=$((PORT_BASE + k))
    raft=$((http + 1))
    if port_busy $http || port_busy $raft; then continue; fi
    mkdir -p "$TMP/data"
    "$BIN" serve --data-dir "$TMP/data" --http-port $http --raft-port $raft \
      >"$TMP/server.log" 2>&1 &
    SERVER_PID=$!
    URL=http://127.0.0.1:$http
    deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
      if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi # lost the port race: next pair
      cli info
      if [ "$RC" -eq 0 ]; then return 0; fi
      sleep 0.2
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      fail "the server on $URL was not ready within ${START_TIMEOUT}s"
    fi
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
    rm -rf "$TMP/data"
  done
  fail "no free port pair in $PORT_BASE..$((PORT_BASE + 99))"
}

URL=http://127.0.0.1:1
start_server
echo "test_cli.sh: server at $URL, data in $TMP"

# ---- help and usage --------------------------------------------------------------------

ok help
has "collections create NAME"
has "load NAME FILE"
ok load --help
has "--batch N"
has "--concurrency N"
ok help search
has "--fvecs FILE"
ok collections --help
has "--ef-construct N"
fails 2 frobnicate
says "unknown command"
fails 2 load
fails 2 search vec --limit 0 --vector 1
says "--limit must be an integer"
fails 2 collections create x --dim 4 --distance Hamming
says "Cosine, Euclid or Dot"

# ---- info and collections --------------------------------------------------------------

ok info
has "^ready +yes"
has "^version +[0-9]+\.[0-9]+"
has "^collections +0"

ok collections create vec --dim $DIM --distance Euclid --shards 2 --m 12 --ef-construct 64
has "created collection vec"
fails 1 collections create vec --dim $DIM
says "HTTP 409: .*already exists"
ok collections create doc --dim 4 --distance Dot --int8
ok collections list
has "^vec$"
has "^doc$"
ok --url "$URL" collections --timeout 5 list # global flags anywhere
has "^vec$"
ok info
has "^collections +2: "

# ---- load and search: fvecs ------------------------------------------------------------

ok load vec "$TMP/base.fvecs" --batch 150 --start-id 1000 --concurrency 3
has "^loaded $N points into vec in [0-9.]+ s \([0-9]+ points/s\)$"
ok collections info vec
has "^points +$N\b"
has "^dimension +$DIM$"
has "^distance +Euclid$"
has "^shards +2 "
has "m=12 ef_construct=64"

for row in 0 123 1999; do
  ok search vec --fvecs "$TMP/base.fvecs" --row $row --limit 5
  nearest_is $((1000 + row))
  [ "$(wc -l <<<"$OUT")" -eq 5 ] || fail "search --limit 5 gave:"$'\n'"$OUT"
  ok search vec --fvecs "$TMP/base.fvecs" --row $row --limit 3 --exact
  nearest_is $((1000 + row))
  ok search vec --fvecs "$TMP/base.fvecs" --row $row --limit 1 --ef 128
  nearest_is $((1000 + row))
done
fails 2 search vec --fvecs "$TMP/base.fvecs" --row $N
says "has $N rows"
fails 2 search vec --row 3 --vector 1,2
fails 2 search vec

# loading again is an upsert: the count stays
ok load vec "$TMP/base.fvecs" --batch 1000 --start-id 1000 --concurrency 1
ok collections info vec
has "^points +$N\b"

# ---- load and search: jsonl ------------------------------------------------------------

ok load doc "$TMP/docs.jsonl" --batch 2
has "^loaded 5 points into doc"
ok collections info doc
has "^points +5\b"
has "^quantization +scalar int8"
ok search doc --vector "1,0,0,0" --limit 1
has "^1 "
ok search doc --vector "[0, 0, 1, 0]" --limit 1
has "^$UUID "
ok search doc --vector "0 0 0 1" --limit 1 --with-payload
has "^$BIG [0-9.]+ \{\"color\":\"blue\",\"n\":3\}$"
ok search doc --vector 1,1,1,1 --limit 10 --with-payload \
  --filter '{"must":[{"key":"color","match":{"value":"blue"}}]}'
has "^2 "
has "^$BIG "
lacks "^1 "
lacks "^$UUID "
[ "$(wc -l <<<"$OUT")" -eq 2 ] || fail "the blue filter gave:"$'\n'"$OUT"
ok search doc --vector 1,1,1,1 --limit 10 --exact \
  --filter '{"must":[{"has_id":[2, 7]}]}'
has "^2 "
has "^7 "
[ "$(wc -l <<<"$OUT")" -eq 2 ] || fail "the has_id filter gave:"$'\n'"$OUT"

# ---- errors ------------------------------------------------------------------------------

fails 2 load vec "$TMP/docs.jsonl"
says "line 1: \"vector\" has 4 values; the collection's dimension is $DIM"
fails 2 load doc "$TMP/short.jsonl"
says "line 2: .*nothing was loaded"
fails 2 load doc "$TMP/base.fvecs"
says "dimension $DIM; the collection's dimension is 4"
fails 1 load nosuch "$TMP/base.fvecs"
says "collection \`nosuch\` does not exist"
fails 2 load doc "$TMP/docs.jsonl" --start-id 5
fails 2 load doc "$TMP/docs.txt"
says "--format"
fails 1 load doc "$TMP/missing.jsonl"
says "missing.jsonl"
# the server rejects line 3 (payload deeper than its JSON depth limit): batch 2
fails 1 load doc "$TMP/deep.jsonl" --batch 2 --concurrency 1
says "batch 2 of 2 \(lines 3\.\.4 of .*deep.jsonl\) failed: HTTP 400: .*deeper"
says "2 of 4 points were loaded before the failure"
fails 1 search vec --vector 1,2,3 --limit 1
says "HTTP 400: .*[Dd]im"
fails 1 search vec --fvecs "$TMP/base.fvecs" --filter '{"must":[{"key":"a","bogus":1}]}'
says "HTTP 400: .*filter"
fails 2 search vec --fvecs "$TMP/base.fvecs" --filter '{not json'
fails 1 collections info nosuch
says "HTTP 404: .*nosuch"

URL_SAVE=$URL
URL=http://127.0.0.1:1
fails 1 info
says "cannot connect to 127\.0\.0\.1:1: Connection refused"
URL=https://127.0.0.1:1
fails 2 info
says "https is not supported"
URL=$URL_SAVE

# ---- delete ------------------------------------------------------------------------------

ok collections delete vec
has "deleted collection vec"
fails 1 collections delete vec
says "does not exist"
ok collections delete doc
ok collections list
lacks "^vec$"
lacks "^doc$"
ok info
has "^collections +0$"

echo "test_cli.sh: all passed"
