#!/usr/bin/env bash
# bootstrap.sh - install the Debian 12 packages Vectron builds and tests with.
# Idempotent: installs only what is missing (apt-get update first, once).
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config clang libclang-rt-14-dev ca-certificates
  zlib1g-dev libcmocka-dev libxxhash-dev
  liblmdb-dev libraft-dev libuv1-dev libcjson-dev libmicrohttpd-dev
  libprotobuf-c-dev protobuf-c-compiler libsodium-dev
  libhnswlib-dev
  iproute2 iptables  # the network-partition test (network namespaces)
  curl  # the README's examples (a minimal Debian has none)
  openssl  # the TLS test makes its certificates
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js runs the API tests with the real Qdrant client (from npm).  Any
# node >= 18 with npm will do (Debian 12 ships 18.19); install Debian's only
# when there is none, so a newer one from elsewhere is left alone.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi
if [ ${#missing[@]} -eq 0 ]; then
  echo "bootstrap: all ${#PKGS[@]} packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "bootstrap: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
