"""The search's evaluator: every term equals the library's figure for the same structure, budgets
reject exactly what breaks them, and a closed-form score is the scorer's (up to summation order)."""

from __future__ import annotations

import random

import pytest

from zennas.cost import costs
from zennas.errors import SpecError
from zennas.score import make_scorer
from zennas.search.evaluate import CACHE_LIMIT, Evaluator, Flops, Layers, Params, positions, search_evaluator
from zennas.space import Mutator, get_space, space_names
from zennas.space.structure import Structure


def _walk(name: str, n: int, seed: int = 3) -> list[Structure]:
    space = get_space(name)
    m = Mutator(space, budget_layers=91, height=480, width=480)
    rng = random.Random(seed)
    pool = [space.start]
    for _ in range(n):
        pool.append(m.mutate(pool[int(rng.random() * len(pool))], rng))
        if len(pool) > 64:
            pool.pop(0)
    return pool


@pytest.mark.parametrize("name", space_names())
@pytest.mark.parametrize("score", ["entropy-analytic", "params", "flops"])
def test_terms_equal_the_library(name: str, score: str) -> None:
    space = get_space(name)
    limits = {"flops": 188e8, "params": 40e6, "layers": 91}
    ev = search_evaluator(space.start, 480, 480, score=score, settings={}, stage_weights=space.stage_weights,
                          **limits)  # type: ignore[arg-type]
    scorer = make_scorer(score, stage_weights=space.stage_weights) if score == "entropy-analytic" \
        else make_scorer(score)
    seen = {"ok": 0, "rejected": 0}
    for s in _walk(name, 600):
        e = ev(s)
        lib = costs(s, 480, 480)
        assert e.flops == lib.flops and e.params == lib.params and e.layers == lib.layers  # same order: exact
        assert ev.score(e) == pytest.approx(scorer(s).score, rel=1e-12)
        broken = [n for n in ("layers", "flops", "params") if getattr(lib, n) > limits[n]]
        assert e.reason == (broken[0] if broken else None)
        seen["ok" if e.reason is None else "rejected"] += 1
    assert seen["ok"] > 0


def test_no_budgets_reject_nothing() -> None:
    space = get_space("detection-k1kxk1")
    ev = search_evaluator(space.start, 480, 480, score="entropy-analytic", settings={},
                          stage_weights=space.stage_weights)
    assert all(ev(s).reason is None for s in _walk("detection-k1kxk1", 200))


def test_stage_weights_must_match_the_stages() -> None:
    space = get_space("detection-k1kxk1")
    with pytest.raises(SpecError) as e:
        search_evaluator(space.start, 480, 480, score="entropy-analytic", settings={"stage_weights": [1, 1]},
                         stage_weights=space.stage_weights)
    assert e.value.field == "stage_weights"


def test_positions_follow_the_stage_rule() -> None:
    space = get_space("detection-k1kxk1")
    ps = positions(space.start, 480, 320)
    ends = [p.index for p in ps if p.stage_end]
    n = len(space.start.blocks)
    assert ends == [i for i in range(n) if i == n - 1 or space.start.blocks[i + 1].stride == 2]
    assert len(ends) == space.stages and ps[0].height == 480.0 and ps[0].width == 320.0


def test_cache_is_bounded_and_figures_survive_a_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full per-position cache is cleared, never grown: memory stays flat in million-trial searches."""
    import zennas.search.evaluate as mod

    monkeypatch.setattr(mod, "CACHE_LIMIT", 8)
    space = get_space("detection-k1kxk1")
    ev = Evaluator(space.start, 480, 480, [Flops(), Params(), Layers()])
    walk = _walk("detection-k1kxk1", 300)
    first = [ev(s) for s in walk]
    assert max(len(c) for c in ev._caches) <= 8
    assert [ev(s) for s in walk] == first
    assert CACHE_LIMIT >= 1 << 10


@pytest.mark.parametrize("neck", ["gfpn", "fpn"])
def test_detector_scope_adds_the_neck_and_head_before_the_budgets(neck: str) -> None:
    from zennas.detector import DetectorSettings, detector_flops_params
    from zennas.detector.cost import DetectorTerm
    from zennas.search.evaluate import DetectorScope

    space = get_space("detection-k1kxk1")
    det = DetectorSettings(neck=neck, gfpn_depth=2, gfpn_width=0.5)
    whole = [DetectorScope(DetectorTerm(det, space.start, 480, 480))]
    start_total = detector_flops_params(space.start, det, 480, 480)[0]
    limit = 1.05 * start_total  # above the start's whole detector, below many candidates' ones
    ev = search_evaluator(space.start, 480, 480, score="entropy-analytic", settings={},
                          stage_weights=space.stage_weights, flops=limit, whole=whole)
    seen = {"ok": 0, "rejected": 0}
    for s in _walk("detection-k1kxk1", 300):
        e = ev(s)
        flops, params = detector_flops_params(s, det, 480, 480)
        assert e.flops == pytest.approx(flops, rel=1e-12) and e.params == pytest.approx(params, rel=1e-12)
        assert e.layers == costs(s, 480, 480).layers  # layers stay the backbone's
        assert e.reason == ("flops" if flops > limit else None)
        seen["ok" if e.reason is None else "rejected"] += 1
    assert seen["ok"] > 0 and seen["rejected"] > 0
