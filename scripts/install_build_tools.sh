#!/usr/bin/env bash
# A C compiler and OpenSSL's headers: the local gateway's API-key check is an Envoy dynamic module in C
# (modelfleet/gateway/native/authn.c, compiled on first use by modelfleet.gateway.native_auth.module_path).
#
#   scripts/install_build_tools.sh
#
# Idempotent: does nothing when both are present. Installs with apt-get when run as root; otherwise prints the
# command to run and fails, so `make setup` never half-succeeds.
set -euo pipefail

have_headers() { printf '#include <openssl/sha.h>\n' | cc -E -x c - >/dev/null 2>&1; }
if command -v cc >/dev/null 2>&1 && have_headers; then
  echo "build tools: cc and OpenSSL headers already installed"
  exit 0
fi

CMD="apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev libssl-dev"
if [ "$(id -u)" -ne 0 ]; then
  echo "error: the gateway's key check needs a C compiler and OpenSSL headers; install them as root: sudo sh -c '$CMD'" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
sh -c "$CMD"
command -v cc >/dev/null 2>&1 && have_headers || { echo "error: cc or OpenSSL headers still missing after apt-get" >&2; exit 1; }
