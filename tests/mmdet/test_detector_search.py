"""A search under a detector budget: every candidate it accepts, and the structure it returns, is a
detector within budget, counted on the mmdet model built from the generated config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from op_count import count, n_params

from zennas.detector import DetectorSettings, detector_costs
from zennas.mmdet.configs import make_config
from zennas.search import Budgets, SearchSpec, run_search
from zennas.space import get_space

pytest.importorskip("optuna")
mmengine_config = pytest.importorskip("mmengine.config")
MODELS = pytest.importorskip("mmdet.registry").MODELS

SPACE = get_space("giraffe-s2d")  # S2D chains: no residual adds, so the op counter sees the convention exactly
DET = DetectorSettings(detector="gfl", neck="gfpn", gfpn_depth=2, gfpn_width=0.25, neck_channels=32, num_classes=3)
H, W = 128, 256


def _spec(scope: str, flops: float) -> SearchSpec:
    return SearchSpec(space="giraffe-s2d", score="entropy-analytic", height=H, width=W,
                      budgets=Budgets(flops=flops, scope=scope), detector=DET, population=16, iterations=400,
                      generation=16, seed=3, warmup_iterations=0)


@pytest.mark.timeout(240)
def test_detector_scope_search_stays_within_the_whole_detectors_budget(tmp_path: Path) -> None:
    from mmdet.utils import register_all_modules

    register_all_modules()
    start = detector_costs(SPACE.start, DET, H, W).total
    budget = 1.6 * start.flops  # room to grow, but the neck and head take a fixed share of it
    res = run_search(_spec("detector", budget))
    assert res.evaluated > 0 and res.rejected > 0  # the budget bit
    d = res.best_costs["detector"]
    assert res.best_costs["budget_scope"] == "detector"
    assert d["total"]["flops"] <= budget

    # the returned detector, built by mmdet from the generated config, counted on a forward pass
    text = make_config(res.best_structure, detector=DET.detector, neck=DET.neck, gfpn_depth=DET.gfpn_depth,
                       gfpn_width=DET.gfpn_width, neck_channels=DET.neck_channels, classes=("a", "b", "c"),
                       data_root=str(tmp_path / "data"))
    (tmp_path / "c.py").write_text(text)
    model = MODELS.build(mmengine_config.Config.fromfile(str(tmp_path / "c.py")).model)
    model.init_weights()
    model.eval()
    macs, ops, _ = count(lambda t: model(t, mode="tensor"), torch.randn(1, 3, H, W))
    assert macs + ops == pytest.approx(d["total"]["flops"], rel=1e-12)
    assert macs + ops <= budget
    assert n_params(model) == d["total"]["params"]

    # the same budget counted on the backbone alone lets the search pick a detector over it
    loose = run_search(_spec("backbone", budget))
    assert loose.best_costs["flops"] <= budget
    assert detector_costs(loose.best_structure, DET, H, W).total.flops > budget
