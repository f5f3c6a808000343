"""zennas on a real multi-node Ray cluster: ``ray start --head`` plus two worker nodes (1 CPU each).

All nodes run on this machine (one IP, told apart by node id), each its own ``ray start`` with its
own ports and temp dir (see ``cluster_helpers``). The head has no CPUs, so every evaluation runs on
a worker node.

* the ``zennas search --ray-address`` CLI on the cluster (by GCS address, and through Ray Client
  ``ray://``) gives the local backend's result, and spreads its candidates over both worker nodes;
* the real service (``zennas serve``, ``ZENNAS_RAY_ADDRESS``) keeps a search going when a worker
  node dies mid-search (its raylet and everything under it SIGKILLed): the job succeeds, every
  trial is there once, the lost node's in-flight work is retried on the surviving node, and the
  result equals a fault-free in-process run bit for bit (one torch thread on both sides);
* an auto-sized ``RayBackend`` (no ``num_workers``) in a driver process grows its pool onto a node
  that joins the cluster mid-run.

The in-process references run while the cluster boots.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from cluster_helpers import ROOT, LocalRayCluster, Node, Service

from zennas.admission import Limits
from zennas.search import Budgets, LocalBackend, SearchResult, SearchSpec, run_search

pytestmark = [pytest.mark.timeout(480), pytest.mark.slow]

FINISHED = ("succeeded", "failed", "cancelled")
# every candidate goes to an actor (a forward-pass score); ~0.1-0.3 s each on this machine
BASE: dict[str, Any] = {"score": "entropy", "score_settings": {"resolution": 64},
                        "budgets": {"flops": 188e8, "layers": 91}, "population": 8, "generation": 8, "seed": 0}


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRayCluster]:
    """Head (0 CPUs) and two 1-CPU worker nodes, booting in the background; tests call
    ``wait_ready()`` once their in-process reference is done."""
    c = LocalRayCluster()
    try:
        c.launch(workers=2, num_cpus=1)
        yield c
    finally:
        c.stop()


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def spec_of(iterations: int) -> SearchSpec:
    b = BASE["budgets"]
    return SearchSpec(score=BASE["score"], score_settings=dict(BASE["score_settings"]),
                      budgets=Budgets(flops=b["flops"], layers=b["layers"]), population=BASE["population"],
                      iterations=iterations, generation=BASE["generation"], seed=BASE["seed"],
                      limits=Limits())  # the service records its limits (ZENNAS_* defaults = Limits()) in the spec


_REFERENCES: dict[str, SearchResult] = {}


def reference(spec: SearchSpec) -> SearchResult:
    """The fault-free result, in this process (one torch thread, as the actors use)."""
    key = json.dumps(spec.to_dict(), sort_keys=True)
    if key not in _REFERENCES:
        with torch_threads(1):
            _REFERENCES[key] = run_search(spec, backend=LocalBackend(threads=1))
    return _REFERENCES[key]


def jsonish(x: Any) -> Any:
    return json.loads(json.dumps(x))


def node_of(worker: str) -> str:
    return worker.split("/", 1)[0]


@pytest.mark.parametrize("via", ["gcs", "client"])
def test_cli_search_on_the_cluster_matches_local(cluster: LocalRayCluster, tmp_path: Path, via: str) -> None:
    """``--ray-address HOST:PORT`` (a driver on a node's machine) and ``ray://HOST:PORT`` (Ray
    Client, a driver anywhere)."""
    spec = spec_of(48)
    ref = reference(spec)
    cluster.wait_ready()
    out = tmp_path / "out"
    address = cluster.address if via == "gcs" else cluster.client_address
    cmd = [sys.executable, "-m", "zennas.cli", "search", "--ray-address", address,
           "--score", "entropy", "--score-resolution", "64", "--budget-flops", "188e8", "--budget-layers", "91",
           "--population", "8", "--iterations", "48", "--generation", "8", "--seed", "0",
           "--out", str(out), "--json"]
    t0 = time.monotonic()
    r = subprocess.run(cmd, env=cluster.env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    if via == "client" and r.returncode != 0 and "Initialization failure from server" in r.stderr:
        # Ray Client's proxy picks its per-driver server port from 23000-23999, checking only IPv4:
        # another Ray Client server on this machine may hold it. The proxy moves on to the next one.
        r = subprocess.run(cmd, env=cluster.env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    took = time.monotonic() - t0
    assert r.returncode == 0, f"zennas search exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    summary = json.loads(r.stdout)
    assert summary["spec"] == jsonish(replace(spec, limits=None).to_dict())  # the CLI applies no service limits
    assert summary["best"]["structure"] == jsonish(ref.best_structure.to_dict())
    assert summary["best"]["score"] == ref.best_score
    assert summary["counts"] == {"trials": 48, "evaluated": ref.evaluated, "rejected": ref.rejected,
                                 "failed": 0}
    assert [tuple(x) for x in summary["best_curve"]] == ref.best_curve
    trials = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert sorted(t["number"] for t in trials) == list(range(48))
    scored = [t for t in trials if t["state"] == "complete"]
    # the head has no CPUs: every candidate ran on a worker node (which ones take a share of 48 trials
    # depends on Ray's scheduling and the machine's load: seen both and one)
    ran_on = {node_of(t["worker"]) for t in scored}
    assert ran_on and ran_on <= {n.node_id[:8] for n in cluster.workers if n.node_id}, \
        (took, sorted({t["worker"] for t in scored}))


def _trials(client: httpx.Client, jid: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        r = client.get(f"/v1/searches/{jid}/trials", params={"offset": offset, "limit": 1000})
        assert r.status_code == 200, r.text
        rows += r.json()["items"]
        offset = r.json()["next_offset"]
    return rows


def _busiest(cluster: LocalRayCluster, nodes: list[Node]) -> Node:
    """The worker node whose processes used the most CPU over the last half second (the one most
    likely to be in the middle of a task)."""
    before = {n.name: cluster.cpu_seconds(n) for n in nodes}
    time.sleep(0.5)
    return max(nodes, key=lambda n: cluster.cpu_seconds(n) - before[n.name])


def test_service_search_survives_losing_a_node(cluster: LocalRayCluster, tmp_path: Path) -> None:
    iterations = 200
    spec = spec_of(iterations)
    t_ref = time.monotonic()
    ref = reference(spec)
    t_ref = time.monotonic() - t_ref
    cluster.wait_ready()
    live = [n for n in cluster.workers if not n.killed]
    assert len(live) == 2, "the module's cluster lost a node before this test"
    env = cluster.env(
        ZENNAS_RAY_ADDRESS=cluster.address, RAY_ADDRESS=cluster.address,
        ZENNAS_DATABASE_URL=f"sqlite:///{tmp_path / 'zennas.db'}", ZENNAS_ARTIFACTS_DIR=str(tmp_path / "artifacts"),
        ZENNAS_SEARCH_WORKERS="2", ZENNAS_POLL_SECONDS="0.2", ZENNAS_LOG_LEVEL="INFO",
        ZENNAS_SECRET_KEY="test-secret-" + "0" * 32)
    service = Service(env, tmp_path / "service.log").start()
    try:
        with httpx.Client(base_url=service.url, timeout=30) as c:
            r = c.post("/v1/searches", json={**BASE, "iterations": iterations})
            assert r.status_code == 202, r.text
            jid = r.json()["id"]
            assert r.json()["spec"] == jsonish(spec.to_dict())  # the same search as the reference

            t_submit = time.monotonic()
            deadline = t_submit + 240
            job: dict[str, Any] = {}
            while time.monotonic() < deadline:  # wait for 20 % (actors start, then trials flow)
                job = c.get(f"/v1/searches/{jid}").json()
                it = (job.get("progress") or {}).get("iteration", 0)
                if job["state"] in FINISHED or it >= 0.2 * iterations:
                    break
                time.sleep(0.1)
            it = (job.get("progress") or {}).get("iteration", 0)
            assert job.get("state") == "running" and 0.2 * iterations <= it <= 0.8 * iterations, \
                f"could not catch the search between 20 % and 80 %: {job.get('state')} at {it}\n{service.log()}"

            victim = _busiest(cluster, live)
            survivor = next(n for n in live if n is not victim)
            t_kill = time.monotonic()
            cluster.kill_node(victim)
            after = c.get(f"/v1/searches/{jid}").json()
            killed_at = (after.get("progress") or {}).get("iteration", 0)
            assert after["state"] == "running" and killed_at <= 0.8 * iterations, (after["state"], killed_at)

            while time.monotonic() < t_kill + 300:
                job = c.get(f"/v1/searches/{jid}").json()
                if job["state"] in FINISHED:
                    break
                time.sleep(0.2)
            t_done = time.monotonic()
            assert job["state"] == "succeeded", f"{job['state']}: {job.get('error')}\n{service.log()}"
            trials = _trials(c, jid)
    finally:
        service.kill()

    timing = (f"reference {t_ref:.1f} s; service: kill at {it}/{iterations} ({t_kill - t_submit:.1f} s after "
              f"submit), done {t_done - t_kill:.1f} s after the kill")
    # every iteration accounted for, once
    assert len(trials) == iterations and sorted(t["number"] for t in trials) == list(range(iterations)), timing
    assert all(t["state"] in ("complete", "rejected") for t in trials), \
        [t for t in trials if t["state"] not in ("complete", "rejected")]
    result = job["result"]
    assert result["counts"] == {"trials": iterations, "evaluated": ref.evaluated, "rejected": ref.rejected,
                                "failed": 0}
    # the same search as without the fault, bit for bit
    assert result["best"]["structure"] == jsonish(ref.best_structure.to_dict())
    assert result["best"]["score"] == ref.best_score
    assert [tuple(x) for x in result["best_curve"]] == ref.best_curve

    scored = [t for t in trials if t["state"] == "complete"]
    nodes = {node_of(t["worker"]) for t in scored}
    assert victim.node_id and survivor.node_id
    assert nodes <= {victim.node_id[:8], survivor.node_id[:8]}, (sorted(nodes), timing)
    on_victim = [t for t in scored if node_of(t["worker"]) == victim.node_id[:8]]
    assert on_victim, f"no trial ran on the killed node {victim.node_id[:8]} before the kill; {timing}"
    retried = [t for t in scored if t["attempts"] >= 2]
    assert retried, f"no trial was retried after the node loss; {timing}"
    # a retried trial finished elsewhere: on the surviving node (its actor, or a replacement)
    assert all(node_of(t["worker"]) == survivor.node_id[:8] for t in retried), retried
    # after the kill, the survivor carried the search
    assert any(node_of(t["worker"]) == survivor.node_id[:8] and t["number"] >= killed_at for t in scored)
    print(timing, f"; {len(on_victim)} trials on the lost node, {len(retried)} retried")


GROWING_DRIVER = r"""
import json, random, sys, time
from zennas_workers import RayBackend, ray_init
from zennas.space import get_space
from zennas.space.mutation import Mutator

space = get_space("detection-k1kxk1")
mutator = Mutator(space)
tasks = [{"number": i, "structure": [b.to_dict() for b in mutator.mutate(space.start, random.Random(i)).blocks],
          "score": "entropy", "score_settings": {"resolution": 64}, "height": 480, "width": 480,
          "latency": None, "latency_budget_ms": None} for i in range(8)]
ray_init(sys.argv[1])
b = RayBackend()  # no num_workers: sized from the cluster's CPUs, grows when nodes join
b.grow_interval = 0.5


def report(tag, recs):
    print(tag, json.dumps({"pool": len(b._pools[None].slots), "grown": b.grown,
                           "workers": sorted({r["worker"] for r in recs}),
                           "states": sorted({r["state"] for r in recs})}), flush=True)


report("FIRST", b.evaluate(tasks))
new_node = sys.stdin.readline().strip()  # a node joined
deadline = time.monotonic() + 120
while True:
    recs = b.evaluate(tasks)
    if any(w.startswith(new_node) for w in {r["worker"] for r in recs}) or time.monotonic() > deadline:
        break
    time.sleep(0.2)
report("GROWN", recs)
b.close()
"""


def test_pool_grows_when_a_node_joins(cluster: LocalRayCluster, tmp_path: Path) -> None:
    import queue
    import threading

    cluster.wait_ready()
    before = [n for n in cluster.workers if not n.killed]
    with open(tmp_path / "driver.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", GROWING_DRIVER, cluster.address], env=cluster.env(),
                                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                                start_new_session=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout or []], daemon=True).start()

    def expect(tag: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                if proc.poll() is not None:
                    break
                continue
            if line.startswith(tag + " "):
                return dict(json.loads(line[len(tag) + 1:]))
        raise AssertionError(f"no {tag} from the driver:\n{(tmp_path / 'driver.log').read_text()[-4000:]}")

    try:
        first = expect("FIRST", 180)
        # a node killed by an earlier test may still count in the cluster's CPUs for a moment
        assert first["pool"] >= len(before) and first["grown"] == 0 and first["states"] == ["complete"], first
        assert {node_of(w) for w in first["workers"]} <= {n.node_id[:8] for n in before if n.node_id}
        node = cluster.add_worker(num_cpus=1)
        cluster.wait_ready()
        assert node.node_id
        assert proc.stdin is not None
        proc.stdin.write(node.node_id[:8] + "\n")
        proc.stdin.flush()
        grown = expect("GROWN", 180)
        assert grown["grown"] >= 1 and grown["pool"] >= len(before) + 1 and grown["states"] == ["complete"], grown
        assert node.node_id[:8] in {node_of(w) for w in grown["workers"]}, grown
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
