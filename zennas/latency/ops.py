"""The operators a backbone is made of, as data: what a latency profile times and sums.

A structure decomposes into a list of :class:`Op` s, each an operator *as the runtime executes it*:
a conv with its BatchNorm folded (ONNX export) or following it (torch eager) and its activation
fused or following it. An op is a point of a table: its :class:`TableKey` fixes everything but its
channel counts (the input feature-map size, kernel, stride, depthwise, activation), and its
``point`` gives the channels on the table's axes.

Kinds (one per role, so each table is smooth in its channels):

- ``stem``: kxk conv + ReLU, ``cin`` fixed (in the key), axis ``cout``;
- ``pw``: 1x1 conv + activation ``cin -> cout`` (a bottleneck unit's first conv), axes ``cin, cout``;
- ``kxk``: kxk conv + activation ``c -> c`` (dense or depthwise; a unit's spatial conv, an S2D
  refinement conv), axis ``c``;
- ``pw_add``: a unit's last 1x1 conv ``cin -> cout``, plus the residual and the ReLU after it (the
  runtime fuses the add into the conv), axes ``cin, cout``;
- ``proj``: the 1x1 conv of a projection shortcut, no activation, at the (pooled) output size;
- ``pool``: the 2x2 average pool of a stride-2 shortcut, axis ``c``;
- ``s2d``: space-to-depth x2 then 1x1 conv ``4*cin -> cout`` + SiLU, axes ``cin, cout``.

:func:`block_ops` mirrors the block builders in :mod:`zennas.blocks` (a test checks the two agree);
the shortcut of a bottleneck unit follows :func:`unit_shortcut`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from zennas import cost as _cost
from zennas.errors import SpecError
from zennas.space.structure import Block, Structure

KINDS = ("stem", "pw", "kxk", "pw_add", "proj", "pool", "s2d")
AXES: dict[str, tuple[str, ...]] = {  # the channel axes of each kind's table
    "stem": ("cout",), "kxk": ("c",), "pool": ("c",),
    "pw": ("cin", "cout"), "pw_add": ("cin", "cout"), "proj": ("cin", "cout"), "s2d": ("cin", "cout"),
}
ACTS = ("relu", "silu", "none")


@dataclass(frozen=True, slots=True, order=True)
class TableKey:
    """Everything about an op except its channel counts."""

    kind: str  # one of KINDS
    height: int  # input feature-map height
    width: int  # input feature-map width
    kernel: int = 1  # conv kernel (1 for pw/pw_add/proj/s2d; 2 for pool)
    stride: int = 1  # conv/pool stride
    depthwise: bool = False  # kxk: groups = channels
    act: str = "none"  # relu | silu | none
    cin: int = 0  # stem only: the (fixed) input channels; 0 otherwise

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "height": self.height, "width": self.width, "kernel": self.kernel,
                "stride": self.stride, "depthwise": self.depthwise, "act": self.act, "cin": self.cin}

    def label(self) -> str:
        extra = f" cin={self.cin}" if self.kind == "stem" else ""
        dw = " dw" if self.depthwise else ""
        return f"{self.kind} {self.height}x{self.width} k{self.kernel} s{self.stride}{dw} {self.act}{extra}"


@dataclass(frozen=True, slots=True)
class Op:
    key: TableKey
    point: tuple[int, ...]  # channels on the table's axes (AXES[key.kind])

    @property
    def channels(self) -> tuple[int, int]:
        """(cin, cout) of the op's conv (pool: c, c)."""
        k = self.key
        if k.kind == "stem":
            return k.cin, self.point[0]
        if len(self.point) == 1:
            return self.point[0], self.point[0]
        return self.point[0], self.point[1]

    def flops(self, batch: int = 1) -> float:
        """Multiply-accumulates of the op (the pool: one add per input element), for sizing the build."""
        k = self.key
        cin, cout = self.channels
        ho, wo = out_size(k.height, k.stride), out_size(k.width, k.stride)
        if k.kind == "pool":
            return float(batch * cin * k.height * k.width)
        if k.kind == "s2d":
            return float(batch * 4 * cin * cout * (k.height // 2) * (k.width // 2))
        groups = cin if k.depthwise else 1
        return float(batch * cin * cout * k.kernel * k.kernel * ho * wo / groups)


def out_size(size: int, stride: int) -> int:
    """A 'same'-padded odd-kernel conv (or the ceil-mode 2x2 pool) at ``stride``: ceil(size / stride)."""
    return -(-size // stride)


def unit_shortcut(block_type: str, cin: int, out: int, first: bool) -> str:
    """``projection`` (1x1 conv, after a 2x2 pool when strided), ``identity`` (the pool when strided)
    or ``none`` (no residual) for one unit of a bottleneck block.

    The one rule is zennas.cost's (``BOTTLENECKS[type].shortcut``)."""
    return str(_cost.BOTTLENECKS[block_type].shortcut(cin, out, first))


def block_ops(b: Block, height: int, width: int) -> list[Op]:
    """The ops of one block whose input is ``height x width``, in execution order."""
    if b.type == "ConvKXBNRELU":
        return [Op(TableKey("stem", height, width, b.kernel, b.stride, False, "relu", b.in_channels),
                   (b.out_channels,))]
    if b.type in ("SuperResK1KXK1", "SuperResK1DWK1"):
        assert b.bottleneck is not None  # validated by Structure
        dw = b.type == "SuperResK1DWK1"
        btn, out = b.bottleneck, b.out_channels
        ops: list[Op] = []
        h, w, cin, s = height, width, b.in_channels, b.stride
        for u in range(b.layers):
            ho, wo = out_size(h, s), out_size(w, s)
            ops.append(Op(TableKey("pw", h, w, 1, 1, False, "relu"), (cin, btn)))
            ops.append(Op(TableKey("kxk", h, w, b.kernel, s, dw, "relu"), (btn,)))
            sc = unit_shortcut(b.type, cin, out, u == 0)
            if sc != "none" and s == 2:
                ops.append(Op(TableKey("pool", h, w, 2, 2, False, "none"), (cin,)))
            if sc == "projection":
                ops.append(Op(TableKey("proj", ho, wo, 1, 1, False, "none"), (cin, out)))
            if sc == "none":
                ops.append(Op(TableKey("pw", ho, wo, 1, 1, False, "relu"), (btn, out)))
            else:
                ops.append(Op(TableKey("pw_add", ho, wo, 1, 1, False, "relu"), (btn, out)))
            h, w, cin, s = ho, wo, out, 1
        return ops
    if b.type == "S2D":
        if height % 2 or width % 2:
            raise SpecError(f"S2D needs an even input size, got {height}x{width}", field="height")
        ho, wo = height // 2, width // 2
        ops = [Op(TableKey("s2d", height, width, 1, 2, False, "silu"), (b.in_channels, b.out_channels))]
        ops += [Op(TableKey("kxk", ho, wo, b.kernel, 1, False, "silu"), (b.out_channels,))
                for _ in range(b.layers - 1)]
        return ops
    raise SpecError(f"no latency model for block type {b.type!r}", field="type")


def block_sizes(structure: Structure, height: int, width: int) -> list[tuple[int, int]]:
    """Each block's input feature-map size."""
    out = []
    h, w = height, width
    for b in structure.blocks:
        out.append((h, w))
        h, w = out_size(h, b.stride), out_size(w, b.stride)
    return out


def structure_ops(structure: Structure, height: int, width: int) -> list[Op]:
    ops: list[Op] = []
    for b, (h, w) in zip(structure.blocks, block_sizes(structure, height, width), strict=True):
        ops += block_ops(b, h, w)
    return ops


def ladder(lo: int, hi: int, ratio: float) -> tuple[int, ...]:
    """Channel grid points from ``lo`` to at least ``hi``, each about ``ratio`` times the last,
    rounded to multiples of 8 above 8 (the values mutations produce)."""
    if ratio <= 1.0:
        raise SpecError(f"grid_ratio must be > 1, got {ratio}", field="grid_ratio")
    pts = [lo]
    x = float(lo)
    while pts[-1] < hi:
        x *= ratio
        v = int(round(x / 8) * 8) if x > 8 else math.ceil(x)
        if v <= pts[-1]:
            v = pts[-1] + (8 if pts[-1] >= 8 else 1)
        pts.append(v)
    return tuple(pts)
