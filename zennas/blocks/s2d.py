"""``S2D``: GiraffeDet's space-to-depth block (arXiv 2202.04256, the "S2D chain" backbone).

Space-to-depth x2 moves each 2x2 patch into channels (no FLOPs, no parameters), then a 1x1 conv +
BN + SiLU mixes ``4*in`` channels down to ``out``. A block with ``layers > 1`` follows it with
``layers - 1`` kxk conv + BN + SiLU refinement units at the new resolution (no residual, as in the
S2D chain; the paper's chain is the ``layers = 1`` case).
"""

from __future__ import annotations

from torch import Tensor, nn

from zennas.blocks.base import BlockModule, ConvNormAct, Unit
from zennas.blocks.conv import ConvUnit
from zennas.blocks.registry import register_block
from zennas.errors import ScoreError
from zennas.space.structure import Block


class SpaceToDepthUnit(Unit):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.s2d = nn.PixelUnshuffle(2)  # (B, 4*cin, H/2, W/2)
        self.layer = ConvNormAct(4 * cin, cout, kernel=1, act="silu")  # (B, cout, H/2, W/2)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(self.s2d(x))

    plain_forward = forward

    def main_ops(self) -> list[nn.Module]:
        return [self.s2d, self.layer.conv]


class S2DBlock(BlockModule):
    def __init__(self, *, cin: int, cout: int, kernel: int = 3, layers: int = 1) -> None:
        super().__init__()
        self.stride, self.out_channels = 2, cout
        units: list[nn.Module] = [SpaceToDepthUnit(cin, cout)]
        units += [ConvUnit(cout, cout, kernel=kernel, stride=1, act="silu") for _ in range(layers - 1)]
        self.units = nn.ModuleList(units)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            raise ScoreError(f"S2D needs even height and width, got {tuple(x.shape[-2:])}", field="resolution")
        return super().forward(x)


@register_block("S2D")
def _build(b: Block) -> BlockModule:
    return S2DBlock(cin=b.in_channels, cout=b.out_channels, kernel=b.kernel, layers=b.layers)
