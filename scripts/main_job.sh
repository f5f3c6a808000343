#!/usr/bin/env bash
# The main job on embedded defaults: start the service (SQLite + embedded Ray, dev mode on
# loopback), run a MAE-DET search through its REST API, and download the chosen backbone.
set -euo pipefail
cd "$(dirname "$0")/.."
Z=.venv/bin/zennas
PORT=${ZENNAS_PORT:-8765}
export ZENNAS_DATABASE_URL=${ZENNAS_DATABASE_URL:-sqlite:///runs/main-job/zennas.db}
export ZENNAS_ARTIFACTS_DIR=${ZENNAS_ARTIFACTS_DIR:-runs/main-job/artifacts}
mkdir -p runs/main-job

# 1. score the published MAE-DET-S backbone (closed form and forward pass)
$Z score examples/maedet_s.txt --score entropy-analytic
$Z score examples/maedet_s.txt --score entropy

# 2. the service: submit a search, follow it, download the backbone
$Z serve --dev --port "$PORT" > runs/main-job/service.log 2>&1 &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.5; done

curl -sf -X POST "http://127.0.0.1:$PORT/v1/searches" -H 'Content-Type: application/json' -d '{
  "space": "detection-k1kxk1", "score": "entropy-analytic", "resolution": 480,
  "budgets": {"flops": 188e8, "layers": 91}, "population": 256, "iterations": 100000, "seed": 0
}' > runs/main-job/job.json
ID=$(.venv/bin/python -c "import json; print(json.load(open('runs/main-job/job.json'))['id'])")
echo "submitted search $ID"
ZENNAS_URL="http://127.0.0.1:$PORT" $Z remote wait "$ID"
curl -sf "http://127.0.0.1:$PORT/v1/searches/$ID" | .venv/bin/python -c "
import json, sys
j = json.load(sys.stdin); b = j['result']['best']
print(f\"best score {b['score']:.2f}; FLOPs {b['costs']['flops']/1e9:.2f} G (MACs + BN/act ops) at 480x480;\",
      f\"params {b['costs']['params']/1e6:.2f} M; layers {b['costs']['layers']}\")"
curl -sf "http://127.0.0.1:$PORT/v1/searches/$ID/backbone" -o runs/main-job/backbone.zip
echo "backbone bundle: runs/main-job/backbone.zip"
