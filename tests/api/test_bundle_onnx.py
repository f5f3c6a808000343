"""The bundle's ONNX option over HTTP, against a real ``zennas serve``: a tiny neck co-search, then
``GET .../backbone?onnx=detector``. The zip's structure carries the chosen neck, its config uses it, its
ONNX runs in onnxruntime and matches the mmdet model built from that config; the file is built once,
counted in the tenant's stored bytes, and a detector over the service's limits is refused before
anything is built."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from service_helpers import SMALL, Server, assert_problem, base_env, make_engine, wait_state

from zennas.detector import DetectorSettings, detector_costs
from zennas.detector.cost import dense_head_cost
from zennas.space import get_space

pytest.importorskip("mmdet")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

SPACE = "giraffe-s2d-gfpn"
TINY = 128  # the search's input size: the smallest a GFPN takes unpadded (P7 = stride 128)
TINY_CH = 64  # neck and head channels of the tiny detector (GroupNorm(32) needs 2 values a group at P7, 1x1)
BIG, BIG_CH = 512, 256  # a detector whose head alone is over the server's compute limit below


def _budget(resolution: int, channels: int) -> float:
    """Room around the start structure with the space's smallest neck (GFPN depth 2, width 0.5), and a
    little more: the co-search has a choice, but of small necks (a GFPN's params grow fast with its size,
    and so does the ONNX file: depth 7 width 1.0 here is 62 M params)."""
    start = get_space(SPACE).start
    smallest = DetectorSettings(gfpn_depth=2, gfpn_width=0.5, neck_channels=channels)
    return 1.3 * detector_costs(start, smallest, resolution, resolution).total.flops


def _search(c: Any, resolution: int, channels: int, flops: float) -> str:
    body = {"space": SPACE, "score": "neck-entropy-analytic", "resolution": resolution, **SMALL,
            "budgets": {"flops": flops, "scope": "detector"}, "detector": {"neck_channels": channels}}
    r = c.post("/v1/searches", json=body)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _leaves(obj: Any) -> list[Any]:
    return [obj] if isinstance(obj, torch.Tensor) else [t for o in obj for t in _leaves(o)]


@pytest.mark.slow
@pytest.mark.mmdet
@pytest.mark.postgres
@pytest.mark.timeout(240)
def test_bundle_offers_the_whole_detector_as_onnx(tmp_path: Path, databases: Any,
                                                  spawn: Callable[..., Server]) -> None:
    from zennas_api.auth import create_key

    budget = _budget(TINY, TINY_CH)
    # compute limit: the tiny detector's conv MACs are below its FLOPs, below its budget; the big one's head
    # alone is above it (dense_head_cost: what the head costs whatever the backbone), and its memory estimate
    # is below the default 2 GiB (a small neck), so it is the compute check that refuses it
    big_head = dense_head_cost("gfl", channels=BIG_CH, num_classes=80, levels=(3, 4, 5, 6, 7), height=BIG,
                               width_px=BIG).conv_macs
    gmacs = budget / 1e9
    assert big_head / 1e9 > gmacs
    db_url = databases.new("postgres")
    artifacts = tmp_path / "artifacts"
    server = spawn(base_env(db_url, artifacts, max_score_gmacs=gmacs))
    engine = make_engine(db_url)
    try:
        key = create_key(engine, "a")
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as c:
            jid = _search(c, TINY, TINY_CH, budget)
            big = _search(c, BIG, BIG_CH, _budget(BIG, BIG_CH))
            job = wait_state(c, jid)
            assert job["state"] == "succeeded", job
            neck = job["result"]["best"]["structure"]["neck"]  # the service's stored best structure carries it
            choice = job["result"]["best"]["costs"]["neck_choice"]
            assert neck == {"type": "gfpn", "depth": choice["gfpn_depth"], "width": choice["gfpn_width"]}

            assert_problem(c.get(f"/v1/searches/{jid}/backbone", params={"onnx": "yes"}), 422, "onnx")
            assert_problem(c.get(f"/v1/searches/{jid}/backbone", params={"onnx": "detector", "format": "json"}),
                           422, "onnx")
            stored_before = _stored(engine, jid)
            t0 = time.perf_counter()
            r = c.get(f"/v1/searches/{jid}/backbone", params={"onnx": "detector"})
            first_s = time.perf_counter() - t0
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "application/zip"
            z = zipfile.ZipFile(io.BytesIO(r.content))
            manifest = json.loads(z.read("manifest.json"))
            rec = manifest["onnx"]
            assert rec["parity"]["ok"] and rec["parity"]["relative"] <= 1e-4, rec["parity"]
            assert set(manifest["files"]) >= {"onnx/detector.onnx", "onnx/README.md", "structure.json",
                                              rec["config"]}
            assert "of the output's scale" in z.read("onnx/README.md").decode()
            assert json.loads(z.read("structure.json"))["neck"] == neck

            # counted in the tenant's quota: what the option's directory and zip hold on disk
            charged = _stored(engine, jid) - stored_before
            on_disk = sum(p.stat().st_size for p in (artifacts / f"{jid}+onnx-detector").rglob("*")
                          if p.is_file() and not p.name.startswith(".")) + len(r.content)
            assert charged == on_disk, (charged, on_disk)

            # built once: the second download is the same file, not charged again
            t0 = time.perf_counter()
            again = c.get(f"/v1/searches/{jid}/backbone", params={"onnx": "detector"})
            assert again.status_code == 200 and again.content == r.content
            assert time.perf_counter() - t0 < first_s / 2
            assert _stored(engine, jid) - stored_before == charged
            plain = c.get(f"/v1/searches/{jid}/backbone")  # the plain bundle is unchanged: no ONNX in it
            assert plain.status_code == 200
            assert not any(n.startswith("onnx/") for n in zipfile.ZipFile(io.BytesIO(plain.content)).namelist())

            # over the compute limit: refused before anything is built
            assert wait_state(c, big)["state"] == "succeeded"
            body = assert_problem(c.get(f"/v1/searches/{big}/backbone", params={"onnx": "detector"}), 422, "onnx")
            assert "GMACs" in body["detail"]
            assert not (artifacts / f"{big}+onnx-detector").exists()
    finally:
        engine.dispose()

    # the ONNX from the zip, in onnxruntime, against the mmdet model built from the zip's config
    from zennas.mmdet.detector_export import load_detector

    z.extractall(tmp_path / "bundle")
    model, _ = load_detector(tmp_path / "bundle" / rec["config"])  # seed 0: the weights the export drew
    sess = ort.InferenceSession(str(tmp_path / "bundle" / "onnx" / "detector.onnx"), providers=["CPUExecutionProvider"])
    shape = sess.get_inputs()[0].shape
    assert shape == [1, 3, TINY, TINY] == rec["input"]["shape"]
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(7))
    got = sess.run(None, {"image": x.numpy()})
    with torch.no_grad():
        want = [t.numpy() for t in _leaves(model(x, mode="tensor"))]
    assert [o.name for o in sess.get_outputs()] == [o["name"] for o in rec["outputs"]]
    assert len(got) == len(want) == 10  # GFL: cls and box maps of P3..P7
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape
        assert float(abs(a - b).max()) <= 1e-4 * float(abs(b).max())


def _stored(engine: sa.Engine, jid: str) -> int:
    with engine.connect() as c:
        return int(c.execute(sa.text("SELECT stored_bytes FROM jobs WHERE id = :id"), {"id": jid}).scalar_one())


# -- the quota, in process (no export runs: both refusals come before it) ------------------------------
def _job(engine: sa.Engine, stored: int) -> dict[str, Any]:
    from zennas_api.db import jobs
    from zennas_api.queue import JobQueue

    from zennas.search import SearchSpec

    job, _ = JobQueue(engine).create("t", SearchSpec(space=SPACE).to_dict())
    with engine.begin() as c:
        c.execute(jobs.update().where(jobs.c.id == job.id).values(stored_bytes=stored))
    return {"id": job.id, "tenant": "t", "spec": job.spec}


@pytest.mark.timeout(60)
def test_quota_refuses_before_building_and_expiry_releases_the_charge(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from zennas_api.bundle import CHARGED, expire_artifacts, variant_dir
    from zennas_api.db import migrate
    from zennas_api.onnx_bundle import OPTION, ensure_onnx_bundle
    from zennas_api.queue import QueueLimit
    from zennas_api.storage import charge_artifact, release_artifact

    from zennas.admission import Limits, estimate_detector_export
    from zennas.space.structure import Neck

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url)
    engine = make_engine(url)
    artifacts = tmp_path / "artifacts"
    try:
        start = get_space(SPACE).start
        det = DetectorSettings(gfpn_depth=2, gfpn_width=0.5, neck_channels=TINY_CH)
        summary = {"best": {"structure": start.with_neck(Neck("gfpn", 2, 0.5)).to_dict(),
                            "costs": {"detector": {"detector": det.to_dict()}}},
                   "spec": {"height": TINY, "width": TINY}}
        need = 2 * estimate_detector_export(start, det, TINY, TINY).file_bytes
        quota = 1 << 30
        job = _job(engine, quota - need + 1)  # one byte short of room for the file and its zipped copy
        settings = SimpleNamespace(limits=Limits(), max_storage_per_tenant=quota)
        with pytest.raises(QueueLimit) as ei:
            ensure_onnx_bundle(artifacts, engine, settings, job, summary)
        assert (ei.value.field, ei.value.status) == ("storage", 429)
        assert not artifacts.exists() or not any(artifacts.iterdir())  # nothing built

        # a built option's charge is released when its files expire (and never below zero)
        d = variant_dir(artifacts, job["id"], OPTION)
        d.mkdir(parents=True)
        (d / "manifest.json").write_text("{}")
        (d / CHARGED).write_text("1000")
        charge_artifact(engine, job["id"], 1000)
        assert _stored(engine, job["id"]) == quota - need + 1 + 1000
        released: list[tuple[str, int]] = []

        def release(jid: str, n: int) -> None:
            released.append((jid, n))
            release_artifact(engine, jid, n)

        assert expire_artifacts(artifacts, 60, now=time.time() + 120, release=release) == [d.name]
        assert released == [(job["id"], 1000)] and _stored(engine, job["id"]) == quota - need + 1
        release_artifact(engine, job["id"], 1 << 40)
        assert _stored(engine, job["id"]) == 0
    finally:
        engine.dispose()
