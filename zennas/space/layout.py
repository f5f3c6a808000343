"""The vocabulary a block's layout is written in: its ops in forward order (torch-free).

A block kind (:mod:`zennas.space.kinds`) owns one function ``layout(block, w)`` that writes the block
down op by op to a :class:`LayoutWriter`; it is the one place a block type's structure is written.
Everything that counts or times a block reads it from there:

- :mod:`zennas.cost`: FLOPs (MACs + BN/activation ops), params, main-path layers, closed-form log-std
  (a writer that sums as it is written to: no op objects, as fast as the closed forms it replaced);
- :mod:`zennas.detector.cost`: the backbone's conv MACs;
- :mod:`zennas.admission`: the op list the memory/compute estimates walk;
- :mod:`zennas.latency.ops`: the ops a latency profile times.

The last three read the layout as data, :func:`record` ``(layout, block) -> tuple[Unit, ...]``.

A unit is written as its main path (ops applied one after the other), optionally
:meth:`LayoutWriter.shortcut` followed by the shortcut's ops on the unit's input (none written: an
identity residual), then :meth:`LayoutWriter.unit` with the activation after the add and how many
times the same unit repeats. Strides live on the ops; each op runs at the resolution the ops before
it leave (``'same'`` padding, so a stride-s op maps H to ceil(H/s)). The torch modules in
:mod:`zennas.blocks` must build exactly these ops (``tests/core/test_cost.py`` and
``tests/core/test_block_kinds.py`` count a built module against its layout).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from zennas.errors import SpecError

if TYPE_CHECKING:
    from zennas.space.structure import Block

Act = Literal["relu", "silu", "none"]
ACTS: tuple[str, ...] = ("relu", "silu", "none")


class LayoutWriter(Protocol):
    """What a layout writes to, in forward order; a unit ends with :meth:`unit`."""

    def conv(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: Act = "relu",
             same_width: bool = False) -> None:
        """kxk conv (no bias, padding k // 2) -> BatchNorm -> ``act``. ``groups``: cin for depthwise;
        ``same_width``: cin == cout by construction (a unit's spatial conv; one latency-table axis)."""

    def pool(self, channels: int) -> None:
        """2x2 average pool, stride 2, ceil mode (a strided shortcut's): ``(C, H, W) -> (C, H/2, W/2)``."""

    def space_to_depth(self, channels: int) -> None:
        """Space-to-depth x2 (a reshape: no FLOPs, no params): ``(C, H, W) -> (4C, H/2, W/2)``."""

    def shortcut(self) -> None:
        """The unit has a residual; the ops written next, up to :meth:`unit`, are its shortcut."""

    def unit(self, act: Act = "none", repeat: int = 1) -> None:
        """End the unit: ``act`` after the add (or after the main path when there is no residual);
        ``repeat`` identical units in a row."""


Layout = Callable[["Block", LayoutWriter], None]


@dataclass(frozen=True, slots=True)
class Conv:
    """A recorded :meth:`LayoutWriter.conv`."""

    cin: int  # input channels
    cout: int  # output channels
    kernel: int = 1  # k of the kxk kernel (odd)
    stride: int = 1  # 1 or 2
    groups: int = 1  # cin for a depthwise conv
    act: Act = "relu"  # after BN ("none": BN only)
    same_width: bool = False  # cin == cout by construction (a unit's spatial conv): one channel axis

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.cin


@dataclass(frozen=True, slots=True)
class Pool:
    """A recorded :meth:`LayoutWriter.pool`."""

    channels: int  # channels in and out


@dataclass(frozen=True, slots=True)
class SpaceToDepth:
    """A recorded :meth:`LayoutWriter.space_to_depth`."""

    channels: int  # input channels


Op = Conv | Pool | SpaceToDepth


def op_stride(op: Op) -> int:
    return op.stride if isinstance(op, Conv) else 2


def op_out_channels(op: Op) -> int:
    if isinstance(op, Conv):
        return op.cout
    return 4 * op.channels if isinstance(op, SpaceToDepth) else op.channels


@dataclass(frozen=True, slots=True)
class Unit:
    """One recorded unit of a block: ``act(main(x) [+ shortcut(x)])``, ``repeat`` times in a row."""

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


class Recorder:
    """A :class:`LayoutWriter` that records the layout as :class:`Unit` s, checking each op."""

    def __init__(self, where: str) -> None:
        self.where = where  # the block type, for errors
        self.units: list[Unit] = []
        self._main: list[Op] = []
        self._shortcut: list[Op] | None = None

    def _bad(self, msg: str) -> SpecError:
        return SpecError(f"block type {self.where!r}: the layout {msg}", field="type")

    def _add(self, op: Op) -> None:
        (self._main if self._shortcut is None else self._shortcut).append(op)

    def conv(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: Act = "relu",
             same_width: bool = False) -> None:
        if min(cin, cout, kernel, groups) < 1 or kernel % 2 == 0 or stride not in (1, 2) or cin % groups \
                or cout % groups or act not in ACTS or (same_width and cin != cout):
            raise self._bad(f"wrote a bad conv (cin={cin}, cout={cout}, kernel={kernel}, stride={stride}, "
                            f"groups={groups}, act={act!r}, same_width={same_width})")
        self._add(Conv(cin, cout, kernel, stride, groups, act, same_width))

    def pool(self, channels: int) -> None:
        self._add(Pool(channels))

    def space_to_depth(self, channels: int) -> None:
        self._add(SpaceToDepth(channels))

    def shortcut(self) -> None:
        if self._shortcut is not None or not self._main:
            raise self._bad("began a shortcut twice or before the main path")
        self._shortcut = []

    def unit(self, act: Act = "none", repeat: int = 1) -> None:
        if not self._main or repeat < 1 or act not in ACTS:
            raise self._bad(f"ended a unit without a main path, or with repeat={repeat}, act={act!r}")
        sc = None if self._shortcut is None else tuple(self._shortcut)
        self.units.append(Unit(tuple(self._main), sc, act, repeat))
        self._main, self._shortcut = [], None

    def done(self) -> tuple[Unit, ...]:
        if self._main or self._shortcut is not None or not self.units:
            raise self._bad("must end every unit with unit() and write at least one")
        return tuple(self.units)


def record(layout: Layout, b: Block) -> tuple[Unit, ...]:
    """The layout of ``b`` as data: its units in forward order."""
    rec = Recorder(b.type)
    layout(b, rec)
    return rec.done()


__all__ = ["ACTS", "Act", "Conv", "Layout", "LayoutWriter", "Op", "Pool", "Recorder", "SpaceToDepth", "Unit",
           "op_out_channels", "op_stride", "record"]
