"""Zero-shot scores against the reference fixtures: entropy (closed form and forward pass), zen, baselines."""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from zennas.cost import costs
from zennas.errors import ScoreError, SpecError
from zennas.score import DETECTION_WEIGHTS, ScoreResult, make_scorer, score_names
from zennas.score._torch import build_uninitialized
from zennas.score.analytic import analytic_score, block_log_std, stage_values
from zennas.score.zen import _in_shortcut
from zennas.space import Block, Structure, from_tinynas

DATA = Path(__file__).parent.parent / "data"
STRUCTURES = json.loads((DATA / "structures.json").read_text())["structures"]
SEARCH = json.loads((DATA / "search.json").read_text())
FIXTURES = sorted(STRUCTURES)
S = {name: from_tinynas(fx["structure"]) for name, fx in STRUCTURES.items()}
S["search_start"] = from_tinynas(SEARCH["start_structure"])

TINY = Structure(
    (
        Block("ConvKXBNRELU", 3, 8, 2, 3),
        Block("SuperResK1KXK1", 8, 16, 2, 3, 1, 8),
        Block("SuperResK1KXK1", 16, 32, 2, 5, 2, 8),
        Block("SuperResK1KXK1", 32, 32, 1, 3, 1, 16),
        Block("SuperResK1KXK1", 32, 64, 2, 3, 1, 16),
        Block("SuperResK1KXK1", 64, 64, 2, 3, 1, 16),
    )
)  # five stages, small enough to run a forward pass in milliseconds


@cache
def _score(name: str, score: str, **settings: Any) -> ScoreResult:
    """Forward-pass scores are expensive: compute each (structure, settings) once per session."""
    return make_scorer(score, **settings)(S[name] if name in S else TINY)


# -- entropy-analytic ------------------------------------------------------------------------
@pytest.mark.parametrize("name", FIXTURES)
def test_entropy_analytic_matches_fixture(name: str) -> None:
    fx = STRUCTURES[name]["entropy_analytic"]
    r = make_scorer("entropy-analytic")(S[name])
    assert r.name == "entropy-analytic"
    assert r.score == pytest.approx(fx["score"], rel=1e-9)
    assert r.stage_scores == pytest.approx(fx["stage_scores_unweighted"], rel=1e-9)
    assert r.stage_scores_weighted == pytest.approx(fx["stage_scores_weighted"], rel=1e-9)
    assert list(r.settings["stage_weights"]) == fx["stage_weights"]
    assert block_log_std(S[name]) == pytest.approx(fx["block_log_std"], rel=1e-12)
    assert stage_values(S[name]) == r.stage_scores
    assert analytic_score(S[name]) == pytest.approx(r.score, rel=1e-12)  # the search's hot path
    assert r.per_repeat == () and r.resolution is None


def test_entropy_analytic_search_start() -> None:
    expected = SEARCH["start_structure_values"]["entropy_analytic"]  # the reference's closed form
    assert make_scorer("entropy-analytic")(S["search_start"]).score == pytest.approx(expected, rel=1e-12)
    assert analytic_score(S["search_start"], SEARCH["score"]["stage_weights"]) == pytest.approx(
        expected, rel=1e-12
    )


def test_entropy_analytic_custom_weights() -> None:
    s = S["maedet_s"]
    vals = stage_values(s)
    r = make_scorer("entropy-analytic", stage_weights=[1, 1, 1, 1, 1])(s)
    assert r.score == pytest.approx(sum(vals), rel=1e-12)
    assert r.stage_scores_weighted == pytest.approx(vals, rel=1e-12)
    assert r.settings == {"stage_weights": [1.0, 1.0, 1.0, 1.0, 1.0]}


def test_score_result_to_dict() -> None:
    r = make_scorer("entropy-analytic")(S["maedet_s"])
    d = r.to_dict()
    assert d["name"] == "entropy-analytic" and d["score"] == r.score
    assert d["stage_scores"] == list(r.stage_scores) and d["per_repeat"] == [] and d["resolution"] is None
    json.dumps(d)  # plain data


# -- stage weights / registry errors ---------------------------------------------------------
@pytest.mark.parametrize("weights", [[0, 1, 6], [0, 0, 1, 1, 6, 1]])
def test_wrong_number_of_stage_weights(weights: list[float]) -> None:
    with pytest.raises(ScoreError, match=r"structure has 5 stages .* stage_weights has \d entries") as ei:
        make_scorer("entropy-analytic", stage_weights=weights)(S["maedet_s"])
    assert ei.value.field == "stage_weights"
    with pytest.raises(ScoreError) as ei:
        analytic_score(S["maedet_s"], weights)
    assert ei.value.field == "stage_weights"
    with pytest.raises(ScoreError) as ei:
        make_scorer("entropy", resolution=32, stage_weights=weights)(TINY)
    assert ei.value.field == "stage_weights"


@pytest.mark.parametrize("weights", [[], [0, 0, 1, float("nan"), 6], [0, 0, 1, float("inf"), 6]])
def test_invalid_stage_weights(weights: list[float]) -> None:
    for score in ("entropy-analytic", "entropy"):
        with pytest.raises(SpecError, match="stage_weights must be a non-empty list of finite numbers") as ei:
            make_scorer(score, stage_weights=weights)
        assert ei.value.field == "stage_weights"


def test_make_scorer_unknown_name() -> None:
    with pytest.raises(SpecError, match=r"unknown score 'nope' \(known: .*entropy-analytic") as ei:
        make_scorer("nope")
    assert ei.value.field == "score"


def test_make_scorer_unknown_setting() -> None:
    with pytest.raises(SpecError, match="score 'entropy-analytic'") as ei:
        make_scorer("entropy-analytic", resolution=480)
    assert ei.value.field == "resolution"  # the setting at fault (a spec reports it as score_settings.resolution)


def test_score_names() -> None:
    assert score_names() == sorted(
        ["entropy", "entropy-analytic", "zen", "params", "flops", "grad-norm", "synflow", "neck-entropy-analytic"]
    )


@pytest.mark.parametrize(
    ("score", "settings", "field"),
    [
        ("entropy", {"batch": -2}, "batch"),
        ("entropy", {"repeat": -1}, "repeat"),
        ("entropy", {"init_std": 0.0}, "init_std"),
        ("entropy", {"height": -3}, "height"),
        ("zen", {"bn_mode": "eval"}, "bn_mode"),
        ("zen", {"batch": 0}, "batch"),
        ("zen", {"gamma": 0.0}, "gamma"),
        ("zen", {"width": -1}, "width"),
        ("grad-norm", {"resolution": -1}, "height"),
    ],
)
def test_invalid_settings(score: str, settings: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as ei:
        make_scorer(score, **settings)
    assert ei.value.field == field


@pytest.mark.parametrize(
    ("score", "settings"),
    [
        ("entropy", {"batch": 0}),
        ("entropy", {"repeat": 0}),
        ("entropy", {"resolution": 0}),
        ("zen", {"height": 0}),
        ("grad-norm", {"width": 0}),
    ],
)
def test_zero_settings_are_rejected_not_defaulted(score: str, settings: dict[str, Any]) -> None:
    with pytest.raises(SpecError):
        make_scorer(score, **settings)


# -- entropy (forward pass) ------------------------------------------------------------------
@pytest.mark.parametrize("name", FIXTURES)
def test_entropy_forward_defaults_within_half_percent(name: str) -> None:
    fx = STRUCTURES[name]["entropy_forward"]
    r = _score(name, "entropy")
    assert r.name == "entropy" and r.resolution == (128, 128)
    assert r.settings["batch"] == 1 and r.settings["repeat"] == 1 and r.settings["padding"] == "circular"
    assert r.score == pytest.approx(fx["score"], rel=5e-3)
    ref_stages = [sum(rep[i] for rep in fx["per_repeat_stage_scores"]) / 4 for i in range(5)]
    assert r.stage_scores_weighted == pytest.approx(ref_stages, rel=5e-3)
    assert len(r.stage_scores) == 5 and len(r.per_repeat) == 1


def test_entropy_seed_changes_values_but_not_the_level() -> None:
    fx = STRUCTURES["maedet_s"]["entropy_forward"]
    r0 = _score("maedet_s", "entropy")
    r1 = _score("maedet_s", "entropy", seed=1)
    assert r0.per_repeat != r1.per_repeat
    assert r0.score != r1.score
    for r in (r0, r1):
        assert r.score == pytest.approx(fx["score"], rel=5e-3)
    assert r1.score == pytest.approx(r0.score, rel=5e-3)


def test_entropy_repeats_differ_and_average() -> None:
    r = _score("maedet_s", "entropy", resolution=64, repeat=2)
    assert len(r.per_repeat) == 2 and r.per_repeat[0] != r.per_repeat[1]
    assert r.score == pytest.approx(sum(r.per_repeat) / 2, rel=1e-12)
    assert r.settings["repeat"] == 2


def test_entropy_is_a_forward_pass_not_the_closed_form() -> None:
    # zero padding at small feature maps shrinks the std: the forward score depends on the resolution
    name = "maedet_s"
    analytic = make_scorer("entropy-analytic")(S[name]).score
    small = _score(name, "entropy", resolution=64, padding="zeros")
    large = _score(name, "entropy", resolution=224, padding="zeros")
    assert abs(small.score / analytic - 1) > 1e-3
    assert abs(large.score / analytic - 1) < abs(small.score / analytic - 1)
    assert small.resolution == (64, 64)
    # the closed form has no resolution at all
    assert "height" not in make_scorer("entropy-analytic").settings()
    assert analytic == make_scorer("entropy-analytic")(S[name]).score


def test_circular_padding_removes_the_resolution_bias() -> None:
    """Zero padding shrinks the std at small feature maps; circular padding keeps every output's fan-in
    full, so its score barely moves with the resolution and sits near the reference (480, zeros)."""
    name = "maedet_s"
    ref = STRUCTURES[name]["entropy_forward"]["score"]
    zeros = {r: _score(name, "entropy", resolution=r, padding="zeros").score for r in (96, 224)}
    circ = {r: _score(name, "entropy", resolution=r, padding="circular").score for r in (96, 224)}
    assert zeros[96] < zeros[224] < ref
    assert abs(zeros[96] / ref - 1) > 1e-2  # -1.2 %
    assert abs(circ[96] / circ[224] - 1) < 2e-3
    assert all(abs(v / ref - 1) < 5e-3 for v in circ.values())


@pytest.mark.parametrize(("h", "w", "ph", "pw"), [(5, 6, 2, 3), (4, 4, 1, 1), (2, 3, 3, 2), (1, 1, 2, 2), (3, 1, 1, 3)])
def test_circular_pad_is_periodic(h: int, w: int, ph: int, pw: int) -> None:
    """Every padded pixel equals the map's pixel at its coordinates modulo the map size, including
    paddings larger than the map (where F.pad refuses)."""
    from zennas.score.entropy import circular_pad

    x = torch.arange(2 * 3 * h * w, dtype=torch.float32).view(2, 3, h, w)
    y = circular_pad(x, ph, pw)
    assert y.shape == (2, 3, h + 2 * ph, w + 2 * pw)
    for i in range(h + 2 * ph):
        for j in range(w + 2 * pw):
            assert torch.equal(y[..., i, j], x[..., (i - ph) % h, (j - pw) % w])


def test_circular_padding_on_maps_smaller_than_the_padding() -> None:
    s = Structure((Block("ConvKXBNRELU", 3, 8, 2, 3), Block("SuperResK1KXK1", 8, 16, 2, 7, 1, 8)))
    r = make_scorer("entropy", resolution=2, stage_weights=[1, 1])(s)  # the 7x7 conv sees a 1x1 map
    assert math.isfinite(r.score)


def test_entropy_padding_is_validated() -> None:
    with pytest.raises(SpecError, match="padding must be one of zeros, circular") as ei:
        make_scorer("entropy", padding="reflect")
    assert ei.value.field == "padding"


def test_entropy_deterministic() -> None:
    a = make_scorer("entropy", resolution=32, seed=3)(TINY)
    b = make_scorer("entropy", resolution=32, seed=3)(TINY)
    c = make_scorer("entropy", resolution=32, seed=4)(TINY)
    assert a.score == b.score and a.stage_scores == b.stage_scores
    assert c.score != a.score


def test_entropy_channels_last_is_the_same_math() -> None:
    a = make_scorer("entropy", resolution=32, seed=3)(TINY)
    b = make_scorer("entropy", resolution=32, seed=3, channels_last=False)(TINY)
    assert b.score == pytest.approx(a.score, rel=1e-5)


def test_entropy_reference_settings() -> None:
    sc = make_scorer("entropy", reference=True)
    st = sc.settings()
    assert (st["height"], st["width"], st["batch"], st["repeat"], st["padding"]) == (480, 480, 32, 4, "zeros")
    assert st["bn"] == "skipped" and st["relu"] == "skipped" and st["residual"] == "ignored"
    assert sc.forward_pass is True
    assert make_scorer("entropy", height=320, width=640).settings()["width"] == 640


def test_entropy_restores_thread_setting() -> None:
    before = torch.get_num_threads()
    make_scorer("entropy", resolution=32, threads=1)(TINY)
    assert torch.get_num_threads() == before


# -- zen -------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", FIXTURES)
def test_zen_running_matches_fixture(name: str) -> None:
    fx = STRUCTURES[name]["zen"]
    r = _score(name, "zen", bn_mode="running")
    assert r.name == "zen" and r.resolution == (224, 224)
    assert r.settings["bn_mode"] == "running" and r.settings["batch"] == 16
    assert r.score == pytest.approx(fx["mean"], rel=5e-3)


def test_zen_bn_count_is_the_layer_count() -> None:
    # residuals removed: only the main path's BNs run, one per counted layer
    for name in ("search_start", "maedet_s"):
        model = build_uninitialized(S[name])
        units = [u for blk in model.block_modules() for u in blk.units]
        bns = [
            m for u in units for m in u.modules() if isinstance(m, nn.BatchNorm2d) and not _in_shortcut(u, m)
        ]
        assert len(bns) == costs(S[name]).layers


def test_zen_batch_mode_offset_per_bn() -> None:
    # "running" uses running_var = 0.81 + 0.09 v1 + 0.1 v2 ~ 0.19 v: log sqrt(1/0.19) ~ 0.83 below "batch"
    s = S["search_start"]
    running = _score("search_start", "zen", bn_mode="running", resolution=96, batch=8)
    batch = _score("search_start", "zen", bn_mode="batch", resolution=96, batch=8)
    per_bn = (batch.score - running.score) / costs(s).layers
    assert 0.7 < per_bn < 0.9


def test_zen_deterministic_and_seeded() -> None:
    a = make_scorer("zen", resolution=32, batch=4, seed=5)(TINY)
    b = make_scorer("zen", resolution=32, batch=4, seed=5)(TINY)
    c = make_scorer("zen", resolution=32, batch=4, seed=6)(TINY)
    assert a.score == b.score and a.per_repeat == b.per_repeat
    assert c.score != a.score
    assert math.isfinite(a.score)


def test_zen_repeat_uses_fresh_inits() -> None:
    r = make_scorer("zen", resolution=32, batch=4, repeat=3, bn_mode="running")(TINY)
    assert len(r.per_repeat) == 3
    assert r.score == pytest.approx(sum(r.per_repeat) / 3, rel=1e-12)
    # no drift: unlike the reference, running stats are reset between repeats
    spread = max(r.per_repeat) - min(r.per_repeat)
    assert spread < 0.05 * abs(r.score) + 1.0


# -- baselines -------------------------------------------------------------------------------
def test_cost_baselines() -> None:
    c = costs(TINY, 480)
    assert make_scorer("params")(TINY).score == pytest.approx(math.log(c.params), rel=1e-12)
    assert make_scorer("flops")(TINY).score == pytest.approx(math.log(c.flops), rel=1e-12)
    c2 = costs(TINY, 320, 640)
    assert make_scorer("flops", height=320, width=640)(TINY).score == pytest.approx(
        math.log(c2.flops), rel=1e-12
    )
    assert make_scorer("params").forward_pass is False


@pytest.mark.parametrize("name", ["grad-norm", "synflow"])
def test_grad_baselines_run(name: str) -> None:
    sc = make_scorer(name, resolution=32)
    assert sc.forward_pass is True
    r1 = sc(TINY)
    r2 = sc(TINY)
    assert r1.name == name and math.isfinite(r1.score) and r1.resolution == (32, 32)
    assert r1.score == pytest.approx(r2.score, rel=1e-9)  # seeded
    assert make_scorer(name, resolution=32, seed=1)(TINY).score != r1.score


# no residual anywhere (a K1DWK1 unit that changes channels has none): with positive weights and an
# all-ones input every ReLU passes its input and eval-mode BN is a positive scaling, so the output
# sum R is homogeneous of degree 1 in each parameter tensor (Euler: sum theta * dR/dtheta = R per tensor)
PLAIN = Structure((Block("ConvKXBNRELU", 3, 8, 2, 3), Block("SuperResK1DWK1", 8, 16, 2, 3, 1, 24)))


def test_synflow_is_conservation_times_output() -> None:
    """synflow = log sum |theta * dR/dtheta| = log(T * R) for T parameter tensors with non-zero values
    (4 convs + 4 BN gammas; the BN betas are 0), R computed here by a plain forward pass."""
    from zennas.blocks import build_backbone

    r = make_scorer("synflow", resolution=16, seed=3)(PLAIN)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = build_backbone(PLAIN, out_stages=[1]).double().eval()
    with torch.no_grad():
        for prm in model.parameters():
            prm.abs_()
        out = float(model(torch.ones(1, 3, 16, 16, dtype=torch.float64))[-1].sum())
    assert r.score == pytest.approx(math.log(8 * out), rel=1e-9)


def test_grad_norm_equals_autograd_on_the_same_model() -> None:
    """grad-norm = || d(sum of the last stage's features) / d(weights) ||_2 at the seeded init, train-mode BN,
    on a seeded Gaussian batch: recomputed with torch.autograd.grad."""
    from zennas.blocks import build_backbone

    r = make_scorer("grad-norm", resolution=32, batch=3, seed=2)(TINY)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        model = build_backbone(TINY, out_stages=[4]).train()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    params = [prm for prm in model.parameters() if prm.requires_grad]
    grads = torch.autograd.grad(model(x)[-1].sum(), params, allow_unused=True)
    norm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads if g is not None]))
    assert r.score == pytest.approx(float(norm), rel=1e-5)


def test_grad_baseline_leaves_global_rng_alone() -> None:
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    make_scorer("grad-norm", resolution=32)(TINY)
    assert torch.equal(torch.rand(3), expected)


def test_detection_weights_are_the_reference_search_weights() -> None:
    """The default scorer weighs the stages as the reference's MAE-DET search does (search.json)."""
    weights = SEARCH["score"]["stage_weights"]
    s = S["maedet_s"]
    r = make_scorer("entropy-analytic")(s)
    assert list(r.stage_scores_weighted) == pytest.approx([w * v for w, v in zip(weights, stage_values(s), strict=True)],
                                                         rel=1e-15)
    assert tuple(DETECTION_WEIGHTS) == tuple(float(w) for w in weights)
