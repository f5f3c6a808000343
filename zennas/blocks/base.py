"""Shared pieces of every block: conv+norm+activation, and the block interface the scores use."""

from __future__ import annotations

from torch import Tensor, nn

from zennas.errors import SpecError


def make_act(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "silu":
        return nn.SiLU(inplace=True)
    if name == "none":
        return nn.Identity()
    raise SpecError(f"unknown activation {name!r} (relu, silu, none)", field="act")


class ConvNormAct(nn.Module):
    """kxk conv (no bias, 'same' padding) -> BatchNorm -> activation."""

    def __init__(self, cin: int, cout: int, *, kernel: int = 1, stride: int = 1, groups: int = 1,
                 act: str = "relu") -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = make_act(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))  # (B, cout, H/stride, W/stride)


class BlockModule(nn.Module):
    """A block of a backbone. Besides ``forward`` it exposes what the zero-shot scores need.

    - ``units``: the repeated units, in order; each unit is a :class:`Unit`.
    - ``stride``, ``out_channels``: for wiring stages and necks from data.
    """

    stride: int
    out_channels: int
    units: nn.ModuleList

    def forward(self, x: Tensor) -> Tensor:
        for u in self.units:
            x = u(x)
        return x


class Unit(nn.Module):
    """One repeated unit. ``main_ops`` lists the main path in order (convs, and reshapes such as
    space-to-depth); ``plain_forward`` runs the unit with its residual removed (as Zen-NAS scores
    it); ``convs`` are the main path's convolutions."""

    def main_ops(self) -> list[nn.Module]:
        raise NotImplementedError

    def plain_forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def convs(self) -> list[nn.Conv2d]:
        return [m for m in self.main_ops() if isinstance(m, nn.Conv2d)]
