"""``ray_init``: embedded means a new local Ray on loopback, a cluster only when named.

A real ``ray start --head`` (``cluster_helpers.LocalRayCluster``: its own ports and temp dir) writes
its address file, ``ray_current_cluster``, which a driver started without an address reads from its
default temp dir. Each driver here is its own process with ``RAY_TMPDIR`` pointing at a private
(short) directory holding a copy of that file, so it sees what it would see on a machine where someone ran
``ray start --head`` (still running, then killed), without touching the machine's ``/tmp/ray``:

* the embedded default (``ray_init()``) starts a new single-node instance all the same, whose every
  listening port is on 127.0.0.1, and Ray's plain ``ray.init(num_cpus=...)`` (the old default) does
  attach to the cluster and fail there (the control: the test can fail);
* ``ray_init(address)`` joins the cluster by address;
* after the cluster is killed (its file left behind) the embedded default still starts.

Every process and directory a test makes is removed (the cluster's ``stop()``, the drivers exit
and stop their Ray, ``tmp_path``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import ROOT, LocalRayCluster

pytestmark = [pytest.mark.timeout(420), pytest.mark.slow]

# A driver: connect as told, run one task (so a worker process exists), then report what it joined
# and every TCP port that it and its descendants (an embedded Ray's GCS, raylet, agents, workers) listen on.
PROBE = r"""
import json, os, sys
mode = sys.argv[1]
import ray
import psutil
if mode == "zennas":
    from zennas_workers.backend import ray_init
    ray_init(sys.argv[2] if len(sys.argv) > 2 else None, num_cpus=1)
else:  # the call zennas made before: Ray's own default discovery
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)

@ray.remote(num_cpus=0)
def pid():
    return os.getpid()

worker = ray.get(pid.remote(), timeout=120)
me = psutil.Process()
listening = []
for p in [me, *me.children(recursive=True)]:
    try:
        conns = p.net_connections(kind="inet") if hasattr(p, "net_connections") else p.connections(kind="inet")
    except psutil.Error:
        continue
    listening += [[p.pid, c.laddr.ip, c.laddr.port] for c in conns if c.status == psutil.CONN_LISTEN]
ctx = ray.get_runtime_context()
print("PROBE=" + json.dumps({"gcs_address": ctx.gcs_address, "nodes": len([n for n in ray.nodes() if n["Alive"]]),
                             "cpus": ray.cluster_resources().get("CPU", 0.0), "worker": worker,
                             "descendants": len(me.children(recursive=True)), "listening": listening}))
ray.shutdown()
"""

LOOPBACK = ("127.0.0.1", "::ffff:127.0.0.1", "::1")


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRayCluster]:
    """``ray start --head`` (0 CPUs, no worker nodes)."""
    c = LocalRayCluster()
    try:
        c.launch_head()
        yield c
    finally:
        c.stop()


def port_of(address: str) -> int:
    """The port of a GCS address (the cluster writes its machine address, we name it by 127.0.0.1)."""
    return int(address.rsplit(":", 1)[1])


def probe(cluster: LocalRayCluster, tmp: Path, *args: str, timeout: float = 180) -> tuple[dict[str, Any] | None, str]:
    """Run the probe driver with a private default temp dir that holds the cluster's address file."""
    ray_tmp = tmp / "t"
    (ray_tmp / "ray").mkdir(parents=True, exist_ok=True)
    src = cluster.temp_dir / "head" / "ray_current_cluster"
    if src.exists():  # once the cluster is stopped its temp dir is gone; the copy stays, as a stale file would
        shutil.copy(src, ray_tmp / "ray" / "ray_current_cluster")
    if len(args) > 1:  # joining the cluster: its auth token and settings
        env = cluster.env(RAY_TMPDIR=str(ray_tmp))
    else:  # a user's shell on the same machine
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "ZENNAS_"))}
        env.update(RAY_TMPDIR=str(ray_tmp), RAY_USAGE_STATS_ENABLED="0")
    r = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout)
    for line in r.stdout.splitlines():
        if line.startswith("PROBE="):
            return json.loads(line[len("PROBE="):]), r.stderr
    return None, f"exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"


@pytest.fixture
def tmp_path() -> Iterator[Path]:  # shadows pytest's: Ray's socket paths must stay under 107 characters
    d = Path(f"/tmp/zi_{uuid.uuid4().hex[:8]}")
    d.mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_embedded_never_attaches_to_a_running_cluster(cluster: LocalRayCluster, tmp_path: Path) -> None:
    cluster.wait_ready()
    assert port_of((cluster.temp_dir / "head" / "ray_current_cluster").read_text().strip()) == cluster.port
    # the control: Ray's own default finds the cluster through the file and refuses num_cpus there
    got, err = probe(cluster, tmp_path / "o", "ray")
    assert got is None and "num_cpus" in err, err

    got, err = probe(cluster, tmp_path / "n", "zennas")
    assert got is not None, err
    assert port_of(got["gcs_address"]) != cluster.port and got["nodes"] == 1 and got["cpus"] == 1.0
    assert got["descendants"] >= 3  # its own GCS, raylet and worker(s)
    ports = {(ip, port) for _, ip, port in got["listening"]}
    assert ports and all(ip in LOOPBACK for ip, _ in ports), f"non-loopback ports: {got['listening']}"


def test_cluster_by_address(cluster: LocalRayCluster, tmp_path: Path) -> None:
    cluster.wait_ready()
    got, err = probe(cluster, tmp_path, "zennas", cluster.address)
    assert got is not None, err
    assert port_of(got["gcs_address"]) == cluster.port
    assert got["descendants"] == 0  # nothing started locally: the worker ran on the cluster's node
    assert got["cpus"] == 0.0  # the head's CPUs (0 in LocalRayCluster): this is the cluster, not a local Ray


def test_embedded_after_the_cluster_was_killed(cluster: LocalRayCluster, tmp_path: Path) -> None:
    cluster.wait_ready()
    (tmp_path / "t" / "ray").mkdir(parents=True)
    shutil.copy(cluster.temp_dir / "head" / "ray_current_cluster", tmp_path / "t" / "ray" / "ray_current_cluster")
    cluster.stop()  # SIGKILL: its address file (our copy) is left behind, pointing at nothing
    t0 = time.monotonic()
    got, err = probe(cluster, tmp_path, "zennas")
    assert got is not None, err
    assert got["nodes"] == 1 and got["cpus"] == 1.0 and port_of(got["gcs_address"]) != cluster.port
    assert time.monotonic() - t0 < 120
