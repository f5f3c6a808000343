"""Torch blocks: one parametrized test over every registered type, backbones built from structures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from zennas.blocks import (
    Backbone,
    Stage,
    build_backbone,
    get_block_builder,
    register_block,
    registered_blocks,
    stages,
)
from zennas.blocks.base import BlockModule, ConvNormAct, Unit, make_act
from zennas.errors import StructureError
from zennas.space import Block, Structure, from_tinynas, get_space, space_names
from zennas.space.kinds import BLOCK_KINDS

DATA = Path(__file__).parent.parent / "data"
STRUCTURES = json.loads((DATA / "structures.json").read_text())["structures"]
SEARCH = json.loads((DATA / "search.json").read_text())


def _example(btype: str, stride: int, layers: int) -> Block:
    kind = BLOCK_KINDS[btype]
    if kind.fixed_stride:
        stride = kind.fixed_stride
    if kind.max_layers is not None:
        layers = min(layers, kind.max_layers)
    btn = 12 if kind.has_bottleneck else None
    return Block(btype, 8, 16, stride, 3, layers, btn)


def test_registry_covers_every_block_kind() -> None:
    assert registered_blocks() == sorted(BLOCK_KINDS)


@pytest.mark.parametrize("btype", registered_blocks())
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("layers", [1, 3])
def test_block_output_shape_and_stride(btype: str, stride: int, layers: int) -> None:
    b = _example(btype, stride, layers)
    Structure((b,))  # a valid block
    torch.manual_seed(0)
    m = get_block_builder(btype)(b)
    assert isinstance(m, BlockModule)
    assert m.stride == b.stride and m.out_channels == b.out_channels
    assert len(m.units) == b.layers
    assert all(isinstance(u, Unit) for u in m.units)
    x = torch.randn(2, b.in_channels, 24, 20)
    with torch.no_grad():
        y = m.eval()(x)
    assert y.shape == (2, b.out_channels, 24 // b.stride, 20 // b.stride)
    assert torch.isfinite(y).all()
    # plain_forward (residual removed) keeps the shape too
    z = x
    with torch.no_grad():
        for u in m.units:
            z = u.plain_forward(z)
    assert z.shape == y.shape
    # main-path convs: the "layers" count
    kind = BLOCK_KINDS[btype]
    n_convs = sum(len(u.convs()) for u in m.units)
    assert n_convs == kind.convs_per_unit * b.layers


@pytest.mark.parametrize("btype", [t for t in registered_blocks() if t != "S2D"])  # S2D: even sizes only
def test_block_odd_input_sizes_ceil(btype: str) -> None:
    b = _example(btype, 2, 1)
    m = get_block_builder(btype)(b).eval()
    with torch.no_grad():
        y = m(torch.randn(1, b.in_channels, 15, 17))
    assert y.shape[-2:] == (8, 9)


def test_s2d_rejects_odd_input() -> None:
    m = get_block_builder("S2D")(Block("S2D", 8, 16, 2, 3, 2)).eval()
    for shape in [(1, 8, 15, 16), (1, 8, 16, 15)]:
        with pytest.raises(ValueError, match="S2D needs even height and width"):
            m(torch.randn(*shape))


def test_s2d_is_pixel_unshuffle_then_1x1() -> None:
    m = get_block_builder("S2D")(Block("S2D", 4, 8, 2, 3, 1))
    ops = m.units[0].main_ops()
    assert isinstance(ops[0], nn.PixelUnshuffle) and ops[0].downscale_factor == 2
    assert isinstance(ops[1], nn.Conv2d) and ops[1].in_channels == 16 and ops[1].kernel_size == (1, 1)


def test_depthwise_conv_groups() -> None:
    m = get_block_builder("SuperResK1DWK1")(Block("SuperResK1DWK1", 8, 16, 2, 5, 1, 48))
    conv2 = m.units[0].convs()[1]
    assert conv2.groups == 48 and conv2.kernel_size == (5, 5) and conv2.stride == (2, 2)


def test_unknown_builder() -> None:
    with pytest.raises(StructureError, match="no torch module registered for block type 'Nope'") as ei:
        get_block_builder("Nope")
    assert ei.value.field == "type"


def test_duplicate_registration_is_an_error() -> None:
    with pytest.raises(KeyError, match=r"block type .S2D. is already registered by zennas\.blocks\.s2d"):
        register_block("S2D")(lambda b: None)  # type: ignore[arg-type, return-value]
    assert registered_blocks() == sorted(BLOCK_KINDS)


def test_make_act() -> None:
    assert isinstance(make_act("relu"), nn.ReLU)
    assert isinstance(make_act("silu"), nn.SiLU)
    assert isinstance(make_act("none"), nn.Identity)
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        make_act("gelu")
    c = ConvNormAct(4, 8, kernel=3, stride=2, groups=2)
    assert c.conv.padding == (1, 1) and c.conv.bias is None and c.conv.groups == 2


# -- backbones -------------------------------------------------------------------------------
def _all_structures() -> dict[str, Structure]:
    out = {name: from_tinynas(fx["structure"]) for name, fx in STRUCTURES.items()}
    out["search_start"] = from_tinynas(SEARCH["start_structure"])
    for name in space_names():
        out[f"space:{name}"] = get_space(name).start
    return out


ALL = _all_structures()


def _meta_backbone(s: Structure, out_stages: list[int] | None = None) -> Backbone:
    """Built on the meta device: shapes without allocating or initializing weights (fast)."""
    with torch.device("meta"):
        return build_backbone(s, out_stages).eval()


@pytest.mark.parametrize("name", sorted(ALL))
def test_backbone_outputs_c3_c5(name: str) -> None:
    s = ALL[name]
    model = _meta_backbone(s)
    assert isinstance(model, Backbone) and isinstance(model, nn.Module)
    st = stages(s)
    assert len(st) == 5
    assert model.out_stages == (2, 3, 4)
    assert model.out_strides == (8, 16, 32)
    assert model.out_channels == tuple(st[i].channels for i in (2, 3, 4))
    assert model.out_channels[-1] == s.out_channels
    x = torch.empty(1, s.in_channels, 64, 96, device="meta")
    outs = model(x)
    assert len(outs) == 3
    for y, c, stride in zip(outs, model.out_channels, model.out_strides, strict=True):
        assert y.shape == (1, c, 64 // stride, 96 // stride)


@pytest.mark.parametrize("name", sorted(ALL))
def test_backbone_all_stages_and_early_exit(name: str) -> None:
    s = ALL[name]
    model = _meta_backbone(s, out_stages=[0, 1])
    assert model.out_strides == (2, 4)
    outs = model(torch.empty(1, 3, 32, 32, device="meta"))
    assert [tuple(o.shape) for o in outs] == [
        (1, c, 32 // st, 32 // st) for c, st in zip(model.out_channels, model.out_strides, strict=True)
    ]
    assert len(model.block_modules()) == len(s)


@pytest.mark.parametrize("bad", [[5], [-1], [2, 1], [1, 1]])
def test_backbone_rejects_bad_out_stages(bad: list[int]) -> None:
    with pytest.raises(ValueError, match="out_stages"):
        _meta_backbone(ALL["maedet_s"], out_stages=bad)


@pytest.mark.parametrize("name", ["space:detection-dw", "space:giraffe-s2d"])
def test_backbone_real_forward(name: str) -> None:
    s = ALL[name]
    torch.manual_seed(0)
    model = build_backbone(s).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [
        (2, c, 64 // st, 64 // st) for c, st in zip(model.out_channels, model.out_strides, strict=True)
    ]
    assert all(torch.isfinite(o).all() for o in outs)


def test_backbone_s2d_rejects_odd_input() -> None:
    model = _meta_backbone(ALL["space:giraffe-s2d"])
    with pytest.raises(ValueError, match="S2D needs even height and width"):
        model(torch.empty(1, 3, 66, 66, device="meta"))  # 33x33 after the stem


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_stages_match_fixture(name: str) -> None:
    fx = STRUCTURES[name]["stages"]
    s = ALL[name]
    st = stages(s)
    assert [x.name for x in st] == ["C1", "C2", "C3", "C4", "C5"]
    assert [x.channels for x in st] == fx["channels"]
    assert [480 // x.stride for x in st] == fx["feature_map_480"]
    # unit index: the stem is unit 0, then every bottleneck unit in order
    unit_end = [sum(b.layers for b in s.blocks[: x.end_block + 1]) - 1 for x in st]
    assert unit_end == fx["end_unit_index"]
    layer_end = [
        sum(BLOCK_KINDS[b.type].convs_per_unit * b.layers for b in s.blocks[: x.end_block + 1]) for x in st
    ]
    assert layer_end == fx["end_layer_index"]


def test_stages_r50_end_blocks() -> None:
    assert stages(ALL["r50_like"]) == [
        Stage("C1", 0, 64, 2),
        Stage("C2", 1, 256, 4),
        Stage("C3", 2, 512, 8),
        Stage("C4", 3, 1024, 16),
        Stage("C5", 4, 2048, 32),
    ]


def test_stages_with_a_stride1_block() -> None:
    # the search start has a stride-1 block (index 4): C4 ends there, not at block 3
    st = stages(ALL["search_start"])
    assert [x.end_block for x in st] == [0, 1, 2, 4, 5]
    assert [x.channels for x in st] == [32, 256, 512, 1024, 2048]
    assert [x.stride for x in st] == [2, 4, 8, 16, 32]
