"""GiraffeDet's generalized FPN ("Giraffe neck"), as a graph plus a pure-torch neck module.

Reference: Jiang et al., "GiraffeDet: A Heavy-Neck Paradigm for Object Detection", arXiv 2202.04256.

The connectivity (``gfpn_graph``) is torch-free data in :mod:`zennas.detector.graph`, re-exported
here; this module is the torch neck built from it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn

from zennas.detector.graph import (
    GFPNConfigError,
    GFPNNode,
    Key,
    gfpn_graph,
    graph_as_json,
)
from zennas.detector.graph import check_depth_levels as _check_depth_levels

__all__ = ["FusionNode", "GFPNConfigError", "GFPNNode", "GiraffeNeck", "build_norm", "gfpn_graph", "graph_as_json"]


def build_norm(norm_cfg: dict[str, Any] | None, channels: int) -> nn.Module:
    """A tiny stand-in for mmcv's ``build_norm_layer``: types ``BN`` (default), ``SyncBN``, ``GN``."""
    cfg = dict(norm_cfg or {"type": "BN"})
    kind = cfg.pop("type", "BN")
    requires_grad = cfg.pop("requires_grad", True)
    layer: nn.Module
    if kind == "BN":
        layer = nn.BatchNorm2d(channels, **cfg)
    elif kind == "SyncBN":
        layer = nn.SyncBatchNorm(channels, **cfg)
    elif kind == "GN":
        layer = nn.GroupNorm(num_channels=channels, **cfg)  # cfg must carry num_groups
    else:
        raise GFPNConfigError(
            f"norm_cfg type must be 'BN', 'SyncBN' or 'GN', got norm_cfg={norm_cfg!r}", field="norm_cfg"
        )
    for p in layer.parameters():
        p.requires_grad_(requires_grad)
    return layer


class FusionNode(nn.Module):
    """Resize every input to this node's level, concatenate, then Conv1x1 -> SiLU -> Conv3x3 -> norm."""

    def __init__(self, node: GFPNNode, in_channels: int, channels: int, norm_cfg: dict[str, Any] | None):
        super().__init__()
        self.level = node.node[1]
        self.in_levels = [lvl for _, lvl in node.inputs]
        self.reduce = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.act = nn.SiLU(inplace=True)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm = build_norm(norm_cfg, channels)

    def forward(self, xs: list[Tensor]) -> Tensor:
        # Every node has a same-level input ((-1, i) on layer 0, else the skip (l - 1, i)): its size is
        # the target. Nearest to that size equals repeated x2 nearest upsampling when sizes halve exactly.
        ref_hw = xs[self.in_levels.index(self.level)].shape[-2:]
        resized = []
        for x, lvl in zip(xs, self.in_levels, strict=True):
            for _ in range(self.level - lvl):  # finer input: (N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2))
                x = F.max_pool2d(x, 3, stride=2, padding=1)
            if lvl > self.level:  # coarser input: (N, C, H/2^k, W/2^k) -> (N, C, H, W)
                x = F.interpolate(x, size=ref_hw, mode="nearest")
            resized.append(x)
        x = torch.cat(resized, dim=1)  # (N, sum of input channels, H, W)
        return self.norm(self.conv(self.act(self.reduce(x))))  # (N, channels, H, W)


class GiraffeNeck(BaseModule):
    """The GiraffeDet neck: backbone maps (fine to coarse) -> one ``out_channels`` map per level.

    ``in_channels``/``in_levels`` describe the backbone maps (``in_levels`` defaults to consecutive
    levels from ``levels[0]``); backbone maps outside ``levels`` are ignored, and levels above the last
    backbone map are made by repeated max-pooling (k3 s2 p1) of it, keeping its channels. Fusion nodes
    are ``int(256 * width)`` wide; each output node is a 1x1 conv (no bias) + norm to ``out_channels``,
    or the identity when the inner width already equals ``out_channels``.
    """

    def __init__(
        self,
        *,
        in_channels: list[int],
        out_channels: int = 256,
        depth: int = 2,
        width: float = 1.0,
        levels: tuple[int, ...] = (3, 4, 5, 6, 7),
        in_levels: tuple[int, ...] | None = None,
        norm_cfg: dict[str, Any] | None = None,
        init_cfg: dict[str, Any] | list[dict[str, Any]] | None = None,
    ):
        super().__init__(init_cfg=init_cfg)
        self.levels = _check_depth_levels(depth, levels)
        if not in_channels or any(not isinstance(c, int) or c < 1 for c in in_channels):
            raise GFPNConfigError(
                f"in_channels must be positive ints, got in_channels={in_channels!r}", field="in_channels"
            )
        if in_levels is None:
            in_levels = tuple(range(self.levels[0], self.levels[0] + len(in_channels)))
        self.in_levels = tuple(in_levels)
        if (
            len(self.in_levels) != len(in_channels)
            or any(isinstance(v, bool) or not isinstance(v, int) for v in self.in_levels)
            or self.in_levels != tuple(range(self.in_levels[0], self.in_levels[0] + len(self.in_levels)))
            or self.levels[0] not in self.in_levels
        ):
            raise GFPNConfigError(
                f"in_levels must be consecutive, one per in_channels entry and include levels[0]="
                f"{self.levels[0]}, got in_levels={in_levels!r}",
                field="in_levels",
            )
        inner = int(256 * width)
        if not isinstance(out_channels, int) or out_channels < 1:
            raise GFPNConfigError(
                f"out_channels must be an int >= 1, got out_channels={out_channels!r}", field="out_channels"
            )
        if inner < 1:
            raise GFPNConfigError(f"width must give at least one channel, got width={width!r}", field="width")
        self.inner_channels, self.out_channels = inner, out_channels
        last = self.in_levels[-1]
        backbone_ch = dict(zip(self.in_levels, in_channels, strict=True))
        chans: dict[Key, int] = {(-1, lvl): backbone_ch.get(lvl, in_channels[-1]) for lvl in self.levels}

        self.graph = gfpn_graph(depth, self.levels)
        self.fusions = nn.ModuleDict()
        self.outputs = nn.ModuleDict()
        for node in self.graph:
            tag, lvl = node.node
            if tag == "out":
                self.outputs[str(lvl)] = (
                    nn.Identity()
                    if inner == out_channels
                    else nn.Sequential(
                        nn.Conv2d(inner, out_channels, 1, bias=False), build_norm(norm_cfg, out_channels)
                    )
                )
            else:
                total = sum(chans[k] for k in node.inputs)
                self.fusions[f"{tag}_{lvl}"] = FusionNode(node, total, inner, norm_cfg)
                chans[(int(tag), lvl)] = inner
        self.extra_levels = tuple(lvl for lvl in self.levels if lvl > last)  # pooled from the last map

    def forward(self, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        if len(inputs) != len(self.in_levels):
            raise GFPNConfigError(
                f"inputs must hold {len(self.in_levels)} maps (one per in_channels entry), got {len(inputs)}",
                field="inputs",
            )
        feats: dict[Key, Tensor] = {}
        for lvl, x in zip(self.in_levels, inputs, strict=True):
            if lvl in self.levels:
                feats[(-1, lvl)] = x  # (N, C_lvl, H / 2^lvl, W / 2^lvl)
        x = inputs[-1]
        for lvl in self.extra_levels:
            x = F.max_pool2d(x, 3, stride=2, padding=1)  # (N, C_last, h, w) -> (N, C_last, h/2, w/2)
            feats[(-1, lvl)] = x
        outs: list[Tensor] = []
        for node in self.graph:
            tag, lvl = node.node
            if tag == "out":
                outs.append(self.outputs[str(lvl)](feats[node.inputs[0]]))  # (N, out_channels, h, w)
            else:
                feats[(int(tag), lvl)] = self.fusions[f"{tag}_{lvl}"]([feats[k] for k in node.inputs])
        return tuple(outs)
