"""Costs, the built module and the closed-form score against TinyNAS's own code, structure by structure.

Every number compared here is in ``tests/data/reference_counts.json``, written by
``scripts/reference_fixtures.py``: it runs TinyNAS (repo and commit in the file's ``provenance``)
outside zennas and records what its ``CnnNet`` counters, modules and ``madnas`` score return. The
structures include K1KXK1 and K1DWK1 blocks with ``in == out`` at stride 1 and 2 (where TinyNAS's
shortcut rule matters), structures TinyNAS's own mutator produced, and the MAE-DET search winner
found under zennas's earlier, incomplete rule (each entry's ``how`` says where it comes from).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from zennas.blocks import build_backbone
from zennas.cost import costs
from zennas.score import make_scorer
from zennas.score.analytic import block_log_std
from zennas.search.evaluate import search_evaluator
from zennas.space import from_tinynas

pytestmark = pytest.mark.timeout(120)

DOC = json.loads((Path(__file__).parent.parent / "data" / "reference_counts.json").read_text())
FX = DOC["structures"]
NAMES = sorted(FX)


def test_fixture_says_where_it_comes_from() -> None:
    prov = DOC["provenance"]
    assert prov["repo"] == "alibaba/lightweight-neural-architecture-search"
    assert len(prov["commit"]) == 40
    assert set(prov["fields"]) >= {"flops_480", "params", "layers", "module_params", "param_shapes", "shortcuts",
                                   "entropy_analytic"}
    assert all(fx["how"] for fx in FX.values())
    # the shortcut cases the issue names are all present
    blocks = [(b["class"], b["s"]) for fx in FX.values() for b in fx["structure"][1:] if b["in"] == b["out"]]
    for kind in ("SuperResK1KXK1", "SuperResK1DWK1"):
        for stride in (1, 2):
            assert (kind, stride) in blocks, (kind, stride)


@pytest.mark.parametrize("name", NAMES)
def test_costs_equal_reference_counters(name: str) -> None:
    fx = FX[name]
    c = costs(from_tinynas(fx["structure"]), 480)
    assert (c.flops, c.params, c.layers) == (fx["flops_480"], fx["params"], fx["layers"])  # exact


@pytest.mark.parametrize("name", NAMES)
def test_evaluator_tables_equal_reference_counters(name: str) -> None:
    """The search's incremental per-block tables (the one evaluation path) give the reference's numbers."""
    fx = FX[name]
    s = from_tinynas(fx["structure"])
    ev = search_evaluator(s, 480, 480, score="entropy-analytic", settings={}, stage_weights=(0, 0, 1, 1, 6))
    e = ev(s)
    assert (e.flops, e.params, e.layers) == (fx["flops_480"], fx["params"], fx["layers"])
    assert ev.score(e) == pytest.approx(fx["entropy_analytic"]["score"], rel=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_built_module_has_the_reference_parameters(name: str) -> None:
    """Same parameter tensors in the same order as TinyNAS's module (so its checkpoints map one to one),
    and the same shortcuts: projections, average pools, units without a residual."""
    fx = FX[name]
    with torch.device("meta"):
        model = build_backbone(from_tinynas(fx["structure"]))
    assert [list(p.shape) for p in model.parameters()] == fx["param_shapes"]
    assert sum(p.numel() for p in model.parameters()) == fx["module_params"] == fx["params"]
    units = [u for blk in model.block_modules() for u in blk.units if hasattr(u, "shortcut")]
    found = {
        "projection": sum(any(isinstance(m, nn.Conv2d) for m in u.shortcut.modules()) for u in units),
        "avg_pool": sum(any(isinstance(m, nn.AvgPool2d) for m in u.shortcut.modules()) for u in units),
        "none": sum(not u.residual for u in units),
    }
    assert found == fx["shortcuts"]


@pytest.mark.parametrize("name", NAMES)
def test_entropy_analytic_equals_reference(name: str) -> None:
    fx = FX[name]["entropy_analytic"]
    s = from_tinynas(FX[name]["structure"])
    r = make_scorer("entropy-analytic")(s)
    assert r.score == pytest.approx(fx["score"], rel=1e-12)
    assert list(r.stage_scores_weighted) == pytest.approx(fx["stage_scores_weighted"], rel=1e-12)
    assert block_log_std(s) == pytest.approx(fx["block_log_std"], rel=1e-14)


def test_old_search_winner_is_over_the_maedet_budget() -> None:
    """The winner zennas used to report at 18.73 GFLOPs is 20.03 by the reference: a budget check rejects it."""
    fx = FX["maedet_search_winner_old_counts"]
    s = from_tinynas(fx["structure"])
    c = costs(s, 480)
    assert round(c.flops / 1e9, 2) == 20.03 and round(c.params / 1e6, 2) == 28.27
    ev = search_evaluator(s, 480, 480, score="entropy-analytic", settings={}, stage_weights=(0, 0, 1, 1, 6),
                          flops=188e8, layers=91)
    assert ev(s).reason == "flops"


@pytest.mark.parametrize("name", ["k1kxk1_in_eq_out", "k1dwk1_in_eq_out"])
def test_module_runs_and_matches_shapes(name: str) -> None:
    """The built module runs (identity shortcuts at stride 2 are pooled; DW blocks that change channels
    have no residual) and its forward pass uses every parameter."""
    s = from_tinynas(FX[name]["structure"])
    torch.manual_seed(0)
    model = build_backbone(s).eval()
    x = torch.randn(1, 3, 64, 64, requires_grad=False)
    outs = model(x)
    loss = sum(o.sum() for o in (outs if isinstance(outs, (list, tuple)) else [outs]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
