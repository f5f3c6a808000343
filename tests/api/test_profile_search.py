"""A latency-budgeted search over REST, against real ``zennas serve`` processes on both databases:
``latency.profile`` names a stored profile of the submitting tenant (never a file path, never another
tenant's), is checked against the search at submission, and is pinned to the job, so a search killed
and resumed predicts with the profile it was submitted with even after the stored one changed."""

from __future__ import annotations

import dataclasses
import io
import json
import time
import uuid
import zipfile
from typing import Any

import pytest
import sqlalchemy as sa
from service_helpers import DBS, assert_problem, base_env, checkpointed, make_engine, wait_mid_search, wait_state

pytest.importorskip("scipy")
pytestmark = pytest.mark.slow

# the profile fixture's space and input size (tests/api/conftest.py: giraffe-s2d at 64x64, torch)
SEARCH = {"space": "giraffe-s2d", "resolution": 64, "population": 16, "iterations": 480, "generation": 16,
          "checkpoint_every": 512, "seed": 3}


def budget_ms(doc: dict[str, Any]) -> float:
    """Twice the profile's prediction for the space's start structure."""
    from zennas.latency import Predictor
    from zennas.latency.profile import profile_from_dict
    from zennas.space.space import get_space

    return 2.0 * Predictor(profile_from_dict(doc)).predict(get_space("giraffe-s2d").start)


def body(name: str, budget: float, **kw: Any) -> dict[str, Any]:
    """A latency-budgeted search of the profile's space and size, its FLOPs and layers capped at the
    start's (at 64x64). On a shared 2-core machine the same structure measures up to ~35 % slower in
    one minute than in the next, so a winner predicted at the budget's edge can fail verification
    (seen here: predicted 3.18 ms, measured 3.36, budget 3.25); with both caps the top candidates were
    predicted at about half the budget (0.51-0.52 of it; measured 0.50-0.56, seed 3). That the latency
    budget binds, and a winner measured over it, are tested in tests/latency/test_latency.py."""
    from zennas.cost import costs
    from zennas.space.space import get_space

    c = costs(get_space("giraffe-s2d").start, 64, 64)
    lat = {"profile": name, "verify_top_k": 3, **kw.pop("latency", {})}
    return {**SEARCH, "budgets": {"latency_ms": budget, "flops": c.flops, "layers": c.layers}, "latency": lat, **kw}


@pytest.mark.timeout(180)
def test_latency_budgeted_search_over_rest(service: Any, profile_doc: dict[str, Any]) -> None:
    name = "cpu-" + uuid.uuid4().hex[:8]
    budget = budget_ms(profile_doc)
    with service.client("a") as a:
        assert a.post("/v1/profiles", json={"name": name, "profile": profile_doc}).status_code == 201
        r = a.post("/v1/searches", json=body(name, budget))
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["spec"]["latency"]["profile"] == name
        assert job["spec"]["latency"]["profile_checksum"] == profile_doc["checksum"]  # pinned
        done = wait_state(a, job["id"], timeout=120)
        assert done["state"] == "succeeded", done["error"]
        result = done["result"]
        lat = result["latency"]
        assert lat["profile"]["checksum"] == profile_doc["checksum"] and lat["profile"]["ref"] == name
        assert lat["winner"] is not None and 1 <= len(lat["candidates"]) <= 3, lat
        winner = lat["candidates"][lat["winner"]]
        assert winner["measured_ms"] <= budget and winner["predicted_ms"] <= budget
        assert result["best"]["structure"] == winner["structure"]
        # measured up to the winner (latency.verify "until-met"; some perhaps while the search ran), every
        # better-ranked one over the budget, the rest reported as not measured
        assert all(not c["skipped"] and not c["meets_budget"] for c in lat["candidates"][:lat["winner"]]), lat
        assert lat["measured"] == sum(not c["skipped"] for c in lat["candidates"]), lat
        assert all(c["predicted_ms"] > 0 and (c["skipped"] if c["measured_ms"] is None else c["measured_ms"] > 0)
                   for c in lat["candidates"]), lat
        assert result["timings"]["verify"] > 0 and result["seconds"] >= result["timings"]["verify"]
        # the bundle's summary and report carry the predicted-vs-measured table
        z = zipfile.ZipFile(io.BytesIO(a.get(f"/v1/searches/{job['id']}/backbone").content))
        assert json.loads(z.read("search.json"))["latency"] == lat
        report = z.read("report.html").decode()
        assert "Latency on the device" in report and f"{winner['measured_ms']:.4g}" in report
        # the job's copy of the profile goes with it
        pinned = sa.text("SELECT count(*) FROM search_profiles WHERE search_id = :i")
        with service.db().connect() as conn:
            assert conn.execute(pinned, {"i": job["id"]}).scalar() == 1
        assert a.delete(f"/v1/searches/{job['id']}").status_code == 204
        with service.db().connect() as conn:
            assert conn.execute(pinned, {"i": job["id"]}).scalar() == 0


@pytest.mark.timeout(120)
def test_submission_refuses_what_the_search_cannot_use(service: Any, profile_doc: dict[str, Any]) -> None:
    name = "cpu-" + uuid.uuid4().hex[:8]
    budget = budget_ms(profile_doc)
    with service.client("a") as a, service.client("b") as b:
        assert a.post("/v1/profiles", json={"name": name, "profile": profile_doc}).status_code == 201
        before = len(b.get("/v1/searches").json()["items"]), len(a.get("/v1/searches").json()["items"])
        # another tenant's profile is exactly as unknown as one that does not exist
        theirs = assert_problem(b.post("/v1/searches", json=body(name, budget)), 422, "latency.profile")
        other = "none-" + uuid.uuid4().hex[:8]
        none = assert_problem(b.post("/v1/searches", json=body(other, budget)), 422, "latency.profile")
        assert theirs["detail"] == none["detail"].replace(other, name)
        # a file path is never read by the service
        for path in ("/etc/hostname", "../cpu.json", "profiles/cpu.json"):
            p = assert_problem(a.post("/v1/searches", json=body(path, budget)), 422, "latency.profile")
            assert "file path" in p["detail"], p
        # a profile built for another input size, batch or space (zennas.latency.require_fit)
        only = {"budgets": {"latency_ms": budget}}  # the caps of body() are for 64x64 and this space
        assert_problem(a.post("/v1/searches", json=body(name, budget, resolution=96, **only)), 422,
                       "latency.profile.height")
        assert_problem(a.post("/v1/searches", json=body(name, budget, latency={"batch": 2}, **only)), 422,
                       "latency.profile.batch")
        assert_problem(a.post("/v1/searches", json=body(name, budget, space="detection-k1kxk1", **only)), 422,
                       "latency.profile.space")
        # a budget the prediction says no structure of the space meets
        assert_problem(a.post("/v1/searches", json=body(name, 0.01)), 422, "budgets.latency_ms")
        after = len(b.get("/v1/searches").json()["items"]), len(a.get("/v1/searches").json()["items"])
        assert after == before  # nothing was queued


def _deterministic(lat: dict[str, Any]) -> list[tuple[Any, ...]]:
    """What a verification's record holds that does not depend on the device's timings."""
    return [(c["number"], c["score"], c["predicted_ms"], c["structure"]) for c in lat["candidates"]]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", DBS)
def test_kill_then_resume_uses_the_pinned_profile(kind: str, databases: Any, spawn: Any, tmp_path: Any,
                                                 profile_doc: dict[str, Any]) -> None:
    """SIGKILL mid-search, the stored profile replaced meanwhile (as data: one whose predictions are
    10x higher), restart: the search resumes with the profile it was submitted with and ends with the
    top-k of an uninterrupted run with that profile; a new submission sees the replaced one."""
    from zennas.latency.profile import profile_from_dict
    from zennas.search import Search, SearchSpec

    db_url = databases.new(kind)
    env = base_env(db_url, tmp_path / "artifacts", dev_mode="true", lease_seconds=3, heartbeat_seconds=0.5)
    engine = make_engine(db_url)
    budget = budget_ms(profile_doc)
    # ~5-10 s at the few thousand candidates/s a shared 2-core machine gives; a checkpoint every 1024
    spec = body("cpu", budget, population=32, iterations=30_000, checkpoint_every=1024, seed=11)
    n = spec["iterations"]
    try:
        first = spawn(env)
        with first.client() as c:
            assert c.post("/v1/profiles", json={"name": "cpu", "profile": profile_doc}).status_code == 201
            r = c.post("/v1/searches", json=spec)
            assert r.status_code == 202, r.text
            jid = r.json()["id"]
            stored_spec = r.json()["spec"]
            wait_mid_search(c, engine, jid, n, time.monotonic() + 120)
        first.kill()  # SIGKILL: no drain
        assert 0 < checkpointed(engine, jid) < n

        original = profile_from_dict(profile_doc)
        assert original.overhead is not None
        o = original.overhead
        slow = dataclasses.replace(original, overhead=dataclasses.replace(  # every prediction x10
            o, scale=o.scale * 10, per_op_ms=o.per_op_ms * 10, offset_ms=o.offset_ms * 10,
            per_mb_ms=(o.per_mb_ms or 0.0) * 10))
        with engine.begin() as c:  # the tenant's stored profile changes while the search is down
            c.execute(sa.text("UPDATE latency_profiles SET document = :d, checksum = :c WHERE name = 'cpu'"),
                      {"d": slow.to_json(), "c": slow.checksum})

        second = spawn(env)
        with second.client() as c:
            done = wait_state(c, jid, timeout=180)
            assert done["state"] == "succeeded", done
            assert done["attempts"] >= 2
            # the stored profile did change: the same search submitted now is refused by its prediction
            assert_problem(c.post("/v1/searches", json=spec), 422, "budgets.latency_ms")
        lat = done["result"]["latency"]
        assert lat["profile"]["checksum"] == original.checksum
        # the reference measures after its search (latency.speculate off): on a loaded 2-core machine a
        # wall-clock timing beside the search's own work ran 2x the prediction and failed verification
        # (seen in a .ci/run with other work running); only its deterministic part is compared
        ref_spec = SearchSpec.from_dict({**stored_spec, "latency": {**stored_spec["latency"], "speculate": False}})
        ref = Search(ref_spec, profile=original).run()
        assert ref.latency is not None
        assert _deterministic(lat) == _deterministic(ref.latency)
        assert done["result"]["counts"] == ref.summary()["counts"]
        assert done["result"]["best"]["structure"] == lat["candidates"][lat["winner"]]["structure"]
    finally:
        engine.dispose()
