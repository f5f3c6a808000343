"""``ConvKXBNRELU``: a plain kxk conv + BN + ReLU, used as the stem."""

from __future__ import annotations

from torch import Tensor, nn

from zennas.blocks.base import BlockModule, ConvNormAct, Unit
from zennas.blocks.registry import register_block
from zennas.space.structure import Block


class ConvUnit(Unit):
    def __init__(self, cin: int, cout: int, *, kernel: int, stride: int, act: str = "relu") -> None:
        super().__init__()
        self.layer = ConvNormAct(cin, cout, kernel=kernel, stride=stride, act=act)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)  # (B, cout, H/stride, W/stride)

    plain_forward = forward

    def main_ops(self) -> list[nn.Module]:
        return [self.layer.conv]


class ConvKXBNRELU(BlockModule):
    def __init__(self, *, cin: int, cout: int, kernel: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.stride, self.out_channels = stride, cout
        self.units = nn.ModuleList([ConvUnit(cin, cout, kernel=kernel, stride=stride)])


@register_block("ConvKXBNRELU")
def _build(b: Block) -> BlockModule:
    return ConvKXBNRELU(cin=b.in_channels, cout=b.out_channels, kernel=b.kernel, stride=b.stride)
