"""Every entropy-analytic search reports its certificate; ``zennas bound`` on the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest

from zennas.cost import costs
from zennas.report import render_report
from zennas.score.analytic import analytic_score
from zennas.search import Budgets, SearchSpec, run_search
from zennas.space import get_space
from zennas.space.structure import Structure

optuna.logging.set_verbosity(optuna.logging.WARNING)
MAEDET = Budgets(flops=188e8, layers=91)
WEIGHTS = get_space("detection-k1kxk1").stage_weights


def spec(**kw: object) -> SearchSpec:
    base = {"budgets": MAEDET, "population": 32, "iterations": 1500, "seed": 0, "checkpoint_every": 512}
    base.update(kw)
    return SearchSpec(**base)  # type: ignore[arg-type]


@pytest.mark.timeout(300)
def test_search_reports_bound_and_gap_and_nothing_exceeds_the_bound() -> None:
    r = run_search(spec(iterations=4000, seed=1))
    cert = r.certificate
    assert cert is not None and cert["available"]
    assert r.bound == cert["bound"] and r.best_score <= r.bound
    assert cert["search_best"] <= r.bound
    assert r.gap_pct == pytest.approx(100 * (r.bound - r.best_score) / r.bound, rel=1e-9)
    s = r.summary()
    assert s["bound"] == r.bound and s["gap_pct"] == r.gap_pct and s["certificate"]["relaxation"]
    c = costs(r.best_structure, 480, 480)
    assert c.flops <= 188e8 and c.layers <= 91
    assert analytic_score(r.best_structure, WEIGHTS) == pytest.approx(r.best_score, abs=1e-9)
    html = render_report(s)  # the report states it too
    assert f"{r.bound:.7g}" in html and "gap to the bound" in html
    assert s["best"]["stages"] == r.best_structure.stage_table()


@pytest.mark.timeout(300)
def test_a_better_programme_structure_is_returned_and_said_so() -> None:
    r = run_search(spec(iterations=64))  # far from converged: the programme's structure is better
    cert = r.certificate
    assert cert is not None and cert["better"] and cert["best_from"] == "bound programme"
    assert r.best_structure == Structure.from_dict(cert["structure"]) and r.best_score == cert["score"]
    assert cert["search_best"] < r.best_score <= r.bound
    assert Structure.from_dict(cert["search_best_structure"]) != r.best_structure
    c = costs(r.best_structure, 480, 480)
    assert c.flops <= 188e8 and c.layers <= 91
    assert r.best_costs["flops"] == c.flops


@pytest.mark.timeout(300)
def test_codec_samplers_get_the_codec_relaxation_and_keep_their_best() -> None:
    r = run_search(spec(sampler="nsga2", iterations=400))
    cert = r.certificate
    assert cert is not None and cert["available"] and "best_from" not in cert  # the front stays the front
    assert any("codec" in line for line in cert["relaxation"])
    assert r.pareto_front and all(p["score"] <= r.bound for p in r.pareto_front)
    assert r.best_score == max(p["score"] for p in r.pareto_front) <= r.bound
    assert run_search(spec(score="params", iterations=50)).certificate is None


ZENNAS = [sys.executable, "-m", "zennas.cli"]


@pytest.mark.timeout(300)
def test_cli_bound_json_and_bad_input() -> None:
    p = subprocess.run([*ZENNAS, "bound", "--space", "giraffe-s2d", "--budget-flops", "4e9", "--budget-layers", "24",
                        "--json"], capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    s = Structure.from_dict(out["structure"])
    c = costs(s, 480, 480)
    assert c.flops <= 4e9 and c.layers <= 24
    assert out["score"] == pytest.approx(analytic_score(s, get_space("giraffe-s2d").stage_weights), abs=1e-9)
    assert out["score"] <= out["bound"] and out["relaxation"] and out["budgets"] == {"flops": 4e9, "layers": 24}
    p = subprocess.run([*ZENNAS, "bound", "--budget-flops", "-1"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "budgets.flops" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run([*ZENNAS, "bound", "--space", "nope"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "space" in p.stderr


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("space", "flops", "layers"), [("giraffe-s2d", 4e9, 24), ("detection-k1kxk1", 120e8, 70)])
def test_searches_of_other_spaces_and_budgets_stay_under_their_bound(space: str, flops: float, layers: int) -> None:
    r = run_search(SearchSpec(space=space, budgets=Budgets(flops=flops, layers=layers), population=32,
                              iterations=3000, seed=2))
    cert = r.certificate
    assert cert is not None and cert["available"]
    assert cert["search_best"] <= r.bound and r.best_score <= r.bound and cert["score"] <= r.bound
    assert 0 <= r.gap_pct < 5
