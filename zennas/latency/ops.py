"""The operators a backbone is made of, as data: what a latency profile times and sums.

A structure decomposes into a list of :class:`Op` s, each an operator *as the runtime executes it*:
a conv with its BatchNorm folded (ONNX export) or following it (torch eager) and its activation
fused or following it. An op is a point of a table: its :class:`TableKey` fixes everything but its
channel counts (the input feature-map size, kernel, stride, depthwise, activation), and its
``point`` gives the channels on the table's axes.

Kinds (one per role, so each table is smooth in its channels), derived from the block kind's layout
(:mod:`zennas.space.layout`), so this module names no block type:

- ``stem``: a conv of a stem kind (kxk conv + ReLU), ``cin`` fixed (in the key), axis ``cout``;
- ``pw``: 1x1 conv + activation ``cin -> cout`` (a bottleneck unit's first conv), axes ``cin, cout``;
  also a unit's last conv when the unit has no residual (its activation is the unit's);
- ``kxk``: kxk conv + activation ``c -> c`` (a layout conv marked ``same_width``: dense or depthwise;
  a unit's spatial conv, an S2D refinement conv), axis ``c``;
- ``conv``: any other conv + activation ``cin -> cout`` (kxk, changing the width), axes ``cin, cout``;
- ``pw_add``: a residual unit's last conv ``cin -> cout`` (no activation of its own), plus the
  residual and the unit's activation after it (the runtime fuses the add into the conv), axes
  ``cin, cout``;
- ``proj``: the 1x1 conv of a projection shortcut, no activation, at the (pooled) output size;
- ``pool``: the 2x2 average pool of a stride-2 shortcut, axis ``c``;
- ``s2d``: space-to-depth x2 then the 1x1 conv ``4*cin -> cout`` + activation after it, axes
  ``cin, cout``.

A residual unit's ops are its main path but the last conv, then its shortcut, then ``pw_add``.
:func:`block_ops` follows the layouts the block builders in :mod:`zennas.blocks` build (a test checks
the two agree).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from zennas.errors import SpecError
from zennas.space.kinds import BLOCK_KINDS, BOTTLENECKS
from zennas.space.layout import Conv, Pool, SpaceToDepth, Unit
from zennas.space.structure import Block, Structure

KINDS = ("stem", "pw", "kxk", "pw_add", "proj", "pool", "s2d", "conv")
AXES: dict[str, tuple[str, ...]] = {  # the channel axes of each kind's table
    "stem": ("cout",), "kxk": ("c",), "pool": ("c",),
    "pw": ("cin", "cout"), "pw_add": ("cin", "cout"), "proj": ("cin", "cout"), "s2d": ("cin", "cout"),
    "conv": ("cin", "cout"),
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

    def activation_mb(self, batch: int = 1) -> float:
        """The op's input and output feature maps in float32, in MB (1e6 bytes): the memory traffic an
        op run alone pays for and a network partly does not (the profile's ``per_mb_ms`` term)."""
        k = self.key
        cin, cout = self.channels
        ho, wo = out_size(k.height, k.stride), out_size(k.width, k.stride)
        return 4e-6 * batch * (cin * k.height * k.width + cout * ho * wo)


def out_size(size: int, stride: int) -> int:
    """A 'same'-padded odd-kernel conv (or the ceil-mode 2x2 pool) at ``stride``: ceil(size / stride)."""
    return -(-size // stride)


def unit_shortcut(block_type: str, cin: int, out: int, first: bool) -> str:
    """``projection`` (1x1 conv, after a 2x2 pool when strided), ``identity`` (the pool when strided)
    or ``none`` (no residual) for one unit of a bottleneck block.

    The one rule is the bottleneck kinds' (``zennas.space.kinds.BOTTLENECKS[type].shortcut``)."""
    return str(BOTTLENECKS[block_type].shortcut(cin, out, first))


def _conv_op(c: Conv, h: int, w: int, stem_cin: int | None, act: str | None = None,
             role: str | None = None) -> Op:
    """The table op of one conv: its role by the rules of the module docstring."""
    act = c.act if act is None else act
    if stem_cin is not None:
        return Op(TableKey("stem", h, w, c.kernel, c.stride, False, act, stem_cin), (c.cout,))
    if role is None:
        role = "kxk" if c.same_width else ("pw" if c.kernel == 1 else "conv")
    if role == "kxk":
        return Op(TableKey("kxk", h, w, c.kernel, c.stride, c.depthwise, act), (c.cin,))
    return Op(TableKey(role, h, w, c.kernel, c.stride, False, act), (c.cin, c.cout))


def _unit_ops(b: Block, u: Unit, h: int, w: int, stem: bool) -> tuple[list[Op], int, int]:
    ops: list[Op] = []
    h0, w0 = h, w  # the unit's input, where its shortcut starts
    main = list(u.main)
    tail: Conv | None = None  # the main path's last conv, fused with the add / the unit's activation
    if u.act != "none":
        last = main.pop() if main else None
        if not isinstance(last, Conv) or last.act != "none":
            raise SpecError(f"no latency model for block type {b.type!r}: a unit's activation must follow "
                            "a conv without one", field="type")
        tail = last
    j = 0
    while j < len(main):
        op = main[j]
        if isinstance(op, SpaceToDepth):
            nxt = main[j + 1] if j + 1 < len(main) else None
            if not (isinstance(nxt, Conv) and nxt.kernel == 1 and nxt.stride == 1):
                raise SpecError(f"no latency model for block type {b.type!r}: space-to-depth must be followed "
                                "by a 1x1 conv", field="type")
            if h % 2 or w % 2:
                raise SpecError(f"{b.type} needs an even input size, got {h}x{w}", field="height")
            ops.append(Op(TableKey("s2d", h, w, 1, 2, False, nxt.act), (op.channels, nxt.cout)))
            h, w = h // 2, w // 2
            j += 2
            continue
        if isinstance(op, Pool):
            raise SpecError(f"no latency model for block type {b.type!r}: a pool on the main path",
                            field="type")
        ops.append(_conv_op(op, h, w, b.in_channels if stem else None))
        h, w = out_size(h, op.stride), out_size(w, op.stride)
        j += 1
    if u.shortcut:  # on the unit's input, before the add the tail fuses
        sh, sw = h0, w0
        for op in u.shortcut:
            if isinstance(op, Pool):
                ops.append(Op(TableKey("pool", sh, sw, 2, 2, False, "none"), (op.channels,)))
                sh, sw = out_size(sh, 2), out_size(sw, 2)
            elif isinstance(op, Conv) and op.kernel == 1 and op.stride == 1 and op.act == "none":
                ops.append(Op(TableKey("proj", sh, sw, 1, 1, False, "none"), (op.cin, op.cout)))
            else:
                raise SpecError(f"no latency model for block type {b.type!r}: a shortcut op other than the "
                                "2x2 pool and a 1x1 conv", field="type")
    if tail is not None:
        ops.append(_conv_op(tail, h, w, None, u.act, "pw" if u.shortcut is None else "pw_add"))
        h, w = out_size(h, tail.stride), out_size(w, tail.stride)
    return ops, h, w


def block_unit_runs(b: Block, height: int, width: int) -> list[tuple[list[Op], int]]:
    """The ops of one block whose input is ``height x width``, derived from its kind's layout
    (:mod:`zennas.space.layout`), as runs of identical units in execution order: (one unit's ops, how
    many times it runs). A unit repeated at stride 1 runs the same ops again at the same size."""
    kind = BLOCK_KINDS.get(b.type)
    if kind is None:
        raise SpecError(f"no latency model for block type {b.type!r}", field="type")
    out: list[tuple[list[Op], int]] = []
    h, w = height, width
    for u in kind.units(b):
        left = u.repeat
        while left:
            unit, ho, wo = _unit_ops(b, u, h, w, kind.stem)
            n = left if (ho, wo) == (h, w) else 1  # same size in, same size out: the rest are the same
            out.append((unit, n))
            left -= n
            h, w = ho, wo
    return out


def block_ops(b: Block, height: int, width: int) -> list[Op]:
    """The ops of one block whose input is ``height x width``, in execution order (every unit)."""
    return [op for unit, n in block_unit_runs(b, height, width) for _ in range(n) for op in unit]


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
