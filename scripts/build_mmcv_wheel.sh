#!/usr/bin/env bash
# Build mmcv 2.1.0 (CPU ops) once and keep the wheel in a persistent cache.
# mmcv has no wheel for torch 2.13 on the registry; the build takes ~23 min on 2 cores,
# so every later set-up reuses the cached wheel instead of rebuilding.
set -euo pipefail
PY=${PY:-python}
CACHE=${ZENNAS_WHEEL_CACHE:-$HOME/.cache/zennas/wheels}
mkdir -p "$CACHE"
if ls "$CACHE"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
  echo "mmcv wheel cached in $CACHE"
  exit 0
fi
"$PY" -m pip install -q "setuptools<81" wheel ninja
echo "building mmcv 2.1.0 from source (about 23 minutes on 2 cores) into $CACHE"
MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" -m pip wheel --no-build-isolation --no-deps \
  -w "$CACHE" mmcv==2.1.0
