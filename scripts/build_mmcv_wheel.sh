#!/usr/bin/env bash
# Build mmcv 2.1.0 (CPU ops) once and keep the wheel in a persistent cache.
# mmcv has no wheel for torch 2.13 on the registry; the build takes ~23 min on 2 cores,
# so every later set-up reuses the cached wheel instead of rebuilding. While it builds, a line
# reports the compiled files (ninja's [k/N]), the elapsed time and an ETA; the compiler output goes
# to the set-up log.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
CACHE=${ZENNAS_WHEEL_CACHE:-$HOME/.cache/zennas/wheels}
mkdir -p "$CACHE" runs
: "${ZENNAS_SETUP_LOG:=runs/setup.log}"
source scripts/_steps.sh
if ls "$CACHE"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
  echo "==> mmcv 2.1.0 ... cached wheel in $CACHE"
  exit 0
fi
step "mmcv build tools (setuptools<81, wheel, ninja)" "$PY" -m pip install "setuptools<81" wheel ninja
BUILD_LOG=$(mktemp -t zennas-mmcv-build.XXXXXX)
echo "==> mmcv 2.1.0: building from source once (about 23 minutes on 2 cores) into $CACHE"
MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" -m pip wheel -v --no-build-isolation --no-deps \
  -w "$CACHE" mmcv==2.1.0 > "$BUILD_LOG" 2>&1 &
BUILD=$!
trap 'kill $BUILD 2>/dev/null || true' INT TERM
t0=$SECONDS
last=""
while kill -0 "$BUILD" 2>/dev/null; do
  sleep 15
  # ninja prints "[k/N] c++ ..." for each compiled file
  prog=$(grep -aoE '^\[[0-9]+/[0-9]+\]' "$BUILD_LOG" | tail -n 1 | tr -d '[]' || true)
  el=$(( SECONDS - t0 ))
  if [ -n "$prog" ] && [ "$prog" != "$last" ]; then
    k=${prog%/*}; n=${prog#*/}
    eta=$(( k > 0 ? el * (n - k) / k : 0 ))
    printf '    mmcv: %s/%s files compiled, %d min %02d s elapsed, about %d min left\n' \
      "$k" "$n" $(( el / 60 )) $(( el % 60 )) $(( (eta + 59) / 60 ))
    last=$prog
  elif [ -z "$prog" ] && [ $(( el % 120 )) -lt 15 ]; then
    printf '    mmcv: preparing the build, %d min %02d s elapsed\n' $(( el / 60 )) $(( el % 60 ))
  fi
done
rc=0; wait "$BUILD" || rc=$?
cat "$BUILD_LOG" >> "$ZENNAS_SETUP_LOG"; rm -f "$BUILD_LOG"
if [ "$rc" -ne 0 ]; then
  echo "==> mmcv build FAILED (exit $rc); the full log is $ZENNAS_SETUP_LOG" >&2
  tail -n 30 "$ZENNAS_SETUP_LOG" >&2
  exit "$rc"
fi
echo "==> mmcv 2.1.0 ... ok ($(( (SECONDS - t0) / 60 )) min), wheel cached in $CACHE"
