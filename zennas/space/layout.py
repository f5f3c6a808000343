"""The vocabulary a block's layout is written in: its ops in forward order, as data (torch-free).

A block kind (:mod:`zennas.space.kinds`) owns one function ``layout(block) -> tuple[Unit, ...]``;
it is the one place a block type's structure is written down. Everything that counts or times a
block reads it from there:

- :mod:`zennas.cost`: FLOPs (MACs + BN/activation ops), params, main-path layers, closed-form log-std;
- :mod:`zennas.detector.cost`: the backbone's conv MACs;
- :mod:`zennas.admission`: the op list the memory/compute estimates walk;
- :mod:`zennas.latency.ops`: the ops a latency profile times.

A :class:`Unit` is a main path (ops applied one after the other), an optional residual (the
shortcut's ops on the unit's input, then an add), an activation after the add, and how many times
the same unit repeats. Strides live on the ops; each op runs at the resolution the ops before it
leave (``'same'`` padding, so a stride-s op maps H to ceil(H/s)). The torch modules in
:mod:`zennas.blocks` must build exactly these ops (``tests/core/test_cost.py`` and
``tests/core/test_block_kinds.py`` count a built module against its layout).

The ops are NamedTuples rather than frozen dataclasses: a layout is built on every uncached cost (a
search's new blocks, the bound's grids of thousands of blocks) and a frozen dataclass costs about
three times as much to construct. They are as immutable; the ``op`` tag keeps ops of different types
unequal (``Pool(8) != SpaceToDepth(8)``).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

Act = Literal["relu", "silu", "none"]
ACTS: tuple[str, ...] = ("relu", "silu", "none")


class Conv(NamedTuple):
    """kxk conv (no bias, padding k // 2) -> BatchNorm -> activation."""

    cin: int  # input channels
    cout: int  # output channels
    kernel: int = 1  # k of the kxk kernel (odd)
    stride: int = 1  # 1 or 2
    groups: int = 1  # cin for a depthwise conv
    act: Act = "relu"  # after BN ("none": BN only)
    same_width: bool = False  # cin == cout by construction (a unit's spatial conv): one channel axis
    op: Literal["conv"] = "conv"  # the tag: ops of different types never compare equal

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.cin


class Pool(NamedTuple):
    """2x2 average pool, stride 2, ceil mode (a strided shortcut's): ``(C, H, W) -> (C, H/2, W/2)``."""

    channels: int  # channels in and out
    op: Literal["pool"] = "pool"


class SpaceToDepth(NamedTuple):
    """Space-to-depth x2 (a reshape: no FLOPs, no params): ``(C, H, W) -> (4C, H/2, W/2)``."""

    channels: int  # input channels
    op: Literal["s2d"] = "s2d"


Op = Conv | Pool | SpaceToDepth


class Unit(NamedTuple):
    """One repeated unit of a block: ``act(main(x) [+ shortcut(x)])``, ``repeat`` times in a row."""

    main: tuple[Op, ...]  # the main path, in forward order
    shortcut: tuple[Op, ...] | None = None  # None: no residual; (): identity; else the ops on the input
    act: Act = "none"  # after the residual add (or after the main path when there is no residual)
    repeat: int = 1  # identical units in a row (>= 1)

    @property
    def stride(self) -> int:
        """The unit's total stride (its main path's)."""
        s = 1
        for op in self.main:
            s *= op_stride(op)
        return s

    @property
    def out_channels(self) -> int:
        return op_out_channels(self.main[-1])


def op_stride(op: Op) -> int:
    return op.stride if isinstance(op, Conv) else 2


def op_out_channels(op: Op) -> int:
    if isinstance(op, Conv):
        return op.cout
    return 4 * op.channels if isinstance(op, SpaceToDepth) else op.channels


__all__ = ["ACTS", "Act", "Conv", "Op", "Pool", "SpaceToDepth", "Unit", "op_out_channels", "op_stride"]
