"""Schemathesis against a live dev-mode server on SQLite: at least 1,000 requests generated from
``/openapi.json`` (coverage, fuzzing and stateful phases), and not one answered with a 5xx.

The server runs without a dispatcher (``--no-dispatcher``): accepted searches stay queued, so fuzzed
specs cannot start long searches or Ray, and the SSE endpoint (which follows a job until it ends) is
left out. ``ZENNAS_FUZZ_SEED`` changes the seed; ``ZENNAS_FUZZ_EXAMPLES`` the examples per operation.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from typing import Any

import pytest
from service_helpers import ROOT, base_env

pytestmark = pytest.mark.slow

pytest.importorskip("schemathesis", reason="pip install schemathesis (the dev extra)")

MIN_REQUESTS = 1000


@pytest.mark.timeout(420)
def test_schemathesis_no_server_errors(databases: Any, spawn: Any, tmp_path: Any) -> None:
    env = base_env(databases.new("sqlite"), tmp_path / "artifacts", dev_mode="true", max_queued_per_tenant=100_000)
    server = spawn(env, dev=True, dispatcher=False)
    har = tmp_path / "fuzz.har"
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json",
           "--checks", "not_a_server_error",
           "--max-examples", os.environ.get("ZENNAS_FUZZ_EXAMPLES", "60"),
           "--seed", os.environ.get("ZENNAS_FUZZ_SEED", "20240601"),
           "--workers", "2",
           "--exclude-path-regex", "/events$",
           "--request-timeout", "30",
           "--suppress-health-check", "all",
           "--no-color",
           "--report", "har", "--report-har-path", str(har)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=400,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = proc.stdout + proc.stderr
    assert har.exists(), out[-5000:]
    entries = json.loads(har.read_text())["log"]["entries"]
    statuses = collections.Counter(e["response"]["status"] for e in entries)
    errors = [(e["request"]["method"], e["request"]["url"], e["response"]["status"],
               (e["response"].get("content") or {}).get("text", "")[:300])
              for e in entries if e["response"]["status"] >= 500]
    assert not errors, errors[:10]
    assert proc.returncode == 0, out[-8000:] + "\n" + server.log()[-3000:]
    assert len(entries) >= MIN_REQUESTS, (len(entries), statuses, out[-3000:])
    operations = {(e["request"]["method"], e["request"]["url"].split("?")[0]) for e in entries}
    assert len(operations) > 10, operations
    # the stateful phase followed the OpenAPI links: operations on searches it had created answered 2xx
    created = {json.loads(e["response"]["content"]["text"])["id"] for e in entries
               if e["request"]["method"] == "POST" and e["request"]["url"].endswith("/v1/searches")
               and e["response"]["status"] == 202}
    linked = [e for e in entries if any(f"/v1/searches/{i}" in e["request"]["url"] for i in created)]
    assert created and any(e["response"]["status"] < 300 for e in linked), (len(created), len(linked))
    assert server.alive()
    print(f"schemathesis: {len(entries)} requests, statuses {dict(sorted(statuses.items()))}")
