"""What each block type *is*, as data: which fields it uses and how it is counted.

This table is torch-free so that structures, costs and scores can be checked and computed without
building a model. The torch modules live in :mod:`zennas.blocks`, registered under the same names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BlockKind:
    name: str  # the block type name used in structures
    has_bottleneck: bool  # whether `bottleneck` channels are a field of this type
    convs_per_unit: int  # conv layers counted per repeated unit ("layers" budget)
    fixed_stride: int | None = None  # the only allowed stride, when the type fixes it
    max_layers: int | None = None  # upper bound on `layers` (units), when the type fixes it
    stem: bool = False  # a plain conv usable as the first block
    description: str = ""


BLOCK_KINDS: dict[str, BlockKind] = {
    k.name: k
    for k in (
        BlockKind(
            "ConvKXBNRELU", has_bottleneck=False, convs_per_unit=1, max_layers=1, stem=True,
            description="conv kxk + BN + ReLU (the stem)",
        ),
        BlockKind(
            "SuperResK1KXK1", has_bottleneck=True, convs_per_unit=3,
            description="ResNet-like bottleneck stage: `layers` units of 1x1 -> kxk -> 1x1 with residual",
        ),
        BlockKind(
            "SuperResK1DWK1", has_bottleneck=True, convs_per_unit=3,
            description="MobileNet-like inverted residual stage: 1x1 expand -> kxk depthwise -> 1x1",
        ),
        BlockKind(
            "S2D", has_bottleneck=False, convs_per_unit=1, fixed_stride=2,
            description="GiraffeDet space-to-depth x2 + 1x1 conv/BN/SiLU, then `layers`-1 kxk conv units",
        ),
    )
}


def block_kind(name: str) -> BlockKind | None:
    return BLOCK_KINDS.get(name)
