#!/usr/bin/env bash
# A C compiler and OpenSSL's headers: the local gateway's API-key check is an Envoy dynamic module in C
# (modelfleet/gateway/native/authn.c, compiled on first use by modelfleet.gateway.native_auth.module_path).
#
#   scripts/install_build_tools.sh
#
# Idempotent: does nothing when both are present; otherwise apt_install.sh.
set -euo pipefail

have_headers() { printf '#include <openssl/sha.h>\n' | cc -E -x c - >/dev/null 2>&1; }
if command -v cc >/dev/null 2>&1 && have_headers; then
  echo "build tools: cc and OpenSSL headers already installed"
  exit 0
fi

. "$(dirname "$0")/apt_install.sh"
apt_install "the gateway key check's C compiler and OpenSSL headers" gcc libc6-dev libssl-dev
command -v cc >/dev/null 2>&1 && have_headers || { echo "error: cc or OpenSSL headers still missing after apt-get" >&2; exit 1; }
