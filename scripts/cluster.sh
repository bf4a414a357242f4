#!/usr/bin/env bash
# cluster.sh - a local Vectron cluster on 127.0.0.1: 3 placement drivers,
# 3 workers (pretend zones z1, z2, z3) and a gateway.
#
#   scripts/cluster.sh up --dir DIR --base-port P [--bin PATH]
#       start everything, wait until it is ready; the last line printed is
#       the gateway's URL
#   scripts/cluster.sh kill|stop|start|pause|resume NODE --dir DIR
#       NODE is pd1 pd2 pd3 w1 w2 w3 gw; kill = SIGKILL, stop = SIGTERM and
#       wait, start = start again with the same flags and data, pause =
#       SIGSTOP, resume = SIGCONT
#   scripts/cluster.sh status --dir DIR
#   scripts/cluster.sh down --dir DIR        stop everything (data stays)
#
# Ports from the base P: PD raft P..P+2, PD RPC P+10..P+12, worker raft
# P+20..P+22, worker RPC P+30..P+32, gateway HTTP P+40.  Logs and data live
# in DIR (NODE.log, NODE/).  The cluster secret that authenticates every
# internal connection (RPC, Raft, snapshot streams) is VECTRON_CLUSTER_SECRET
# when set at `up`, else 32 random bytes made there; either way it is kept in
# DIR/cluster.secret (mode 0600) and passed to every node (and to `vectron
# admin`: VECTRON_CLUSTER_SECRET=$(cat DIR/cluster.secret) vectron admin ...).
# GW_FLAGS, when set at `up`, are extra flags for the gateway.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
NODES="pd1 pd2 pd3 w1 w2 w3 gw"

die() { echo "cluster.sh: $*" >&2; exit 2; }

cmd="${1:-}"; [ -n "$cmd" ] || die "usage: cluster.sh up|kill|stop|start|pause|resume|status|down ..."
shift
node=""
case "$cmd" in kill|stop|start|pause|resume) node="${1:-}"; shift || true;; esac
DIR="" BASE="" BIN="$ROOT/build/vectron"
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR="$2"; shift 2;;
    --base-port) BASE="$2"; shift 2;;
    --bin) BIN="$2"; shift 2;;
    *) die "unknown argument $1";;
  esac
done
[ -n "$DIR" ] || die "--dir is required"

node_cmd() { # the command line of a node
  local n="$1" i
  local peers="1@127.0.0.1:$BASE/127.0.0.1:$((BASE + 10)),2@127.0.0.1:$((BASE + 1))/127.0.0.1:$((BASE + 11)),3@127.0.0.1:$((BASE + 2))/127.0.0.1:$((BASE + 12))"
  local pds="127.0.0.1:$((BASE + 10)),127.0.0.1:$((BASE + 11)),127.0.0.1:$((BASE + 12))"
  case "$n" in
    pd[123]) i=${n#pd}; echo "$BIN pd --id $i --data-dir $DIR/$n --peers $peers";;
    w[123]) i=${n#w}
      echo "$BIN worker --data-dir $DIR/$n --pd $pds --raft 127.0.0.1:$((BASE + 19 + i)) --rpc 127.0.0.1:$((BASE + 29 + i)) --zone z$i";;
    gw) echo "$BIN gateway --pd $pds --port $((BASE + 40)) ${GW_FLAGS:-}";;
    *) die "unknown node $n (one of: $NODES)";;
  esac
}

pid_of() { cat "$DIR/$1.pid" 2>/dev/null || true; }

http_ok() { # GET http://127.0.0.1:$1$2 answers 200 (bash's /dev/tcp: no curl needed)
  local line
  exec 3<>"/dev/tcp/127.0.0.1/$1" 2>/dev/null || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
  IFS= read -r -t 2 line <&3 || line=""
  exec 3<&- 3>&-
  case "$line" in "HTTP/1."?" 200"*) return 0;; *) return 1;; esac
}
# PID is a live process of ours: not gone, not a zombie waiting to be
# reaped (kill -0 succeeds on those), and not a reused pid of another program
running() {
  local p="$1" st
  [ -n "$p" ] && [ -r "/proc/$p/status" ] || return 1
  st=$(awk '/^State:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo "?")
  [ "$st" != Z ] && [ "$st" != X ] && grep -qa vectron "/proc/$p/cmdline" 2>/dev/null
}
alive() { running "$(pid_of "$1")"; }

start_node() {
  local n="$1"
  alive "$n" && { echo "$n is already running (pid $(pid_of "$n"))"; return 0; }
  # shellcheck disable=SC2046
  nohup $(node_cmd "$n") >>"$DIR/$n.log" 2>&1 </dev/null &
  echo $! >"$DIR/$n.pid"
}

stop_node() { # SIGTERM, then SIGKILL after 10 s
  local n="$1" p
  p=$(pid_of "$n")
  running "$p" || return 0
  kill -CONT "$p" 2>/dev/null || true
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 100); do running "$p" || return 0; sleep 0.1; done
  kill_node "$n"
}

kill_node() { # SIGKILL, and return once the process is gone
  local p
  p=$(pid_of "$1")
  running "$p" || return 0
  kill -KILL "$p" 2>/dev/null || true
  for _ in $(seq 100); do running "$p" || return 0; sleep 0.05; done
  die "$1 (pid $p) still running 5 s after SIGKILL"
}

load_env() {
  [ -f "$DIR/cluster.env" ] || die "$DIR has no cluster (run up first)"
  # shellcheck disable=SC1091
  . "$DIR/cluster.env"
  [ -s "$DIR/cluster.secret" ] || die "$DIR has no cluster.secret (run up first)"
  VECTRON_CLUSTER_SECRET=$(cat "$DIR/cluster.secret")
  export VECTRON_CLUSTER_SECRET
}

case "$cmd" in
  up)
    [ -n "$BASE" ] || die "--base-port is required"
    [ -x "$BIN" ] || die "$BIN is not built (cmake -S . -B build && cmake --build build)"
    mkdir -p "$DIR"
    printf 'BASE=%q\nBIN=%q\nGW_FLAGS=%q\n' "$BASE" "$BIN" "${GW_FLAGS:-}" >"$DIR/cluster.env"
    if [ ! -s "$DIR/cluster.secret" ]; then
      secret=${VECTRON_CLUSTER_SECRET:-$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')}
      (umask 077 && printf '%s\n' "$secret" >"$DIR/cluster.secret")
    fi
    load_env
    for n in $NODES; do start_node "$n"; done
    pds="127.0.0.1:$((BASE + 10)),127.0.0.1:$((BASE + 11)),127.0.0.1:$((BASE + 12))"
    deadline=$((SECONDS + 60))
    until [ "$("$BIN" admin --pd "$pds" status 2>/dev/null | grep -c '"state":[[:space:]]*"\(READY\|ACTIVE\)"')" -ge 3 ]; do
      [ $SECONDS -lt $deadline ] || die "workers not registered within 60 s (logs in $DIR)"
      sleep 0.2
    done
    url="http://127.0.0.1:$((BASE + 40))"
    until http_ok $((BASE + 40)) /readyz; do
      [ $SECONDS -lt $deadline ] || die "gateway not ready within 60 s (logs in $DIR)"
      sleep 0.2
    done
    echo "$url"
    ;;
  kill) load_env; kill_node "$node";;
  stop) load_env; stop_node "$node";;
  start) load_env; start_node "$node";;
  pause) load_env; p=$(pid_of "$node"); [ -n "$p" ] && kill -STOP "$p";;
  resume) load_env; p=$(pid_of "$node"); [ -n "$p" ] && kill -CONT "$p";;
  status)
    load_env
    for n in $NODES; do
      p=$(pid_of "$n")
      if running "$p"; then
        st=$(awk '/^State:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo "?")
        [ "$st" = T ] && echo "$n paused (pid $p)" || echo "$n running (pid $p)"
      else
        echo "$n down"
      fi
    done
    "$BIN" admin --pd "127.0.0.1:$((BASE + 10)),127.0.0.1:$((BASE + 11)),127.0.0.1:$((BASE + 12))" status 2>/dev/null || true
    ;;
  down) load_env; for n in $NODES; do stop_node "$n"; done;;
  *) die "unknown command $cmd";;
esac
