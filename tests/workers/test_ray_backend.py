"""RayBackend against the in-process LocalBackend, on a real embedded Ray (2 CPUs).

Scores depend (at ~1e-9 relative) on torch's intra-op thread count, so the local reference runs with
one thread, as the actors do; records then match bit for bit.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import ray
import torch
import zennas_workers.backend as backend_mod
from zennas_workers.backend import RayBackend, VersionMismatchError, WorkerPoolError, ray_init

from zennas.errors import SpecError
from zennas.search import Budgets, LocalBackend, SearchSpec, run_search
from zennas.space import get_space
from zennas.space.mutation import Mutator

pytestmark = pytest.mark.timeout(180)

LABEL = "zennas_test_timer"  # a custom resource the embedded node offers, as a timing node would
VARYING = ("worker", "seconds", "attempts")


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Iterator[None]:
    # address="local": a new instance even where `ray start --head` left /tmp/ray/ray_current_cluster
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, resources={LABEL: 1})
    yield
    ray.shutdown()


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def local(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with torch_threads(1):
        return LocalBackend(threads=1).evaluate(tasks)


def make_tasks(n: int, **extra: Any) -> list[dict[str, Any]]:
    space = get_space("detection-k1kxk1")
    mutator = Mutator(space)
    out = []
    for i in range(n):
        s = mutator.mutate(space.start, random.Random(i))
        out.append({"number": i, "structure": [b.to_dict() for b in s.blocks], "score": "entropy",
                    "score_settings": {"resolution": 64}, "height": 480, "width": 480, "latency": None,
                    "latency_budget_ms": None, **extra})
    return out


def slow(task: dict[str, Any]) -> dict[str, Any]:
    """The same task plus a latency measurement at 480x480: a second or so on one thread."""
    return {**task, "latency": {"batch": 1, "runs": 2, "warmup": 0, "resource": None}}


def strip(recs: list[dict[str, Any]], *also: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in VARYING + also} for r in recs]


def test_ray_equals_local_in_order() -> None:
    ray_init()  # already initialized: a no-op
    tasks = make_tasks(8)
    tasks.reverse()  # order must follow the list, not the task numbers
    ref = local(tasks)
    with RayBackend(num_workers=2) as b:
        assert b.name == "ray"
        got = b.evaluate(tasks)
        assert [r["number"] for r in got] == [t["number"] for t in tasks]
        assert all(r["state"] == "complete" and r["attempts"] == 1 for r in got)
        for r, x in zip(got, ref, strict=True):
            assert r["score"] == pytest.approx(x["score"], rel=1e-9, abs=0)
        assert strip(got) == strip(ref)  # in fact bit-identical, keys in the same order
        assert [list(r) for r in got] == [list(r) for r in ref]
        workers = b.workers()
        assert len(workers) == 2 and {r["worker"] for r in got} <= {w["worker"] for w in workers}
        node = ray.get_runtime_context().get_node_id()
        for w in workers:  # "<node id[:8]>/<actor id[:8]>": the node's id, never its IP
            assert w["node_id"] == node and w["worker"] == f"{node[:8]}/{w['actor_id'][:8]}"
        assert all(w["torch_threads"] == 1 and w["versions"]["torch"] == torch.__version__ for w in workers)
        b.in_flight = 2  # a small queue per actor: same records
        assert strip(b.evaluate(tasks)) == strip(ref)
        assert b.evaluate([]) == []


def test_search_through_driver_matches_local() -> None:
    def spec() -> SearchSpec:
        return SearchSpec(score="entropy", score_settings={"resolution": 64},
                          budgets=Budgets(flops=188e8, layers=91), population=8, iterations=48, generation=8,
                          seed=0)

    with torch_threads(1):
        ref = run_search(spec(), backend=LocalBackend(threads=1))
    with RayBackend(num_workers=2) as b:
        got = run_search(spec(), backend=b)
    assert got.best_structure == ref.best_structure
    assert got.best_score == ref.best_score
    assert (got.evaluated, got.rejected, got.failed) == (ref.evaluated, ref.rejected, ref.failed)
    assert got.best_curve == ref.best_curve


def test_summary_reports_measured_timings() -> None:
    """A Ray-backed search of one generation (the final checkpoint is also the first) reports what it
    measured: evaluation took time on the actors, and the phases add up to no more than the run."""
    spec = SearchSpec(score="entropy", score_settings={"resolution": 32}, budgets=Budgets(flops=188e8, layers=91),
                      population=8, iterations=8, generation=8, seed=0)
    with RayBackend(num_workers=1) as b:
        got = run_search(spec, backend=b)
    t = got.summary()["timings"]
    assert set(t) == {"ask", "evaluate", "tell", "checkpoint"}
    assert t["evaluate"] > 0.01 and t["ask"] > 0 and t["tell"] > 0
    assert t["ask"] + t["evaluate"] + t["tell"] <= got.seconds


def test_latency_and_budget() -> None:
    base = make_tasks(1)[0]
    lat = {"batch": 1, "runs": 3, "warmup": 1, "resource": None}
    tasks = [{**base, "height": 128, "width": 128, "latency": lat},
             {**base, "number": 1, "height": 128, "width": 128, "latency": lat, "latency_budget_ms": 1e-6},
             {**base, "number": 2, "height": 128, "width": 128, "latency": {**lat, "resource": LABEL}}]
    # one actor per pool: the default pool and the labelled one share the 2 CPUs
    with RayBackend(num_workers=1) as b:
        ok, rejected, labelled = b.evaluate(tasks)
        pools = {w["resource"] for w in b.workers()}
    assert ok["state"] == "complete" and ok["latency_ms"] > 0 and ok["score"] is not None
    assert rejected["state"] == "rejected" and rejected["reason"] == "latency_ms"
    assert rejected["latency_ms"] > 0 and rejected["score"] is None
    assert labelled["state"] == "complete" and labelled["latency_ms"] > 0
    assert labelled["worker"] != ok["worker"]  # ran on the labelled pool's actor
    assert pools == {None, LABEL}
    assert ok["score"] == labelled["score"] == local([base])[0]["score"]


def test_unknown_resource_is_a_spec_error() -> None:
    t0 = time.perf_counter()
    task = {**make_tasks(1)[0], "latency": {"batch": 1, "runs": 1, "warmup": 0, "resource": "no_such_label"}}
    with RayBackend(num_workers=1) as b:
        with pytest.raises(SpecError, match="no Ray node offers resource 'no_such_label'") as ei:
            b.evaluate([make_tasks(1)[0], task])
        assert b.workers() == [] and not b._pools  # nothing was started for the valid task either
    assert ei.value.field == "latency.resource"
    assert time.perf_counter() - t0 < 10


class KillingBackend(RayBackend):
    """Kills the actor right after a chosen task was submitted to it (``times`` times)."""

    def __init__(self, victim: int, times: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.victim, self.times, self.kills = victim, times, 0

    def _submit(self, slot: Any, task: dict[str, Any]) -> Any:
        ref = super()._submit(slot, task)
        if task["number"] == self.victim and self.kills < self.times:
            self.kills += 1
            ray.kill(slot.handle, no_restart=True)
        return ref


def test_killed_actor_is_replaced_and_task_retried() -> None:
    tasks = make_tasks(8)
    tasks[3] = slow(tasks[3])  # the victim is busy for a while when the kill lands
    ref = local(tasks)
    with KillingBackend(victim=3, times=1, num_workers=2) as b:
        got = b.evaluate(tasks)
        assert b.kills == 1 and b.replaced >= 1
    assert all(r["state"] == "complete" for r in got)
    assert got[3]["attempts"] == 2 and max(r["attempts"] for r in got) >= 2
    assert strip(got, "latency_ms") == strip(ref, "latency_ms")


def test_retries_are_bounded() -> None:
    tasks = make_tasks(3)
    tasks[0] = slow(tasks[0])
    with KillingBackend(victim=0, times=99, num_workers=2, max_retries=1) as b:
        got = b.evaluate(tasks)
    assert got[0]["state"] == "failed" and got[0]["attempts"] == 2 and got[0]["score"] is None
    assert "Actor" in got[0]["reason"]
    assert [r["state"] for r in got[1:]] == ["complete", "complete"]
    assert strip(got[1:]) == strip(local(tasks[1:]))


def test_hung_task_times_out() -> None:
    tasks = make_tasks(2)
    hung_task = {**tasks[1], "latency": {"batch": 1, "runs": 50, "warmup": 0, "resource": None}}  # ~15 s
    with RayBackend(num_workers=2, max_retries=0) as b:
        b.evaluate(tasks)  # both actors started and warm
        b.task_timeout = 1.5  # counted from submission
        t0 = time.perf_counter()
        fast, hung = b.evaluate([tasks[0], hung_task])
        took = time.perf_counter() - t0
        assert b.replaced == 1
    assert fast["state"] == "complete"
    assert hung["state"] == "failed" and hung["reason"].startswith("TimeoutError") and hung["attempts"] == 1
    assert took < 8


def test_recycle_replaces_actors() -> None:
    tasks = make_tasks(10)
    with RayBackend(num_workers=2, recycle_after=3) as b:
        got = b.evaluate(tasks)
        assert b.recycled >= 2
    assert all(r["state"] == "complete" and r["attempts"] == 1 for r in got)
    assert len({r["worker"] for r in got}) > 2  # 10 tasks, 3 per actor: at least 4 actors
    assert strip(got) == strip(local(tasks))


def test_unschedulable_pool_raises_instead_of_hanging() -> None:
    t0 = time.perf_counter()
    with RayBackend(num_workers=1, resources={"zennas_test_absent": 1}, startup_timeout=2) as b:
        with pytest.raises(WorkerPoolError, match="no evaluator actor"):
            b.evaluate(make_tasks(1))
    assert time.perf_counter() - t0 < 15


def test_ray_init_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def fake_init(**kw: Any) -> None:
        if "runtime_env" in kw:  # the staged copies exist while ray.init uploads them
            kw["staged"] = [Path(p).name for p in kw["runtime_env"]["py_modules"] if (Path(p) / "__init__.py").exists()]
        calls.append(kw)

    from ray._private import ray_constants

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(backend_mod, "check_reachable", lambda address, timeout=10.0: None)  # no such hosts
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", ray_constants.ENABLE_RAY_CLUSTER)  # restored after
    for var in ("RAY_ADDRESS", "ZENNAS_RAY_ADDRESS", "ZENNAS_RAY_SHIP_CODE", "ZENNAS_RAY_LOOPBACK",
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
        monkeypatch.delenv(var, raising=False)
    ray_init(num_cpus=3)  # embedded: a new local instance, on loopback
    assert calls[-1] == {"address": "local", "num_cpus": 3, "include_dashboard": False, "log_to_driver": False,
                         "ignore_reinit_error": True}
    assert ray_constants.ENABLE_RAY_CLUSTER is False and os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    monkeypatch.setenv("ZENNAS_RAY_ADDRESS", "ray://head:10001")
    ray_init()
    assert calls[-1]["address"] == "ray://head:10001" and "runtime_env" not in calls[-1]
    assert ray_constants.ENABLE_RAY_CLUSTER is True  # a cluster: Ray's own addressing
    ray_init("10.0.0.2:6379")
    assert calls[-1]["address"] == "10.0.0.2:6379"
    monkeypatch.setenv("ZENNAS_RAY_SHIP_CODE", "1")
    ray_init()
    assert calls[-1]["staged"] == ["zennas", "zennas_workers"]
    monkeypatch.setenv("ZENNAS_RAY_LOOPBACK", "0")  # the explicit setting: Ray's default addressing
    ray_init("local")
    assert calls[-1]["address"] == "local" and ray_constants.ENABLE_RAY_CLUSTER is True


def test_version_mismatch_names_node_field_and_versions(monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    real = backend_mod.driver_versions()
    node = ray.get_runtime_context().get_node_id()
    for field, driver_side in (("zennas", "0.0.0+driver"), ("ray", "1.0.0"), ("python", "2.7.18")):
        monkeypatch.setattr(backend_mod, "driver_versions", lambda f=field, v=driver_side: {**real, f: v})
        t0 = time.perf_counter()
        with RayBackend(num_workers=1) as b:
            with pytest.raises(VersionMismatchError) as ei:
                b.evaluate(make_tasks(1))
        e = ei.value
        assert isinstance(e, WorkerPoolError)
        assert (e.node, e.field, e.driver_version, e.worker_version) == (node, field, driver_side, real[field])
        assert node in str(e) and f"runs {field} {real[field]}, the driver runs {field} {driver_side}" in str(e)
        assert time.perf_counter() - t0 < 30
    # a Python patch release or another torch is not fatal: logged once, the records are complete
    py = real["python"].rsplit(".", 1)[0] + ".999"
    monkeypatch.setattr(backend_mod, "driver_versions", lambda: {**real, "python": py, "torch": "0.0.1"})
    with caplog.at_level("WARNING", logger="zennas_workers.backend"), RayBackend(num_workers=1) as b:
        assert [r["state"] for r in b.evaluate(make_tasks(2))] == ["complete", "complete"]
    assert "other versions than the driver" in caplog.text and "0.0.1" in caplog.text


def test_auto_sized_pool_grows_when_the_cluster_does(monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = make_tasks(6)
    real = ray.cluster_resources
    monkeypatch.setattr(ray, "cluster_resources", lambda: {**real(), "CPU": 1.0})  # a 1-CPU cluster
    with RayBackend() as b:  # no num_workers: sized from the cluster
        b.grow_interval = 3600.0
        first = b.evaluate(tasks)
        assert len(b.workers()) == 1 and b.grown == 0
        monkeypatch.setattr(ray, "cluster_resources", real)  # a node with 1 CPU joined
        b.evaluate(tasks)  # within grow_interval: not looked at
        assert len(b._pools[None].slots) == 1
        b.grow_interval = 0.0
        deadline = time.monotonic() + 30  # the CPUs of earlier tests' killed actors come back lazily
        while b.grown == 0 and time.monotonic() < deadline:
            again = b.evaluate(tasks)
            time.sleep(0.2)
        assert b.grown == 1 and len(b._pools[None].slots) == 2
        deadline = time.monotonic() + 60  # the new actor takes work once it has started
        while len({r["worker"] for r in again}) < 2 and time.monotonic() < deadline:
            again = b.evaluate(tasks)
        assert len(b.workers()) == 2 and len({r["worker"] for r in again}) == 2
        assert strip(again) == strip(first)
    with RayBackend(num_workers=1) as fixed:  # an explicit size never grows
        fixed.grow_interval = 0.0
        fixed.evaluate(tasks)
        fixed.evaluate(tasks)
        assert fixed.grown == 0 and len(fixed.workers()) == 1


def test_gpus_asked_on_a_cpu_cluster_is_a_spec_error() -> None:
    with RayBackend(num_gpus=1) as b:
        with pytest.raises(SpecError, match="no Ray node has a GPU") as ei:
            b.evaluate(make_tasks(1))
        assert not b._pools
    assert ei.value.field == "num_gpus"
    with pytest.raises(SpecError):
        RayBackend(num_gpus=-1)
