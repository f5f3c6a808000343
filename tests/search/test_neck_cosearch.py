"""Neck co-search: the chosen neck is the best-scoring feasible GFPN of the space's choices, its score
is the closed-form neck entropy, and the search returns a whole detector within budget."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from zennas.detector import DetectorSettings, detector_costs
from zennas.detector.settings import resolve_neck
from zennas.errors import SpecError
from zennas.score.neck import neck_entropy_analytic
from zennas.search import Budgets, SearchSpec, run_search
from zennas.search.neck import NECK_SCORE, make_neck_chooser
from zennas.search.output import write_outputs
from zennas.space import get_space, load_structure
from zennas.space.structure import Neck

pytest.importorskip("optuna")

SPACE = get_space("giraffe-s2d-gfpn")
H = W = 256


def _spec(flops: float, **kw: object) -> SearchSpec:
    base = dict(space="giraffe-s2d-gfpn", score=NECK_SCORE, height=H, width=W,
                budgets=Budgets(flops=flops, layers=32, scope="detector"), population=16, iterations=300,
                seed=1, warmup_iterations=0)
    base.update(kw)
    return SearchSpec(**base)  # type: ignore[arg-type]


def _brute_force(structure, flops_budget: float) -> tuple[float, DetectorSettings | None]:  # type: ignore[no-untyped-def]
    best: tuple[float, DetectorSettings | None] = (-math.inf, None)
    assert SPACE.neck is not None
    for d in SPACE.neck.depths:
        for w in SPACE.neck.widths:
            det = DetectorSettings(gfpn_depth=d, gfpn_width=float(w))
            if detector_costs(structure, det, H, W).total.flops > flops_budget:
                continue
            score = neck_entropy_analytic(structure, det).score
            if score > best[0]:
                best = (score, det)
    return best


@pytest.mark.parametrize("budget", [2.0e10, 3.5e10, 1.0e12])
def test_chooser_picks_the_best_feasible_neck(budget: float) -> None:
    spec = _spec(budget)
    chooser = make_neck_chooser(spec, SPACE, SPACE.start, spec.budgets)
    structures = [SPACE.start, replace(SPACE.start, blocks=(*SPACE.start.blocks[:-1],
                                                            SPACE.start.blocks[-1]._replace(out_channels=512)))]
    for s in structures:
        b = detector_costs(s, DetectorSettings(), H, W).backbone
        ch = chooser.choose(s, b.flops, b.params)
        score, det = _brute_force(s, budget)
        if det is None:
            assert not ch.feasible
            continue
        assert ch.feasible and ch.settings == det
        assert ch.score == pytest.approx(score, rel=1e-12)  # the fast path is the closed form
        assert b.flops + ch.flops == pytest.approx(detector_costs(s, det, H, W).total.flops, rel=1e-12)


@pytest.mark.timeout(120)
def test_cosearch_returns_a_detector_within_budget(tmp_path: Path) -> None:
    budget = 3.0e10
    res = run_search(_spec(budget))
    det = DetectorSettings(gfpn_depth=res.best_costs["neck_choice"]["gfpn_depth"],
                           gfpn_width=res.best_costs["neck_choice"]["gfpn_width"])
    total = detector_costs(res.best_structure, det, H, W).total.flops
    assert total <= budget and res.best_costs["detector"]["total"]["flops"] == pytest.approx(total, rel=1e-12)
    assert res.best_score == pytest.approx(neck_entropy_analytic(res.best_structure, det).score, rel=1e-12)
    assert res.evaluated > 0

    # the chosen neck travels with the structure written out: the result, its summary, --out's structure.json
    chosen = Neck("gfpn", det.gfpn_depth, det.gfpn_width)
    assert res.best_structure.neck == chosen
    assert res.summary()["best"]["structure"]["neck"] == chosen.to_dict()
    out = write_outputs(res, tmp_path / "out")
    assert load_structure(out / "structure.json") == res.best_structure
    assert resolve_neck(load_structure(out / "structure.json").neck) == ("gfpn", det.gfpn_depth, det.gfpn_width)


def test_cosearch_needs_detector_scope_and_a_gfpn() -> None:
    from zennas.search import Search

    with pytest.raises(SpecError) as ei:
        Search(_spec(3e10, budgets=Budgets(flops=3e10, layers=32)))
    assert ei.value.field == "budgets.scope"
    with pytest.raises(SpecError) as ei:
        Search(_spec(3e10, detector=DetectorSettings(neck="fpn")))
    assert ei.value.field == "detector.neck"
