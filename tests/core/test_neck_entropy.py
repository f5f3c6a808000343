"""Neck entropy in closed form: it reduces exactly to entropy-analytic on a chain, and behaves as its
derivation says on the GFPN graph. (Closed form vs forward pass: tests/mmdet/test_neck_entropy_forward.py.)"""

from __future__ import annotations

import math

import pytest

from zennas.detector import DetectorSettings
from zennas.errors import ScoreError
from zennas.score.analytic import analytic_score, stage_values
from zennas.score.neck import Node, backbone_level_log_stds, gfpn_nodes, neck_entropy_analytic, propagate
from zennas.space import Block, Structure, get_space

CHAIN = Structure((
    Block("ConvKXBNRELU", 3, 16, 2, 3),
    Block("ConvKXBNRELU", 16, 32, 2, 5),
    Block("ConvKXBNRELU", 32, 48, 2, 3),
    Block("ConvKXBNRELU", 48, 64, 2, 1),
    Block("ConvKXBNRELU", 64, 96, 2, 7),
))


def test_a_chain_reduces_exactly_to_entropy_analytic() -> None:
    nodes = [Node(i, (i - 1,), ((b.kernel, b.out_channels),)) for i, b in enumerate(CHAIN.blocks)]
    vals = propagate({-1: (3, 0.0)}, nodes)
    stages = tuple(vals[i][1] + math.log(vals[i][0]) for i in range(len(CHAIN.blocks)))
    assert stages == stage_values(CHAIN)  # bit for bit
    w = (0.0, 0.0, 1.0, 1.0, 6.0)
    assert sum(v * x for v, x in zip(stages, w, strict=True) if x) == analytic_score(CHAIN, w)


def test_log_sum_exp_of_a_concatenation() -> None:
    # two inputs of 8 and 24 channels with stds e^1 and e^2 into a 3x3 conv: V = 9 (8 e^2 + 24 e^4)
    vals = propagate({"a": (8, 1.0), "b": (24, 2.0)}, [Node("c", ("a", "b"), ((3, 16),))])
    assert vals["c"] == (16, pytest.approx(0.5 * math.log(9 * (8 * math.e**2 + 24 * math.e**4)), rel=1e-14))
    # a deep graph stays finite: log-stds, never the variances themselves
    deep = propagate({"a": (8, 400.0), "b": (24, 401.0)}, [Node("c", ("a", "b"), ((1, 16), (3, 16)))])
    assert math.isfinite(deep["c"][1]) and deep["c"][1] > 401.0


def test_gfpn_graph_as_nodes() -> None:
    s = DetectorSettings(gfpn_depth=2, gfpn_width=0.25, neck_channels=64)
    nodes = gfpn_nodes(s)
    assert [n.key for n in nodes[:2]] == [(-1, 6), (-1, 7)]  # P6, P7 pooled from C5: identity nodes
    fusion = [n for n in nodes if n.key[0] not in (-1, "out")]
    assert len(fusion) == 3 * 5 and all(n.convs == ((1, 64), (3, 64)) for n in fusion)
    assert all(n.convs == () for n in nodes if n.key[0] == "out")  # inner 64 == 64: identity outputs
    wider = gfpn_nodes(DetectorSettings(gfpn_depth=2, gfpn_width=0.5, neck_channels=64))
    assert all(n.convs == ((1, 64),) for n in wider if n.key[0] == "out")


def test_neck_score_uses_the_backbone_and_grows_with_depth() -> None:
    start = get_space("giraffe-s2d").start
    scores = [neck_entropy_analytic(start, DetectorSettings(gfpn_depth=d)).score for d in (2, 3, 5, 7)]
    assert scores == sorted(scores) and len(set(scores)) == 4
    src = backbone_level_log_stds(start, (3, 4, 5))
    assert src[5][0] == start.blocks[-1].out_channels
    assert src[5][1] == pytest.approx(stage_values(start)[-1] - math.log(start.blocks[-1].out_channels), rel=1e-14)
    a = neck_entropy_analytic(start, DetectorSettings(gfpn_depth=2))
    assert len(a.level_scores) == 5 and a.weights == (1.0,) * 5 and a.score == pytest.approx(sum(a.level_scores))
    with pytest.raises(ScoreError) as ei:
        neck_entropy_analytic(start, DetectorSettings(neck="fpn"))
    assert ei.value.field == "neck"
    with pytest.raises(ScoreError) as ei:
        neck_entropy_analytic(start, DetectorSettings(), weights=(1.0, 2.0))
    assert ei.value.field == "weights"


def test_registered_neck_score_equals_the_closed_form() -> None:
    """``neck-entropy-analytic`` as a registered score (``zennas score``, the registry) scores a structure
    with the default detector's GFPN exactly as :func:`neck_entropy_analytic` does."""
    from zennas.detector.settings import DetectorSettings
    from zennas.score import make_scorer, score_kind
    from zennas.score.neck import neck_entropy_analytic
    from zennas.space.space import get_space

    s = get_space("detection-k1kxk1").start
    assert not score_kind("neck-entropy-analytic").forward_pass
    r = make_scorer("neck-entropy-analytic")(s)
    assert r.score == neck_entropy_analytic(s, DetectorSettings()).score
    assert r.name == "neck-entropy-analytic"
