#!/usr/bin/env bash
# The test command: lint, type check, then the whole test suite (every test has a timeout).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check zennas api workers tests benchmarks
.venv/bin/mypy zennas
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
