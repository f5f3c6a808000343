"""``SuperResK1KXK1`` (ResNet-like) and ``SuperResK1DWK1`` (MobileNet-like) bottleneck stages.

A stage is ``layers`` units; a unit is 1x1 -> kxk -> 1x1 with a residual. The first unit carries the
stage's stride (on the kxk conv) and its input channels. Which shortcut a unit has is
:meth:`zennas.space.kinds.Bottleneck.shortcut` (TinyNAS's rule, the one the kinds' layouts use): a projection
(2x2 average pool if stride 2, then 1x1 conv + BN; always on the first K1KXK1 unit), an identity
(average pool if stride 2), or none (a K1DWK1 unit whose channels change has no residual).
The depthwise variant makes the kxk conv depthwise (groups = bottleneck channels).
"""

from __future__ import annotations

from torch import Tensor, nn

from zennas.blocks.base import BlockModule, ConvNormAct, Unit
from zennas.blocks.registry import register_block
from zennas.space.kinds import BOTTLENECKS, Bottleneck, Shortcut
from zennas.space.structure import Block


class BottleneckUnit(Unit):
    def __init__(self, cin: int, cout: int, btn: int, *, kernel: int, stride: int, depthwise: bool,
                 shortcut: Shortcut) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(cin, btn, kernel=1)  # (B, btn, H, W)
        self.conv2 = ConvNormAct(btn, btn, kernel=kernel, stride=stride,
                                 groups=btn if depthwise else 1)  # (B, btn, H/s, W/s)
        self.conv3 = ConvNormAct(btn, cout, kernel=1, act="none")  # (B, cout, H/s, W/s)
        self.residual = shortcut != "none"
        layers: list[nn.Module] = []
        if self.residual and stride == 2:
            layers.append(nn.AvgPool2d(kernel_size=2, stride=2, ceil_mode=True))  # (B, cin, H/2, W/2)
        if shortcut == "projection":
            layers.append(ConvNormAct(cin, cout, kernel=1, act="none"))  # (B, cout, H/s, W/s)
        self.shortcut = nn.Sequential(*layers)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv3(self.conv2(self.conv1(x)))
        if self.residual:
            y = y + self.shortcut(x)
        return self.act(y)

    def plain_forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv3(self.conv2(self.conv1(x))))  # residual removed

    def main_ops(self) -> list[nn.Module]:
        return [self.conv1.conv, self.conv2.conv, self.conv3.conv]


class BottleneckStage(BlockModule):
    def __init__(self, *, cin: int, cout: int, btn: int, kind: Bottleneck, kernel: int = 3, stride: int = 1,
                 layers: int = 1) -> None:
        super().__init__()
        self.stride, self.out_channels = stride, cout
        self.units = nn.ModuleList(
            BottleneckUnit(cin if i == 0 else cout, cout, btn, kernel=kernel, stride=stride if i == 0 else 1,
                           depthwise=kind.depthwise, shortcut=kind.shortcut(cin if i == 0 else cout, cout, i == 0))
            for i in range(layers)
        )


def _stage(b: Block) -> BlockModule:
    assert b.bottleneck is not None  # validated by Structure
    return BottleneckStage(cin=b.in_channels, cout=b.out_channels, btn=b.bottleneck, kind=BOTTLENECKS[b.type],
                           kernel=b.kernel, stride=b.stride, layers=b.layers)


@register_block("SuperResK1KXK1")
def _build_k1kxk1(b: Block) -> BlockModule:
    return _stage(b)


@register_block("SuperResK1DWK1")
def _build_k1dwk1(b: Block) -> BlockModule:
    return _stage(b)
