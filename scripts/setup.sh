#!/usr/bin/env bash
# Install everything zennas needs into ./.venv, then run the main job on embedded defaults.
#
#   bash scripts/setup.sh            # install + run the main job
#   ZENNAS_SETUP_NO_RUN=1 bash scripts/setup.sh   # install only
#
# One line per step on the terminal; the full output of every step goes to the log file
# ($ZENNAS_SETUP_LOG, default runs/setup.log), whose tail is shown when a step fails.
# torch is pinned to the local CPU wheel (2.13.0): a looser pin would pull the multi-GB CUDA build.
# mmcv 2.1.0 has no wheel for this torch: it is built from source once (~23 min on 2 cores) into
# ~/.cache/zennas/wheels and reused from there on every later set-up.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
WHEELS=${ZENNAS_WHEEL_CACHE:-$HOME/.cache/zennas/wheels}
mkdir -p runs
LOG=${ZENNAS_SETUP_LOG:-runs/setup.log}
: > "$LOG"
export ZENNAS_SETUP_LOG=$LOG
source scripts/_steps.sh

PIP=".venv/bin/python -m pip"
step "python virtual environment (.venv)" bash -c "[ -x .venv/bin/python ] || $PYTHON -m venv .venv"
step "pip" $PIP install --upgrade "pip>=24"
step "torch 2.13.0 (CPU) and numpy" $PIP install torch==2.13.0 numpy
PY=.venv/bin/python bash scripts/build_mmcv_wheel.sh   # prints its own progress
# everything else; mmcv comes from the cached wheel (never rebuilt), mmdet's undeclared `six` via the extra
step "zennas with all extras (search, service, mmdet, report, dev)" \
  $PIP install --find-links "$WHEELS" -e ".[search,service,mmdet,report,dev]"

# the console's browser tests drive Debian's chromium through Playwright (the Python package only:
# `playwright install` would download a browser, which this set-up never does)
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  install_chromium() {
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium && return 0
    $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
  }
  step "chromium (for the console's browser tests)" install_chromium \
    || echo "setup: could not install chromium; the console's browser tests will be skipped (log: $LOG)" >&2
fi

# the check of the installation: one import of everything (set -e stops the set-up if one fails)
.venv/bin/python -c "import zennas, torch, optuna, mmcv, mmdet, ray; print('installed: zennas', zennas.__version__, '| torch', torch.__version__, '| mmcv', mmcv.__version__, '| mmdet', mmdet.__version__, '| ray', ray.__version__)"
echo "set-up done in $(( SECONDS / 60 )) min $(( SECONDS % 60 )) s; full log: $LOG"

if [ "${ZENNAS_SETUP_NO_RUN:-0}" != "1" ]; then
  bash scripts/main_job.sh
fi
