"""Analytic FLOPs / params / layers: exact against the reference counters and against built modules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from zennas.blocks import get_block_builder
from zennas.cost import block_cost, costs, count_layers, format_flops
from zennas.errors import SpecError
from zennas.space import Block, Structure, from_tinynas, get_space, space_names

DATA = Path(__file__).parent.parent / "data"
STRUCTURES = json.loads((DATA / "structures.json").read_text())["structures"]
SEARCH = json.loads((DATA / "search.json").read_text())

REFERENCE = {
    name: (from_tinynas(fx["structure"]), fx["flops_480"], fx["params"], fx["layers"])
    for name, fx in STRUCTURES.items()
}
_sv = SEARCH["start_structure_values"]
REFERENCE["search_start"] = (
    from_tinynas(SEARCH["start_structure"]),
    _sv["flops_480"],
    _sv["params"],
    _sv["layers"],
)


# -- conformance with the reference counters (exact) -----------------------------------------
@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_costs_exact_at_480(name: str) -> None:
    s, flops, params, layers = REFERENCE[name]
    c = costs(s, 480)
    assert c.flops == flops
    assert c.params == params
    assert c.layers == layers
    assert count_layers(s) == layers
    assert (c.height, c.width) == (480, 480)
    assert costs(s) == c  # 480 is the default, width defaults to height
    assert c.to_dict() == {"flops": flops, "params": params, "layers": layers, "height": 480, "width": 480}


def test_search_start_is_the_k1kxk1_space_start() -> None:
    s, _flops, _params, _layers = REFERENCE["search_start"]
    assert get_space("detection-k1kxk1").start == s
    assert costs(s, 480).flops <= SEARCH["budgets"]["flops_at_480"]


@pytest.mark.parametrize("name", sorted(REFERENCE))
@pytest.mark.parametrize(("h", "w"), [(320, 640), (640, 320), (224, 224), (800, 1333)])
def test_flops_linear_in_area(name: str, h: int, w: int) -> None:
    s, flops, params, layers = REFERENCE[name]
    c = costs(s, h, w)
    assert c.flops == pytest.approx(flops * h * w / 480**2, rel=1e-9)
    assert c.params == params and c.layers == layers  # size-independent
    assert (c.height, c.width) == (h, w)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "480", None])
def test_costs_reject_bad_sizes(bad: object) -> None:
    s = REFERENCE["maedet_s"][0]
    with pytest.raises(SpecError, match="height must be a positive integer") as ei:
        costs(s, bad)  # type: ignore[arg-type]
    assert ei.value.field == "height"
    if bad is not None:
        with pytest.raises(SpecError, match="width must be a positive integer") as ei:
            costs(s, 480, bad)  # type: ignore[arg-type]
        assert ei.value.field == "width"


def test_block_cost_unknown_type() -> None:
    with pytest.raises(SpecError, match="no cost model for block type 'Nope'"):
        block_cost(Block("Nope", 3, 8, 2, 3))


def test_format_flops_names_the_unit() -> None:
    assert format_flops(18.8e9) == "18.800 GFLOPs (MACs + BN/act ops)"


# -- per block type: the analytic count equals what the built module does ---------------------
# One single-block structure per case: (block, input size).
CASES = {
    "stem-s2": Block("ConvKXBNRELU", 3, 16, 2, 3),
    "stem-s1-k5": Block("ConvKXBNRELU", 8, 24, 1, 5),
    "k1kxk1-change-s2": Block("SuperResK1KXK1", 16, 32, 2, 3, 2, 8),
    "k1kxk1-change-s1": Block("SuperResK1KXK1", 16, 32, 1, 5, 3, 16),
    "k1kxk1-same-s1": Block("SuperResK1KXK1", 32, 32, 1, 3, 2, 8),  # unit 0 still projects (forced)
    "k1kxk1-same-s2": Block("SuperResK1KXK1", 32, 32, 2, 5, 1, 16),
    "k1dwk1-change-s2": Block("SuperResK1DWK1", 16, 24, 2, 3, 2, 48),  # unit 0: no residual at all
    "k1dwk1-change-s1": Block("SuperResK1DWK1", 16, 24, 1, 5, 1, 96),
    "k1dwk1-same-s1": Block("SuperResK1DWK1", 24, 24, 1, 7, 2, 72),  # identity residuals
    "k1dwk1-same-s2": Block("SuperResK1DWK1", 24, 24, 2, 3, 1, 72),  # average-pooled identity
    "s2d-l1": Block("S2D", 16, 32, 2, 3, 1),
    "s2d-l3": Block("S2D", 8, 32, 2, 5, 3),
    "s2d-l2-k1": Block("S2D", 8, 16, 2, 1, 2),
}
H = W = 32


def _ref_shortcut(btype: str, cin: int, out: int, first: bool) -> str:
    """TinyNAS's branches, restated independently of cost.py: BaseSuperBlock sets force_resproj on the
    first unit of a K1KXK1 block only; ResK1KXK1 projects if in != out or forced, else identity;
    ResK1DWK1 is identity if in == out, projects if forced, else has no residual."""
    force = first and btype == "SuperResK1KXK1"
    if btype == "SuperResK1KXK1":
        return "projection" if cin != out or force else "identity"
    if cin == out:
        return "identity"
    return "projection" if force else "none"


def _analytic_conv_macs(b: Block, h: int, w: int) -> float:
    """Sum over the block's convs of cin*cout*k^2/groups * Hout*Wout, from cost.py's docstring."""
    total = 0.0
    if b.type == "ConvKXBNRELU":
        return b.in_channels * b.out_channels * b.kernel**2 * (h // b.stride) * (w // b.stride)
    if b.type == "S2D":
        ho, wo = h // 2, w // 2
        total += 4 * b.in_channels * b.out_channels * ho * wo
        total += (b.layers - 1) * b.out_channels * b.out_channels * b.kernel**2 * ho * wo
        return total
    assert b.bottleneck is not None
    btn, out, k = b.bottleneck, b.out_channels, b.kernel
    depthwise = b.type == "SuperResK1DWK1"
    for u in range(b.layers):
        cin = b.in_channels if u == 0 else out
        s = b.stride if u == 0 else 1
        total += cin * btn * h * w  # conv1 1x1 at the unit's input size
        h, w = h // s, w // s
        total += (btn if depthwise else btn * btn) * k * k * h * w  # conv2 kxk (depthwise: groups = btn)
        total += btn * out * h * w  # conv3 1x1
        if _ref_shortcut(b.type, cin, out, u == 0) == "projection":
            total += cin * out * h * w  # shortcut projection
    return total


def _analytic_params(b: Block) -> float:
    def conv_bn(cin: int, cout: int, k: int, groups: int = 1) -> float:
        return cin * cout * k * k / groups + 2 * cout

    if b.type == "ConvKXBNRELU":
        return conv_bn(b.in_channels, b.out_channels, b.kernel)
    if b.type == "S2D":
        return conv_bn(4 * b.in_channels, b.out_channels, 1) + (b.layers - 1) * conv_bn(
            b.out_channels, b.out_channels, b.kernel
        )
    assert b.bottleneck is not None
    btn, out, k = b.bottleneck, b.out_channels, b.kernel
    total = 0.0
    for u in range(b.layers):
        cin = b.in_channels if u == 0 else out
        total += conv_bn(cin, btn, 1) + conv_bn(btn, btn, k, btn if b.type == "SuperResK1DWK1" else 1)
        total += conv_bn(btn, out, 1)
        if _ref_shortcut(b.type, cin, out, u == 0) == "projection":
            total += conv_bn(cin, out, 1)
    return total


def _hooked_count(module: nn.Module, x: torch.Tensor) -> float:
    """MACs + BN (2/elt) + activation (1/elt) + 2x2 avg-pool (1/input elt) + projection add (1/elt),
    measured by hooks on the real module: the convention cost.py documents."""
    total = 0.0

    def hook(m: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.BatchNorm2d):
            total += 2 * out.numel()
        elif isinstance(m, (nn.ReLU, nn.SiLU)):
            total += out.numel()
        elif isinstance(m, nn.AvgPool2d):
            total += args[0].numel()

    def add_hook(_m: nn.Module, _args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel()  # the residual add after a projecting shortcut

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    # the residual add is counted only when the shortcut has a projection (TinyNAS's convention)
    for unit in getattr(module, "units", []):
        sc = getattr(unit, "shortcut", None)
        if sc is not None and any(isinstance(m, nn.Conv2d) for m in sc.modules()):
            handles.append(sc.register_forward_hook(add_hook))
    try:
        with torch.no_grad():
            module.eval()(x)
    finally:
        for hd in handles:
            hd.remove()
    return total


def _build(b: Block) -> nn.Module:
    Structure((b,))  # valid on its own
    torch.manual_seed(0)
    return get_block_builder(b.type)(b)


@pytest.mark.parametrize("case", sorted(CASES))
def test_conv_macs_match_flop_counter(case: str) -> None:
    b = CASES[case]
    module = _build(b).eval()
    x = torch.randn(1, b.in_channels, H, W)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(x)
    measured = counter.get_total_flops()
    assert measured % 2 == 0
    assert measured // 2 == _analytic_conv_macs(b, H, W)  # FlopCounterMode counts 2 per MAC


@pytest.mark.parametrize("case", sorted(CASES))
def test_block_cost_matches_module(case: str) -> None:
    b = CASES[case]
    module = _build(b)
    x = torch.randn(1, b.in_channels, H, W)
    c = block_cost(b)
    # the full analytic count (per block-input pixel x input area) equals the hooked module count
    assert c.flops_per_pixel * H * W == pytest.approx(_hooked_count(module, x), rel=1e-12)
    assert costs(Structure((b,)), H, W).flops == pytest.approx(_hooked_count(module, x), rel=1e-12)
    # params: exactly the module's parameters (conv weights + BN gamma/beta; no biases)
    n_params = sum(p.numel() for p in module.parameters())
    assert c.params == n_params
    assert c.params == _analytic_params(b)
    assert all(m.bias is None for m in module.modules() if isinstance(m, nn.Conv2d))
    # layers: main-path convs only (shortcut projections not counted)
    main_convs = sum(len(u.convs()) for u in module.units)
    assert c.layers == main_convs
    assert len(c.log_std) == len(module.units)


def test_conv_terms_of_cost_docstring_formula() -> None:
    """The conv-only part of block_cost equals the analytic conv MACs: remove BN/act/pool/add terms."""
    b = CASES["k1kxk1-change-s2"]
    btn, out, cin = 8, 32, 16
    non_conv_unit0 = (
        (2 * btn + 2 * btn / 4 + 2 * out / 4) + (btn + btn / 4 + out / 4) + cin + (2 * out / 4 + out / 4)
    )
    non_conv_unit1 = (2 * btn + 2 * btn + 2 * out) + (btn + btn + out)  # at 1/4 of the input area
    non_conv = non_conv_unit0 + non_conv_unit1 / 4
    assert (block_cost(b).flops_per_pixel - non_conv) * H * W == pytest.approx(
        _analytic_conv_macs(b, H, W), rel=1e-12
    )


@pytest.mark.parametrize("name", space_names())
def test_shipped_space_start_costs_match_modules(name: str) -> None:
    """Whole-structure params equal the built backbone's parameter count."""
    from zennas.blocks import build_backbone

    s = get_space(name).start
    with torch.device("meta"):  # parameter shapes only: no allocation, no init
        model = build_backbone(s)
    assert costs(s).params == sum(p.numel() for p in model.parameters())
    assert costs(s).flops <= get_space(name).budgets.flops  # type: ignore[operator]
    assert costs(s).layers <= get_space(name).budgets.layers  # type: ignore[operator]


def test_block_cost_is_cached() -> None:
    b = CASES["s2d-l3"]
    assert block_cost(b) is block_cost(Block("S2D", 8, 32, 2, 5, 3))


def _unit_by_unit(b: Block) -> tuple[float, float, int, tuple[float, ...]]:
    """A plain unit-by-unit loop of the docstring's formulas (no reuse of identical units)."""
    import math

    dw = b.type == "SuperResK1DWK1"
    btn, out, k = b.bottleneck, b.out_channels, b.kernel
    assert btn is not None
    flops = params = 0.0
    area = 1.0
    log_std = []
    for u in range(b.layers):
        cin, s = (b.in_channels, b.stride) if u == 0 else (out, 1)
        g = btn if dw else 1
        f = (cin * btn + 2 * btn) + (btn * btn * k * k / (s * s * g) + 2 * btn / (s * s)) \
            + (btn * out / (s * s) + 2 * out / (s * s)) + btn + btn / s**2 + out / s**2
        p = (cin * btn + 2 * btn) + (btn * btn * k * k / g + 2 * btn) + (btn * out + 2 * out)
        shortcut = _ref_shortcut(b.type, cin, out, u == 0)
        if s == 2 and shortcut != "none":
            f += cin
        if shortcut == "projection":
            f += cin * out / (s * s) + 2 * out / (s * s) + out / s**2
            p += cin * out + 2 * out
        flops += f * area
        params += p
        area /= s * s
        log_std.append(0.5 * math.log(cin) + 0.5 * math.log(k * k if dw else btn * k * k) + 0.5 * math.log(btn))
    return flops, params, 3 * b.layers, tuple(log_std)


@pytest.mark.parametrize("btype", ["SuperResK1KXK1", "SuperResK1DWK1"])
@pytest.mark.parametrize("layers", [1, 2, 3, 7])
@pytest.mark.parametrize(("cin", "out", "stride"), [(32, 256, 2), (256, 256, 1), (128, 64, 1), (64, 64, 2)])
def test_bottleneck_cost_equals_unit_by_unit_loop(btype: str, layers: int, cin: int, out: int, stride: int) -> None:
    """Units after the second are computed once: the figures still equal a unit-by-unit loop."""
    b = Block(btype, cin, out, stride, 5, layers, 48)
    c = block_cost.__wrapped__(b)
    flops, params, n, log_std = _unit_by_unit(b)
    assert c.flops_per_pixel == pytest.approx(flops, rel=1e-12)
    assert c.params == params
    assert c.layers == n
    assert c.log_std == pytest.approx(log_std, rel=1e-15)
