"""``/v1/profiles`` against real ``zennas serve`` processes: upload, list, read, tenant isolation, and
strict validation of the document (schema, checksum, completeness)."""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import pytest
from service_helpers import assert_problem

pytest.importorskip("scipy")
pytestmark = pytest.mark.slow


@pytest.mark.timeout(180)
def test_upload_list_read_and_tenant_isolation(service: Any, profile_doc: dict[str, Any]) -> None:
    name = "cpu-" + uuid.uuid4().hex[:8]
    with service.client("a") as a, service.client("b") as b:
        r = a.post("/v1/profiles", json={"name": name, "profile": profile_doc})
        assert r.status_code == 201, r.text
        assert r.json()["checksum"] == profile_doc["checksum"]
        assert r.json()["summary"]["space"] == "giraffe-s2d" and r.json()["summary"]["resolution"] == [64, 64]
        assert name in [p["name"] for p in a.get("/v1/profiles").json()["items"]]
        got = a.get(f"/v1/profiles/{name}", params={"document": "true"}).json()
        assert got["document"] == profile_doc
        assert_problem(a.post("/v1/profiles", json={"name": name, "profile": profile_doc}), 409, "name")
        # another tenant neither sees nor reads it
        assert name not in [p["name"] for p in b.get("/v1/profiles").json()["items"]]
        assert_problem(b.get(f"/v1/profiles/{name}"), 404, "name")
        # ... and may use the same name for its own
        assert b.post("/v1/profiles", json={"name": name, "profile": profile_doc}).status_code == 201


@pytest.mark.timeout(120)
def test_bad_profiles_are_refused_naming_the_field(service: Any, profile_doc: dict[str, Any]) -> None:
    with service.client("a") as a:
        def post(doc: Any, name: str = "p" + uuid.uuid4().hex[:8], **extra: Any) -> Any:
            return a.post("/v1/profiles", json={"name": name, "profile": doc, **extra})

        edited = copy.deepcopy(profile_doc)
        for f in ("p10_ms", "median_ms", "p90_ms"):
            edited["tables"][0][f][0] *= 0.5
        assert_problem(post(edited), 422, "profile.checksum")
        extra = {**copy.deepcopy(profile_doc), "surprise": 1}
        assert_problem(post(extra), 422, "profile.surprise")
        wrong = {**copy.deepcopy(profile_doc), "threads": 0}
        assert_problem(post(wrong), 422, "profile.threads")
        assert_problem(post(profile_doc, name="../etc"), 422, "name")
        assert_problem(post(profile_doc, owner="x"), 422, "owner")
        assert_problem(a.get("/v1/profiles/none-such"), 404, "name")


def test_an_incomplete_profile_is_refused(service: Any, tmp_path: Path) -> None:
    from zennas.latency import BuildSpec, build_profile

    class Stop(Exception):
        pass

    out = tmp_path / "partial.json"

    def progress(ev: dict[str, Any]) -> None:
        if ev["cells_done"] >= 3:
            raise Stop

    spec = BuildSpec(runtime="torch", space="giraffe-s2d", height=64, width=64, grid_ratio=4.0, plan_samples=10,
                     calibration=2, warmup=0, min_runs=1, max_runs=1, min_time_s=0.0, network_runs=1)
    with pytest.raises(Stop):
        build_profile(spec, save=lambda p: p.save(out), progress=progress, save_every_s=0.0)
    import json

    with service.client("a") as a:
        r = a.post("/v1/profiles", json={"name": "partial", "profile": json.loads(out.read_text())})
        assert_problem(r, 422, "profile.complete")
