#!/usr/bin/env bash
# Install everything zennas needs into ./.venv, then run the main job on embedded defaults.
#
#   bash scripts/setup.sh            # install + run the main job
#   ZENNAS_SETUP_NO_RUN=1 bash scripts/setup.sh   # install only
#
# torch is pinned to the local CPU wheel (2.13.0): a looser pin would pull the multi-GB CUDA build.
# mmcv 2.1.0 has no wheel for this torch: it is built from source once (~23 min on 2 cores) into
# ~/.cache/zennas/wheels and reused from there on every later set-up.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
export PIP_DISABLE_PIP_VERSION_CHECK=1
WHEELS=${ZENNAS_WHEEL_CACHE:-$HOME/.cache/zennas/wheels}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade "pip>=24" 2>&1 | grep -v "^WARNING: Location" || true
$PIP install -q torch==2.13.0 numpy 2>&1 | grep -v "^WARNING: Location" || true

PY=.venv/bin/python bash scripts/build_mmcv_wheel.sh

# everything else; mmcv comes from the cached wheel (never rebuilt), mmdet's undeclared `six` via the extra
$PIP install -q --find-links "$WHEELS" -e ".[search,service,mmdet,report,dev]" 2>&1 | grep -v "^WARNING: Location" || true

# the console's browser tests drive Debian's chromium through Playwright (the Python package only:
# `playwright install` would download a browser, which this set-up never does)
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; then
    $SUDO apt-get update -qq >/dev/null 2>&1 || true
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
      || echo "setup: could not install chromium; the console's browser tests will be skipped" >&2
  fi
fi

.venv/bin/python -c "import zennas, torch, optuna, ray, mmcv, mmdet; print('zennas', zennas.__version__, '| torch', torch.__version__, '| mmcv', mmcv.__version__, '| mmdet', mmdet.__version__)"

if [ "${ZENNAS_SETUP_NO_RUN:-0}" != "1" ]; then
  bash scripts/main_job.sh
fi
