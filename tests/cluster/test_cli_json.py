"""``zennas search --json`` prints only JSON on stdout, even when a worker node dies mid-search.

Ray's driver prints cluster events such as ``(raylet) The node with node id ... has been marked dead``
from a background thread on stdout; ``ray_init`` routes them to stderr. A real cluster (head with no
CPUs, two 1-CPU worker nodes; its GCS told to declare a silent node dead after ~3 s instead of ~30 s)
runs a forward-pass search from the CLI; once the search's evaluator runs on the first worker node, that
node is SIGKILLed.
The search finishes on the other node; its stdout parses with ``json.loads`` and the node's death
notice is on stderr (so the test sees the message it guards against).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_helpers import ROOT, LocalRayCluster

pytestmark = [pytest.mark.timeout(480), pytest.mark.slow]


class QuickDeathCluster(LocalRayCluster):
    """Nodes whose GCS marks a node dead after 3 missed 1-second health checks."""

    def env(self, **extra: str) -> dict[str, str]:
        return super().env(RAY_health_check_period_ms="1000", RAY_health_check_timeout_ms="1000",
                           RAY_health_check_failure_threshold="3", **extra)


def evaluating(cluster: LocalRayCluster, node: Any) -> bool:
    for p in cluster.node_processes(node):
        try:
            if " ".join(p.cmdline()).startswith("ray::Evaluator"):
                return True
        except Exception:  # gone meanwhile
            continue
    return False


@pytest.fixture
def cluster() -> Iterator[QuickDeathCluster]:
    c = QuickDeathCluster()
    try:
        c.launch(workers=2, num_cpus=1)
        yield c
    finally:
        c.stop()


def test_json_stdout_survives_a_node_death(cluster: QuickDeathCluster, tmp_path: Any) -> None:
    cluster.wait_ready()
    victim = cluster.workers[0]
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    cmd = [sys.executable, "-m", "zennas.cli", "search", "--score", "entropy", "--score-resolution", "32",
           "--budget-flops", "188e8", "--budget-layers", "91", "--population", "8", "--generation", "8",
           "--iterations", "240", "--seed", "0", "--ray-address", cluster.address, "--json"]
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen(cmd, env=cluster.env(), cwd=ROOT, stdout=fo, stderr=fe)
        try:
            deadline = time.monotonic() + 180
            while not evaluating(cluster, victim):  # the search's evaluator actor runs there
                assert proc.poll() is None, err.read_text()[-3000:]
                assert time.monotonic() < deadline, "no evaluator of the search started on the victim node"
                time.sleep(0.2)
            time.sleep(2.0)
            cluster.kill_node(victim)
            rc = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr = err.read_text(errors="replace")
    assert rc == 0, stderr[-3000:]
    summary = json.loads(out.read_text())  # nothing but the document
    assert summary["counts"]["trials"] == 240
    assert "marked dead" in stderr, "the node's death was not reported (the search ended too soon?)"
