"""GiraffeDet GFPN graph (against the original implementation's graphs) and the pure-torch neck."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from zennas.errors import ZenNASError
from zennas.mmdet.gfpn import FusionNode, GFPNConfigError, GFPNNode, GiraffeNeck, gfpn_graph, graph_as_json

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "gfpn_graph.json"


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(FIXTURE.read_text())["graphs"]


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_graph_matches_original_implementation(reference: dict, depth: int) -> None:
    assert graph_as_json(depth) == reference[str(depth)]


def test_known_node() -> None:
    nodes = {n.node: n.inputs for n in gfpn_graph(2)}
    assert nodes[(2, 7)] == ((0, 7), (1, 7), (1, 6))
    assert nodes[(0, 3)] == ((-1, 3), (0, 4), (-1, 4))


def _check_invariants(depth: int, levels: tuple[int, ...]) -> None:
    graph = gfpn_graph(depth, levels)
    n_layers = 2 * depth - 1
    assert graph_as_json(depth, levels)["fusion_layers"] == n_layers
    assert all(isinstance(n, GFPNNode) for n in graph)
    fusion = [n for n in graph if n.node[0] != "out"]
    outs = [n for n in graph if n.node[0] == "out"]
    assert len(fusion) == n_layers * len(levels)
    seen: set[tuple] = {(-1, lvl) for lvl in levels}
    for node in fusion:
        layer, lvl = node.node
        assert isinstance(layer, int)
        # flow order: even layers coarse-to-fine, odd layers fine-to-coarse
        layer_nodes = [n.node[1] for n in fusion if n.node[0] == layer]
        assert layer_nodes == (sorted(levels, reverse=True) if layer % 2 == 0 else sorted(levels))
        assert len(set(node.inputs)) == len(node.inputs)
        for src_layer, src_lvl in node.inputs:
            assert src_lvl in levels
            assert -1 <= src_layer <= layer
            assert (src_layer, src_lvl) in seen  # evaluation order is topological
        same_level = [k[0] for k in node.inputs if k[1] == lvl]
        if layer == 0:
            assert node.inputs[0] == (-1, lvl)
        else:
            expected = sorted(layer - 2**k for k in range(layer.bit_length()) if layer - 2**k >= 0)
            assert [s for s in same_level if s != layer] == expected
            assert list(node.inputs[: len(expected)]) == [(s, lvl) for s in expected]
        seen.add(node.node)  # type: ignore[arg-type]
    assert [n.node for n in outs] == [("out", lvl) for lvl in levels]
    assert all(n.inputs == ((n_layers - 1, n.node[1]),) for n in outs)


@pytest.mark.parametrize("depth", range(2, 9))
def test_rule_invariants(depth: int) -> None:
    _check_invariants(depth, (3, 4, 5, 6, 7))


def test_p2_p6_variant_uses_same_rule() -> None:
    _check_invariants(3, (2, 3, 4, 5, 6))
    shifted = gfpn_graph(3, (2, 3, 4, 5, 6))
    base = gfpn_graph(3)
    assert len(shifted) == len(base)
    for a, b in zip(shifted, base, strict=True):  # same graph, every level moved down by one
        assert a.node == (b.node[0], b.node[1] - 1)
        assert a.inputs == tuple((layer, lvl - 1) for layer, lvl in b.inputs)


def test_depth_one_is_a_single_top_down_layer() -> None:
    graph = gfpn_graph(1, (3, 4, 5))
    assert [n.node for n in graph] == [(0, 5), (0, 4), (0, 3), ("out", 3), ("out", 4), ("out", 5)]


@pytest.mark.parametrize("depth", [0, -1, 2.0, "2", True])
def test_bad_depth(depth: object) -> None:
    with pytest.raises(GFPNConfigError, match="depth") as info:
        gfpn_graph(depth)  # type: ignore[arg-type]
    assert isinstance(info.value, ZenNASError) and info.value.field == "depth"
    with pytest.raises(ValueError, match="depth"):
        GiraffeNeck(in_channels=[8, 16, 32], depth=depth)  # type: ignore[arg-type]


@pytest.mark.parametrize("levels", [(), (3, 5, 6), (7, 6, 5), (3, 3, 4), (3.0, 4.0)])
def test_bad_levels(levels: tuple) -> None:
    with pytest.raises(GFPNConfigError, match="levels") as info:
        gfpn_graph(2, levels)
    assert info.value.field == "levels"
    with pytest.raises(ValueError, match="levels"):
        GiraffeNeck(in_channels=[8, 16, 32], levels=levels)


def test_bad_neck_args() -> None:
    with pytest.raises(GFPNConfigError, match="in_levels"):
        GiraffeNeck(in_channels=[8, 16, 32], in_levels=(4, 5, 6))
    with pytest.raises(GFPNConfigError, match="in_levels"):
        GiraffeNeck(in_channels=[8, 16, 32], in_levels=(3, 4))
    with pytest.raises(GFPNConfigError, match="in_channels"):
        GiraffeNeck(in_channels=[])
    with pytest.raises(GFPNConfigError, match="norm_cfg"):
        GiraffeNeck(in_channels=[8, 16, 32], norm_cfg={"type": "LN"})
    neck = GiraffeNeck(in_channels=[8, 16, 32], depth=1, width=1 / 32, out_channels=8)
    with pytest.raises(GFPNConfigError, match="inputs"):
        neck(_pyramid((8, 16), 3, 64))


def _fusion(neck: GiraffeNeck, key: str) -> FusionNode:
    module = neck.fusions[key]
    assert isinstance(module, FusionNode)
    return module


def _pyramid(channels: tuple[int, ...], first_level: int, size: int) -> tuple[torch.Tensor, ...]:
    return tuple(
        torch.randn(1, c, size >> (first_level + i), size >> (first_level + i))
        for i, c in enumerate(channels)
    )


def test_neck_shapes_p3_p7() -> None:
    torch.manual_seed(0)
    neck = GiraffeNeck(in_channels=[48, 96, 192], out_channels=64, depth=2, width=0.25).eval()
    with torch.no_grad():
        outs = neck(_pyramid((48, 96, 192), 3, 256))
    assert [tuple(o.shape) for o in outs] == [(1, 64, s, s) for s in (32, 16, 8, 4, 2)]
    assert neck.extra_levels == (6, 7)
    # layer-0 nodes concatenate raw backbone maps; P6/P7 carry C5's channels
    assert _fusion(neck, "0_7").reduce.in_channels == 192 + 192
    assert _fusion(neck, "0_5").reduce.in_channels == 192 + 64 + 192 + 96
    assert _fusion(neck, "2_3").reduce.in_channels == 4 * 64  # (0,3), (1,3), (2,4), (1,4)


def test_neck_shapes_p2_p6() -> None:
    neck = GiraffeNeck(
        in_channels=[24, 48, 96, 192], out_channels=32, depth=1, width=0.125, levels=(2, 3, 4, 5, 6)
    ).eval()
    with torch.no_grad():
        outs = neck(_pyramid((24, 48, 96, 192), 2, 128))
    assert [tuple(o.shape) for o in outs] == [(1, 32, s, s) for s in (32, 16, 8, 4, 2)]
    assert neck.extra_levels == (6,)


def test_width_scaling_and_output_projection() -> None:
    wide = GiraffeNeck(in_channels=[8, 16, 32], depth=1)
    narrow = GiraffeNeck(in_channels=[8, 16, 32], depth=1, width=0.7)
    assert wide.inner_channels == 256 and narrow.inner_channels == 179
    assert _fusion(wide, "0_3").conv.out_channels == 256
    assert _fusion(narrow, "0_3").conv.out_channels == 179
    assert isinstance(wide.outputs["3"], nn.Identity)  # inner == out_channels: no projection
    proj = narrow.outputs["3"]
    assert isinstance(proj, nn.Sequential)
    assert (proj[0].in_channels, proj[0].out_channels, proj[0].bias) == (179, 256, None)
    assert isinstance(proj[1], nn.BatchNorm2d)


def test_norm_cfg_and_training_step() -> None:
    neck = GiraffeNeck(
        in_channels=[8, 16],
        out_channels=16,
        depth=2,
        width=1 / 16,
        levels=(3, 4, 5),
        norm_cfg={"type": "GN", "num_groups": 4},
    )
    assert isinstance(_fusion(neck, "1_4").norm, nn.GroupNorm)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in neck.modules())
    outs = neck(_pyramid((8, 16), 3, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 16, s, s) for s in (8, 4, 2)]
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is not None for p in neck.parameters())


def test_extra_finer_backbone_map_is_ignored() -> None:
    neck = GiraffeNeck(
        in_channels=[4, 8, 16], out_channels=8, depth=1, width=1 / 32, in_levels=(2, 3, 4), levels=(3, 4, 5)
    ).eval()
    with torch.no_grad():
        outs = neck(_pyramid((4, 8, 16), 2, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 8, s, s) for s in (8, 4, 2)]
