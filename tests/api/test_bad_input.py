"""Bad input, on both databases: every case is a 4xx problem document (``application/problem+json``)
whose ``errors[0].field`` names the field at fault; never a 5xx, and never a half-stored job."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from service_helpers import SMALL, assert_problem

pytestmark = pytest.mark.slow

SPACE_DOC_BAD = {"name": "inline-bad", "bogus_key": 1}

# (id, request kwargs for POST /v1/searches, expected status, expected errors[0].field)
CASES: list[tuple[str, dict[str, Any], int, str]] = [
    ("malformed-json", {"content": b'{"population": 64,', "headers": {"content-type": "application/json"}}, 422,
     "body"),
    ("not-an-object", {"json": [1, 2]}, 422, "body"),
    ("unknown-field", {"json": {"populaton": 64}}, 422, "populaton"),
    ("unknown-nested-field", {"json": {"budgets": {"flop": 1e9}}}, 422, "budgets.flop"),
    ("population-1", {"json": {"population": 1}}, 422, "population"),
    ("population-over-service-limit", {"json": {"population": 5000}}, 422, "population"),
    ("iterations-0", {"json": {"iterations": 0}}, 422, "iterations"),
    ("iterations-over-service-limit", {"json": {"iterations": 3_000_000}}, 422, "iterations"),
    ("checkpoint-every-0", {"json": {"checkpoint_every": 0}}, 422, "checkpoint_every"),
    ("resolution-100", {"json": {"resolution": 100}}, 422, "resolution"),
    ("height-not-multiple-of-32", {"json": {"height": 500}}, 422, "height"),
    ("resolution-over-service-limit", {"json": {"resolution": 4096}}, 422, "resolution"),
    ("width-over-service-limit", {"json": {"height": 64, "width": 4096}}, 422, "width"),
    ("negative-budget", {"json": {"budgets": {"flops": -1}}}, 422, "budgets.flops"),
    ("zero-layers-budget", {"json": {"budgets": {"layers": 0}}}, 422, "budgets.layers"),
    ("string-population", {"json": {"population": "many"}}, 422, "population"),
    ("unknown-score", {"json": {"score": "magic"}}, 422, "score"),
    ("unknown-sampler", {"json": {"sampler": "annealing"}}, 422, "sampler"),
    ("unknown-objective", {"json": {"objectives": ["speed"]}}, 422, "objectives[0]"),
    ("unknown-space", {"json": {"space": "no-such-space"}}, 422, "space"),
    ("space-doc-unknown-key", {"json": {"space_doc": SPACE_DOC_BAD}}, 422, "space_doc.bogus_key"),
    ("unmeetable-flops-budget", {"json": {"budgets": {"flops": 1}}}, 422, "budgets.flops"),
    ("unmeetable-params-budget", {"json": {"budgets": {"params": 10}}}, 422, "budgets.params"),
    ("bad-budget-scope", {"json": {"budgets": {"scope": "neck"}}}, 422, "budgets.scope"),
    ("bad-detector-depth", {"json": {"detector": {"depth": 0}}}, 422, "detector.depth"),
    ("detector-gn-channels", {"json": {"detector": {"type": "gfl", "neck_channels": 48}}}, 422,
     "detector.neck_channels"),
    # 19 GFLOPs on the backbone is plenty, but not for the backbone + GFPN-D7 + GFL head at 480
    ("unmeetable-detector-budget", {"json": {"budgets": {"flops": 1.9e10, "scope": "detector"}}}, 422,
     "budgets.flops"),
    ("bad-start-structure", {"json": {"start": "not a structure"}}, 422, "start"),
    ("bad-score-settings", {"json": {"score": "zen", "score_settings": {"nonsense": 1}}}, 422,
     "score_settings.nonsense"),
    ("oversize-body", {"content": json.dumps({"space_doc": {"name": "x" * 200_000}}).encode(),
                       "headers": {"content-type": "application/json"}}, 413, "body"),
    ("oversize-chunked-body", {"content": iter([b'{"space_doc": {"name": "', b"x" * 200_000, b'"}}']),
                               "headers": {"content-type": "application/json"}}, 411, "content-length"),
    ("idempotency-key-too-long", {"json": SMALL, "headers": {"Idempotency-Key": "k" * 201}}, 422,
     "idempotency-key"),
]


@pytest.fixture(scope="module")
def bad_client(service: Any) -> Iterator[tuple[Any, httpx.Client, str]]:
    t = "bad" + uuid.uuid4().hex[:8]
    with service.server.client(service.new_key(t)) as c:
        yield service, c, t


def job_count(service: Any, c: httpx.Client, tenant: str) -> tuple[int, int]:
    r = c.get("/v1/searches", params={"limit": 200})
    assert r.status_code == 200
    with service.db().connect() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM jobs WHERE tenant = :t"), {"t": tenant}).scalar_one()
    return len(r.json()["items"]), n


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("kwargs", "status", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_submission(bad_client: tuple[Any, httpx.Client, str], kwargs: dict[str, Any], status: int,
                        field: str) -> None:
    service, c, t = bad_client
    before = job_count(service, c, t)
    r = c.post("/v1/searches", **kwargs)
    assert r.status_code < 500, r.text
    body = assert_problem(r, status)
    assert body["errors"][0]["field"].replace("_", "-") == field.replace("_", "-"), body
    assert body["errors"][0]["message"]
    assert job_count(service, c, t) == before  # nothing half-stored


@pytest.mark.timeout(60)
def test_valid_submission_after_bad_ones(bad_client: tuple[Any, httpx.Client, str]) -> None:
    """The same client and tenant still submit fine (the count check above is not vacuous)."""
    service, c, t = bad_client
    before = job_count(service, c, t)
    r = c.post("/v1/searches", json=SMALL)
    assert r.status_code == 202, r.text
    assert job_count(service, c, t) == (before[0] + 1, before[1] + 1)
    c.post(f"/v1/searches/{r.json()['id']}/cancel")


@pytest.mark.timeout(60)
def test_bad_requests_elsewhere(bad_client: tuple[Any, httpx.Client, str]) -> None:
    _, c, _ = bad_client
    cases: list[tuple[str, str, dict[str, Any], int, str | None]] = [
        ("GET", "/v1/searches", {"params": {"limit": 1000}}, 422, "limit"),
        ("GET", "/v1/searches", {"params": {"limit": "x"}}, 422, "limit"),
        ("GET", "/v1/searches", {"params": {"cursor": "!!!"}}, 400, "cursor"),
        ("GET", "/v1/searches/nope", {}, 404, "search_id"),
        ("GET", "/v1/searches/nope/trials", {"params": {"offset": -1}}, 422, "offset"),
        ("POST", "/v1/score", {"json": {"structure": "x", "resolution": 100000}}, 422, "resolution"),
        ("POST", "/v1/score", {"json": {}}, 422, "structure"),
        ("POST", "/v1/score", {"content": b"{", "headers": {"content-type": "application/json"}}, 422, "body"),
        ("POST", "/v1/session", {"json": {"api_key": ""}}, 422, "api_key"),
        ("PUT", "/v1/searches", {"json": {}}, 405, None),
        ("GET", "/v1/nothing-here", {}, 404, None),
    ]
    for method, path, kw, status, field in cases:
        r = c.request(method, path, **kw)
        assert r.status_code < 500, (method, path, r.text)
        assert_problem(r, status, field)
