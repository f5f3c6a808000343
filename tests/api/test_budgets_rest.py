"""REST budgets per field (issue 14 item 5): a budget left out falls back to the space's default, an
explicit ``null`` removes it; on SQLite and PostgreSQL (the stored spec must keep the difference)."""

from __future__ import annotations

from typing import Any

import pytest
from service_helpers import SMALL, wait_state

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_absent_budget_defaults_and_null_removes(service: Any) -> None:
    with service.client("a") as c:
        r = c.post("/v1/searches", json={**SMALL, "budgets": {"flops": 1e12}})
        assert r.status_code == 202, r.text
        kept = r.json()
        assert kept["spec"]["budgets"]["removed"] == []
        r = c.post("/v1/searches", json={**SMALL, "iterations": 960, "budgets": {"flops": 1e12, "layers": None}})
        assert r.status_code == 202, r.text
        removed = r.json()
        assert removed["spec"]["budgets"]["removed"] == ["layers"]
        for job in (kept, removed):
            assert wait_state(c, job["id"], ("succeeded",), timeout=180)["state"] == "succeeded"
        # read back from the database: the difference survives storage
        got = c.get(f"/v1/searches/{removed['id']}").json()
        assert got["spec"]["budgets"]["removed"] == ["layers"]
        best_kept = c.get(f"/v1/searches/{kept['id']}/backbone", params={"format": "json"})
        assert best_kept.status_code == 200
        from zennas.cost import costs
        from zennas.space.formats import structure_from_obj

        assert costs(structure_from_obj(best_kept.json())).layers <= 91  # the space's default still binds
