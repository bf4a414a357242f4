#!/usr/bin/env bash
# test.sh - set up and run every test: the README's test command.
#
#   1. bootstrap the Debian packages (and Node.js when there is none)
#   2. release build with -Werror, all unit, integration and process tests
#   3. the API tests: `vectron serve` driven by the real Qdrant JS client and
#      LangChain from npm (pinned in tests/api/package-lock.json), then the
#      same tests through `vectron gateway` in front of a local cluster
#      (scripts/cluster.sh: 3 placement drivers, 3 workers); durability tests;
#      auth tests (serve --auth on: forged credentials, RBAC matrix, rate limits);
#      every internal port attacked with raw sockets (tests/api/security);
#      a network partition of a 3-machine cluster (network namespaces, as root)
#   4. ASan + UBSan build, all unit tests
#   5. TSan build, the concurrency tests (ctest label "tsan")
#   6. libFuzzer smoke runs of every fuzz target (VX_FUZZ_SECONDS each, default 20)
#
# Options (environment): VX_SEED=<n> reruns the seeded tests with that seed;
# VX_LONG=1 runs the longer variants (more fuzzing: 300 s per target).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
JOBS=$(nproc)

bash scripts/bootstrap.sh

section() { printf '\n===== %s =====\n' "$*"; }

build() { # dir, extra cmake args...
  local dir=$1; shift
  cmake -S "$ROOT" -B "$ROOT/$dir" -DVX_WERROR=ON "$@" >/dev/null
  cmake --build "$ROOT/$dir" -j"$JOBS"
}

section "release build (-Werror) and unit tests"
build build -DCMAKE_BUILD_TYPE=RelWithDebInfo
(cd build && ctest --output-on-failure -j1)

section "API tests: the real Qdrant JS client and LangChain against vectron serve"
bash "$ROOT/tests/api/run.sh" "$ROOT/build/vectron"
section "API tests again, through vectron gateway in front of a 3-PD, 3-worker cluster"
VX_API_TARGET=cluster bash "$ROOT/tests/api/run.sh" "$ROOT/build/vectron"
section "the gateway: same answers as serve, shard deadlines, kill -9 of a shard leader under ingest"
bash "$ROOT/tests/api/cluster/run.sh" "$ROOT/build/vectron"
section "durability: kill -9 and SIGTERM restarts of vectron serve"
bash "$ROOT/tests/api/durability/run.sh" "$ROOT/build/vectron"
section "auth: forged credentials, the authorization matrix, sessions, rate limits, secrets"
bash "$ROOT/tests/api/durability/run.sh" "$ROOT/build/vectron" auth
section "security: the Raft, snapshot and RPC ports attacked with raw sockets; no open default"
bash "$ROOT/tests/api/durability/run.sh" "$ROOT/build/vectron" security
section "a network partition: 3 machines in network namespaces, the shard leader cut off"
# Needs root (network namespaces, a bridge, veth pairs, iptables).  The test
# probes exactly what it will do (a small copy of its network) and reports
# itself skipped, with the step that failed, where this machine cannot.
bash "$ROOT/tests/api/durability/run.sh" "$ROOT/build/vectron" partition

section "ASan + UBSan build and unit tests"
build build-asan -DCMAKE_BUILD_TYPE=Debug -DVX_SANITIZE=address,undefined -DVX_BENCH=OFF
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  VX_BIG_SNAPSHOT_MB=64 ctest --output-on-failure -j1)

section "TSan build and concurrency tests"
build build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVX_SANITIZE=thread -DVX_BENCH=OFF
(cd build-tsan && TSAN_OPTIONS="halt_on_error=1 suppressions=$ROOT/tests/tsan.supp" \
  ctest --output-on-failure -L tsan -j1)

section "fuzz smoke runs (libFuzzer + ASan/UBSan)"
secs=${VX_FUZZ_SECONDS:-20}
[ "${VX_LONG:-0}" = 1 ] && secs=300 && export VX_FIXTURE_SEEDS=500
build build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DVX_FUZZ=ON \
  -DVX_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
(cd build-fuzz && ctest --output-on-failure -L fuzz -j1)
for f in build-fuzz/fuzz_*; do
  name=$(basename "$f")
  corpus="$ROOT/tests/fuzz/corpus/${name#fuzz_}"
  work=$(mktemp -d)
  cp -r "$corpus"/. "$work"/ 2>/dev/null || true
  echo "fuzzing $name for ${secs}s"
  # a finding's input goes to build-fuzz/artifacts/, and its report is
  # printed in full (the last lines alone are the fuzzer's statistics)
  mkdir -p "$ROOT/build-fuzz/artifacts"
  if ! "$f" -max_total_time="$secs" -print_final_stats=1 \
      -artifact_prefix="$ROOT/build-fuzz/artifacts/" "$work" >"$work.log" 2>&1; then
    grep -v '^#[0-9]' "$work.log" | tail -n 80
    echo "$name found a crash, a leak or a sanitizer report; its input is in build-fuzz/artifacts/" >&2
    rm -rf "$work" "$work.log"
    exit 1
  fi
  tail -n 3 "$work.log"
  rm -rf "$work" "$work.log"
done

section "all test stages passed"
