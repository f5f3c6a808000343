"""A new block type is one registration: a kind (its layout) plus its torch module, from this file alone.

``SuperResKXKX`` is a ResNet basic-block stage: per unit two kxk conv + BN (ReLU after the first),
a residual (a 1x1 conv + BN projection, after a 2x2 average pool when strided, when the stride or
the width changes; identity otherwise), then ReLU. Nothing in ``zennas/`` names it: costs, conv
MACs, admission estimates, latency ops and a search all come from its layout, and each is checked
against the module built from it. The fixture unregisters both registrations afterwards.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from zennas.admission import block_ops as admission_ops
from zennas.admission import estimate
from zennas.blocks import register_block, registered_blocks, unregister_block
from zennas.blocks.base import BlockModule, ConvNormAct
from zennas.blocks.base import Unit as UnitModule
from zennas.cost import block_cost, costs
from zennas.detector.cost import backbone_conv_macs
from zennas.errors import SpecError, StructureError
from zennas.latency.ops import structure_ops
from zennas.space import (
    BLOCK_KINDS,
    Block,
    BlockKind,
    LayoutWriter,
    Structure,
    register_block_kind,
    space_from_dict,
    unregister_block_kind,
)

NAME = "SuperResKXKX"
H = W = 32


# -- the new kind: its layout (torch-free) and its torch module, both from one shortcut rule -----------
def _projects(cin: int, out: int, stride: int) -> bool:
    return stride == 2 or cin != out


def _write_unit(w: LayoutWriter, cin: int, out: int, k: int, s: int, repeat: int) -> None:
    w.conv(cin, out, k, s)
    w.conv(out, out, k, act="none", same_width=True)
    w.shortcut()  # a residual: identity unless it projects
    if _projects(cin, out, s):
        if s == 2:
            w.pool(cin)
        w.conv(cin, out, act="none")
    w.unit("relu", repeat)


def basic_layout(b: Block, w: LayoutWriter) -> None:
    _write_unit(w, b.in_channels, b.out_channels, b.kernel, b.stride, 1)
    if b.layers > 1:
        _write_unit(w, b.out_channels, b.out_channels, b.kernel, 1, b.layers - 1)


KIND = BlockKind(NAME, basic_layout, has_bottleneck=False, convs_per_unit=2,
                 description="ResNet basic-block stage: `layers` units of kxk -> kxk with residual")


class BasicUnit(UnitModule):
    def __init__(self, cin: int, cout: int, *, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(cin, cout, kernel=kernel, stride=stride)  # (B, cout, H/s, W/s)
        self.conv2 = ConvNormAct(cout, cout, kernel=kernel, act="none")  # (B, cout, H/s, W/s)
        layers: list[nn.Module] = []
        if _projects(cin, cout, stride):
            if stride == 2:
                layers.append(nn.AvgPool2d(kernel_size=2, stride=2, ceil_mode=True))  # (B, cin, H/2, W/2)
            layers.append(ConvNormAct(cin, cout, kernel=1, act="none"))  # (B, cout, H/s, W/s)
        self.shortcut = nn.Sequential(*layers)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))

    def plain_forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv2(self.conv1(x)))  # residual removed

    def main_ops(self) -> list[nn.Module]:
        return [self.conv1.conv, self.conv2.conv]


class BasicStage(BlockModule):
    def __init__(self, b: Block) -> None:
        super().__init__()
        self.stride, self.out_channels = b.stride, b.out_channels
        self.units = nn.ModuleList(
            BasicUnit(b.in_channels if i == 0 else b.out_channels, b.out_channels, kernel=b.kernel,
                      stride=b.stride if i == 0 else 1)
            for i in range(b.layers)
        )


def build_basic(b: Block) -> BlockModule:
    return BasicStage(b)


@pytest.fixture
def basic_kind() -> Iterator[BlockKind]:
    kinds_before, blocks_before = dict(BLOCK_KINDS), registered_blocks()
    register_block_kind(KIND)
    register_block(NAME)(build_basic)
    try:
        yield KIND
    finally:
        unregister_block(NAME)
        unregister_block_kind(NAME)
    assert BLOCK_KINDS == kinds_before and registered_blocks() == blocks_before  # nothing left behind


CASES = {
    "change-s2-3units": Block(NAME, 16, 32, 2, 3, 3),
    "same-s1-2units": Block(NAME, 24, 24, 1, 5, 2),
    "change-s1": Block(NAME, 16, 40, 1, 3, 1),
    "same-s2-odd-input": Block(NAME, 8, 8, 2, 3, 2),
}


def _module(b: Block) -> BlockModule:
    Structure((b,))  # valid on its own
    torch.manual_seed(0)
    return build_basic(b).eval()


def _measured(module: nn.Module, x: Tensor) -> tuple[int, float]:
    """(conv MACs by FlopCounterMode, the other ops by hooks: BN 2/elt, activation 1/elt, 2x2 pool
    1/input elt, the residual add 1/elt when the shortcut projects): cost.py's convention."""
    other = 0.0

    def hook(m: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal other
        if isinstance(m, nn.BatchNorm2d):
            other += 2 * out.numel()
        elif isinstance(m, (nn.ReLU, nn.SiLU)):
            other += out.numel()
        elif isinstance(m, nn.AvgPool2d):
            other += args[0].numel()

    def add_hook(_m: nn.Module, _args: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal other
        other += out.numel()

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    for unit in module.units:  # type: ignore[union-attr]
        if any(isinstance(m, nn.Conv2d) for m in unit.shortcut.modules()):
            handles.append(unit.shortcut.register_forward_hook(add_hook))
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            module(x)
    finally:
        for hd in handles:
            hd.remove()
    flops = counter.get_total_flops()
    assert flops % 2 == 0  # FlopCounterMode counts 2 per MAC
    return flops // 2, other


@pytest.mark.parametrize("case", sorted(CASES))
def test_cost_equals_the_built_module(basic_kind: BlockKind, case: str) -> None:
    b = CASES[case]
    h = w = 31 if "odd" in case else H
    module = _module(b)
    macs, other = _measured(module, torch.randn(1, b.in_channels, h, w))
    c = block_cost(b)
    if h == H:  # the analytic count is linear in H*W (a 31x31 map pools to 16x16: not exactly a quarter)
        assert c.flops_per_pixel * h * w == macs + other
        assert costs(Structure((b,)), h, w).flops == macs + other
        assert backbone_conv_macs(Structure((b,)), h, w) == macs
    assert c.params == sum(p.numel() for p in module.parameters())  # exact
    units: list[BasicUnit] = list(module.units)  # type: ignore[arg-type]
    assert c.layers == sum(len(u.convs()) for u in units) == KIND.convs_per_unit * b.layers
    assert len(c.log_std) == b.layers
    # the admission op list is the module's ops at their real (integer) sizes: its MACs are exact
    ops = list(admission_ops(Structure((b,)), h, w))
    assert sum(op.macs * op.count for op in ops) == macs
    assert sum(op.count for op in ops if op.kind == "conv") == sum(isinstance(m, nn.Conv2d) for m in module.modules())
    assert sum(op.count for op in ops if op.kind == "pool") == sum(isinstance(m, nn.AvgPool2d) for m in module.modules())


def test_log_std_is_the_fan_in_rule(basic_kind: BlockKind) -> None:
    """Each unit contributes log sqrt(fan_in) of its two main-path convs (entropy-analytic)."""
    b = CASES["change-s2-3units"]
    first = 0.5 * math.log(16 * 9) + 0.5 * math.log(32 * 9)
    rest = 0.5 * math.log(32 * 9) + 0.5 * math.log(32 * 9)
    assert block_cost(b).log_std == pytest.approx((first, rest, rest), rel=1e-15)


def test_admission_estimates_it(basic_kind: BlockKind) -> None:
    """Every evaluation is estimated; the compute of one inference is the built backbone's conv MACs."""
    from zennas.blocks import build_backbone

    s = Structure((Block("ConvKXBNRELU", 3, 16, 2, 3, 1), Block(NAME, 16, 32, 2, 3, 3), Block(NAME, 32, 32, 1, 5, 2)))
    for what in ("entropy", "zen", "grad-norm", "synflow", "latency"):
        e = estimate(s, what, height=64, width=64)
        assert e.memory_bytes > e.weight_bytes > 0 and e.gmacs > 0, what
    torch.manual_seed(0)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        build_backbone(s, out_stages=[1]).eval()(torch.randn(1, 3, 64, 64))
    assert estimate(s, "latency", height=64, width=64).gmacs * 1e9 == pytest.approx(
        counter.get_total_flops() // 2, rel=1e-12)


def test_latency_ops_cover_it(basic_kind: BlockKind) -> None:
    """One op per conv and pool of the module; each op builds and runs as the runtime times it."""
    from zennas.latency.runtimes import op_module

    for b in CASES.values():
        if b.stride == 2 and b.in_channels == 8:
            continue  # odd-size case: covered by the cost test
        module = _module(b)
        ops = structure_ops(Structure((b,)), H, W)
        convs = sum(isinstance(m, nn.Conv2d) for m in module.modules())
        pools = sum(isinstance(m, nn.AvgPool2d) for m in module.modules())
        assert sum(op.key.kind != "pool" for op in ops) == convs, b
        assert sum(op.key.kind == "pool" for op in ops) == pools, b
        # conv1 (kxk, width changes) is a "conv" op, the fused tail a kxk "pw_add"
        kinds = [op.key.kind for op in ops]
        assert kinds[0] == "conv"
        assert kinds.count("pw_add") == b.layers
        assert sum(op.flops() for op in ops if op.key.kind != "pool") == _measured(module, torch.randn(
            1, b.in_channels, H, W))[0]
        for op in ops:
            m, inputs, _ = op_module(op)
            with torch.no_grad():
                m(*inputs)


def _space_doc(tmp_path: Path) -> dict[str, object]:
    text = f"""
name: basic-blocks
description: a stem, then ResNet basic-block stages (registered by a test)
start:
  - {{type: ConvKXBNRELU, in: 3, out: 16, stride: 2, kernel: 3, layers: 1}}
  - {{type: {NAME}, in: 16, out: 32, stride: 2, kernel: 3, layers: 1}}
  - {{type: {NAME}, in: 32, out: 64, stride: 2, kernel: 3, layers: 1}}
  - {{type: SuperResK1KXK1, in: 64, out: 128, stride: 2, kernel: 3, layers: 1, bottleneck: 32}}
  - {{type: {NAME}, in: 128, out: 256, stride: 2, kernel: 3, layers: 1}}
block_types:
  first: [ConvKXBNRELU]
  rest: [{NAME}, SuperResK1KXK1]
stages: 5
stage_weights: [0, 0, 1, 1, 6]
mutation:
  stem_fields: [out]
  block_fields: [out, kernel, bottleneck, layers]
  channel_round: 8
  max_channels: 512
  stem_max_out: 32
  kernels: [3, 5]
budgets:
  flops: 1.0e9
  layers: 40
  height: 224
  width: 224
"""
    path = tmp_path / "basic.yaml"
    path.write_text(text)
    return yaml.safe_load(path.read_text())  # type: ignore[no-any-return]


@pytest.mark.timeout(120)
def test_search_runs_in_a_space_with_it(basic_kind: BlockKind, tmp_path: Path) -> None:
    from zennas.search import Budgets, SearchSpec, run_search

    doc = _space_doc(tmp_path)
    spec = SearchSpec(space="inline", space_doc=doc, height=224, width=224, budgets=Budgets(flops=1.0e9, layers=40),
                      iterations=400, population=16, generation=8, warmup_iterations=0, seed=0)
    best = run_search(spec).best_structure
    assert NAME in {b.type for b in best.blocks}
    assert best != space_from_dict(doc).start  # the search moved
    c = costs(best, 224, 224)
    assert c.flops <= 1.0e9 and c.layers <= 40
    # a latency profile planned for the space has a table for every op of its structures
    from zennas.latency.build import BuildSpec, plan_tables

    space = space_from_dict(doc)
    keys = {t.key for t in plan_tables(space, BuildSpec(runtime="torch", height=224, width=224, space=space.name,
                                                          space_doc=doc, plan_samples=20))}
    for s in (space.start, best):
        assert {op.key for op in structure_ops(s, 224, 224)} <= keys


def test_a_taken_name_names_its_owner(basic_kind: BlockKind) -> None:
    with pytest.raises(KeyError, match=re.escape(f"'{NAME}' is already registered by {__name__}.basic_layout")):
        register_block_kind(KIND)
    with pytest.raises(KeyError, match=re.escape("'S2D' is already registered by zennas.space.kinds._s2d_layout")):
        register_block_kind(BlockKind("S2D", basic_layout, has_bottleneck=False, convs_per_unit=2))
    with pytest.raises(KeyError, match=re.escape("'SuperResConvK1KXK1' is already registered by zennas.space.kinds._k1kxk1_layout")):
        register_block_kind(BlockKind("Other", basic_layout, has_bottleneck=False, convs_per_unit=2,
                                      tinynas_names=("SuperResConvK1KXK1",)))
    assert "Other" not in BLOCK_KINDS


def test_unregistered_it_is_unknown_again() -> None:
    assert NAME not in BLOCK_KINDS
    with pytest.raises(StructureError, match="not a known block type"):
        Structure((Block(NAME, 3, 8, 2, 3, 1),))
    with pytest.raises(SpecError, match=f"no cost model for block type '{NAME}'"):
        block_cost(Block(NAME, 3, 8, 2, 3, 1))


def test_the_recorder_refuses_a_bad_layout() -> None:
    def even_kernel(b: Block, w: LayoutWriter) -> None:
        w.conv(b.in_channels, b.out_channels, 2)
        w.unit()

    def unended(b: Block, w: LayoutWriter) -> None:
        w.conv(b.in_channels, b.out_channels, 3)

    b = Block("ConvKXBNRELU", 3, 8, 2, 3, 1)
    for layout, msg in ((even_kernel, "wrote a bad conv"), (unended, "must end every unit")):
        kind = BlockKind("Broken", layout, has_bottleneck=False, convs_per_unit=1)
        with pytest.raises(SpecError, match=msg):
            kind.units(b)


@pytest.mark.parametrize("name", sorted(BLOCK_KINDS))
def test_every_kind_counts_its_declared_convs_per_unit(name: str) -> None:
    """A kind's declared ``convs_per_unit`` (what the mutator and the bound cap layers with) is what
    its layout's main path holds."""
    kind = BLOCK_KINDS[name]
    units = 1 if kind.max_layers == 1 else 3
    b = Block(name, 16, 32, kind.fixed_stride or 2, 3, units, 16 if kind.has_bottleneck else None)
    assert block_cost(b).layers == kind.convs_per_unit * units
    assert sum(u.repeat for u in kind.units(b)) == units
