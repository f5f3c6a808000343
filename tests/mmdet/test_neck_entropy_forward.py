"""Neck entropy: the forward pass through the built GiraffeNeck agrees with the closed form."""

from __future__ import annotations

import pytest

from zennas.detector import DetectorSettings
from zennas.score.neck import neck_entropy_analytic, neck_entropy_forward
from zennas.space import get_space

pytest.importorskip("mmengine")

FIXTURES = {
    "giraffe-s2d": get_space("giraffe-s2d").start,
    "detection-k1kxk1": get_space("detection-k1kxk1").start,
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(FIXTURES))
@pytest.mark.parametrize(("depth", "width", "channels"), [(2, 0.25, 64), (3, 0.5, 64), (7, 0.25, 32)])
def test_forward_agrees_with_closed_form(name: str, depth: int, width: float, channels: int) -> None:
    s = DetectorSettings(gfpn_depth=depth, gfpn_width=width, neck_channels=channels)
    closed = neck_entropy_analytic(FIXTURES[name], s)
    fwd = neck_entropy_forward(FIXTURES[name], s, resolution=256, batch=2, seed=0)
    assert fwd.method == "forward" and closed.method == "closed-form"
    assert fwd.score == pytest.approx(closed.score, rel=5e-3)
    for a, b in zip(fwd.level_scores, closed.level_scores, strict=True):
        assert a == pytest.approx(b, rel=5e-3)
