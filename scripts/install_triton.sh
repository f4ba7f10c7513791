#!/usr/bin/env bash
# Install a real CPU Triton (server + python backend), perf_analyzer and Model Analyzer into an
# existing virtualenv, from PyPI wheels only. Why each step exists: docs in /work/shared/notes/triton-cpu.md.
#
#   scripts/install_triton.sh [VENV_DIR]     (default: .venv)
#
# Idempotent: a stamp file holding the pins makes a second run a no-op; change a pin and it reruns.
set -euo pipefail

VENV=$(cd "${1:-.venv}" 2>/dev/null && pwd) || { echo "error: venv '${1:-.venv}' does not exist (create it with: python3 -m venv ${1:-.venv})" >&2; exit 1; }
PY="$VENV/bin/python"
[ -x "$PY" ] || { echo "error: $PY not found: '$VENV' is not a virtualenv" >&2; exit 1; }

# Exact versions that install together and pass `pip check`. The example models are numpy-only (python
# backend), so no ONNX toolchain: a model that needs one brings its artefacts built.
PINS=(
  "nvidia-pytriton==0.7.0"           # tritonserver 2.51.0 + python backend + bundled libs
  "tritonclient[all]==2.73.0"
  "triton-model-analyzer==1.58.0"
  "numpy==1.26.4"                    # pytriton 0.7.0 needs numpy<2
)
# The only perf_analyzer binary on PyPI that runs on glibc 2.36; taken from the wheel, never installed
# (this tritonclient pins an older grpcio than Model Analyzer needs).
PERF_ANALYZER_WHEEL="tritonclient==2.51.0"

STAMP="$VENV/.modelfleet-triton.stamp"
WANT="${PINS[*]} $PERF_ANALYZER_WHEEL"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  echo "triton: already installed in $VENV"
  exit 0
fi

echo "triton: installing into $VENV"
"$PY" -m pip install --disable-pip-version-check -q "${PINS[@]}"
"$PY" -m pip check

PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
SERVER="$SITE/pytriton/tritonserver"
BUNDLED="$SITE/nvidia_pytriton.libs"
LIBS="$VENV/lib/triton-libs"   # put on LD_LIBRARY_PATH by modelfleet.triton.runtime
mkdir -p "$LIBS"

# Fix 1: the python backend looks for its stub next to libtriton_python.so; the stub's RPATH
# ($ORIGIN/../../../../nvidia_pytriton.libs) resolves from there too.
STUB="$SERVER/python_backend_stubs/$PYVER/triton_python_backend_stub"
[ -f "$STUB" ] || { echo "error: no python backend stub for Python $PYVER in nvidia-pytriton (has: $(ls "$SERVER/python_backend_stubs"))" >&2; exit 1; }
install -m 755 "$STUB" "$SERVER/backends/python/triton_python_backend_stub"

# Fix 2: the stub embeds libpython$PYVER.so.1.0. Prefer the very interpreter behind this venv (exact
# patch version, e.g. a pyenv build with --enable-shared); else the system one; else Debian's package.
LIBPY="libpython$PYVER.so.1.0"
BASE_LIBDIR=$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR") or "")')
if [ -n "$BASE_LIBDIR" ] && [ -f "$BASE_LIBDIR/$LIBPY" ]; then
  ln -sfn "$BASE_LIBDIR/$LIBPY" "$LIBS/$LIBPY"
elif ldconfig -p | grep -q "$LIBPY"; then
  rm -f "$LIBS/$LIBPY"
else
  echo "triton: $LIBPY missing, installing libpython$PYVER from apt"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get install -y -q "libpython$PYVER" >/dev/null || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "libpython$PYVER" >/dev/null; }
  ldconfig -p | grep -q "$LIBPY" || { echo "error: $LIBPY still not found after apt-get" >&2; exit 1; }
fi

# Fix 3: perf_analyzer links libb64.so.0d and libcudart.so.12, which the pytriton wheel bundles under
# hashed names.
link_bundled() {  # link_bundled GLOB PLAIN_NAME
  local found=("$BUNDLED"/$1)
  [ -f "${found[0]}" ] || { echo "error: $BUNDLED/$1 not found" >&2; exit 1; }
  ln -sfn "${found[0]}" "$LIBS/$2"
}
link_bundled "libb64-*.so.0d" libb64.so.0d
link_bundled "libcudart-*.so.12*" libcudart.so.12

TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
"$PY" -m pip download --disable-pip-version-check -q --no-deps "$PERF_ANALYZER_WHEEL" -d "$TMP"
"$PY" - "$TMP" "$VENV/bin/perf_analyzer" <<'PYEOF'
import glob, os, sys, zipfile
wheel, = glob.glob(os.path.join(sys.argv[1], "tritonclient-*.whl"))
with zipfile.ZipFile(wheel) as z:
    data = z.read(next(n for n in z.namelist() if n.endswith(".data/data/bin/perf_analyzer")))
with open(sys.argv[2], "wb") as f:
    f.write(data)
os.chmod(sys.argv[2], 0o755)
PYEOF

# Smoke check: both binaries must resolve every library with the environment the runtime builds.
export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
for bin in "$SERVER/bin/tritonserver" "$SERVER/backends/python/triton_python_backend_stub" "$VENV/bin/perf_analyzer"; do
  if ldd "$bin" | grep -q "not found"; then
    echo "error: unresolved libraries in $bin:" >&2; ldd "$bin" | grep "not found" >&2; exit 1
  fi
done

echo "$WANT" > "$STAMP"
echo "triton: ready (tritonserver in $SERVER/bin, perf_analyzer in $VENV/bin)"
