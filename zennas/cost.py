"""FLOPs, params and layer counts as pure functions of a structure and an input size.

No model is built: every figure is derived from the block kind's layout (the ops in forward order
that :func:`zennas.space.kinds.BlockKind.layout` writes down, :mod:`zennas.space.layout`), so this
module names no block type. The convention is TinyNAS v2's analytic counter, which defines the units
of the MAE-DET budget (188e8 at 480x480): **FLOPs are multiply-accumulates plus BN and activation
element operations** (BN counts 2 per output element, an activation 1). Params count conv weights and
BN's gamma and beta. Layers count convolutions on the main path (shortcut convs not counted).

Per input pixel of an op, with stride ``s``:

- conv+BN ``in->out``, kernel k, groups g: ``in*out*k^2/(s^2*g) + 2*out/s^2``, plus ``out/s^2`` for
  its activation (none on a conv that ends in BN); params ``in*out*k^2/g + 2*out``;
- 2x2 average pool (a strided shortcut's): 1 op per input element, ``+in``;
- space-to-depth x2: a reshape, 0; the ops after it run at a quarter of the area.

A unit is its main path, then its shortcut (on the unit's input), then the add, then the unit's
activation (``out/s^2``). **The add counts ``out/s^2`` only when the shortcut has a conv** (TinyNAS
counts it with ``ResK1KXK1``'s projection; an identity add is not counted). The closed-form log-std
of a unit (entropy-analytic) is the sum over its main-path convs of ``log sqrt(in/g * k^2)``.

What the built-in layouts give, for reference:

- ConvKXBNRELU (stem): conv+BN+ReLU, 1 layer.
- SuperResK1KXK1 unit (``in->btn`` 1x1, ``btn->btn`` kxk stride s, ``btn->out`` 1x1): conv1
  ``in*btn + 2*btn``; conv2 ``btn*btn*k^2/s^2 + 2*btn/s^2``; conv3 ``(btn*out + 2*out)/s^2``; ReLUs
  ``btn + btn/s^2 + out/s^2``; plus the shortcut (below). 3 layers.
- SuperResK1DWK1 unit: the same with a depthwise kxk (groups = btn): conv2 ``btn*k^2/s^2 + 2*btn/s^2``,
  params ``btn*k^2 + 2*btn``; plus the shortcut (below).
- The shortcut of a bottleneck unit (:meth:`zennas.space.kinds.Bottleneck.shortcut`, TinyNAS's
  ``ResK1KXK1`` / ``ResK1DWK1`` with ``force_resproj`` as its ``BaseSuperBlock`` sets it) is one of
  ``projection``: [2x2 average pool if s = 2, ``+in``] then 1x1 conv+BN at the pooled size
  ``(in*out + 2*out)/s^2`` (params ``in*out + 2*out``) and the add ``out/s^2``;
  ``identity``: [2x2 average pool if s = 2, ``+in``], the add not counted;
  ``none``: no residual at all (0).
  K1KXK1: the first unit of a block always projects (TinyNAS forces it, whatever ``in``, ``out`` and
  s are); the others (``in = out``, s = 1) are identity. K1DWK1: ``identity`` when ``in = out``, else
  ``none`` (TinyNAS never forces the projection there).
- S2D block: space-to-depth x2 then a 1x1 conv ``4*in -> out`` + BN + SiLU at the output resolution:
  ``(4*in*out + 2*out + out)/4`` per input pixel; each of the ``layers-1`` refinement units is a kxk
  conv ``out->out`` + BN + SiLU at the output resolution. 1 layer per conv.

The first unit of a block carries its stride and ``in``; the others stride 1 and ``in = out``. The
count is linear in H*W: a block's figure is its per-pixel count times its input H*W, where H and W
are divided by the strides before it (as floats, as the reference does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from zennas.errors import SpecError
from zennas.space.kinds import BLOCK_KINDS, on_kinds_change
from zennas.space.structure import Block, Structure


@dataclass(frozen=True, slots=True)
class BlockCost:
    flops_per_pixel: float  # FLOPs (MACs + BN/act ops) per pixel of the block's input
    params: float  # parameters (conv weights + BN gamma/beta)
    layers: int  # main-path conv layers
    log_std: tuple[float, ...]  # closed-form log-std contributed by each unit (entropy score)


@dataclass(frozen=True, slots=True)
class Costs:
    flops: float  # MACs + BN/activation element ops at (height, width)
    params: float  # parameters
    layers: int  # main-path conv layers
    height: int
    width: int

    def to_dict(self) -> dict[str, float | int]:
        return {"flops": self.flops, "params": self.params, "layers": self.layers,
                "height": self.height, "width": self.width}


class _Counter:
    """A layout writer that sums the block's figures as the layout is written (no op objects)."""

    __slots__ = (
        "_a",
        "_convs",
        "_f",
        "_ls",
        "_out",
        "_p",
        "_proj",
        "_sa",
        "_sc",
        "area",
        "flops",
        "layers",
        "log_std",
        "params",
    )

    def __init__(self) -> None:
        self.flops = self.params = 0.0
        self.layers = 0
        self.log_std: list[float] = []
        self.area = 1.0  # this unit's input area relative to the block's input
        self._f = self._p = self._ls = 0.0  # the unit so far, per pixel of its input
        self._convs = 0
        self._a = 1.0  # the main path's current area, relative to the unit's input
        self._out = 0  # the main path's current channels
        self._sc = False  # writing the shortcut
        self._sa = 1.0  # the shortcut's current area
        self._proj = False  # the shortcut has a conv

    def conv(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: str = "relu",
             same_width: bool = False) -> None:
        s2 = stride * stride
        k2 = kernel * kernel
        a = self._sa if self._sc else self._a
        out_area = a / s2
        f = cin * cout * k2 / (s2 * groups) * a + 2 * cout * out_area
        if act != "none":
            f += cout * out_area
        self._f += f
        self._p += cin * cout * k2 / groups + 2 * cout
        if self._sc:
            self._sa = out_area
            self._proj = True
        else:
            self._ls += 0.5 * math.log(cin // groups * k2)  # log sqrt(fan_in)
            self._convs += 1
            self._a = out_area
            self._out = cout

    def pool(self, channels: int) -> None:
        if self._sc:
            self._f += channels * self._sa  # one op per input element
            self._sa /= 4
        else:
            self._f += channels * self._a
            self._a /= 4
            self._out = channels

    def space_to_depth(self, channels: int) -> None:  # a reshape
        if self._sc:
            self._sa /= 4
        else:
            self._a /= 4
            self._out = 4 * channels

    def shortcut(self) -> None:
        self._sc = True

    def unit(self, act: str = "none", repeat: int = 1) -> None:
        f, a = self._f, self._a
        if self._proj:
            f += self._out * a  # the add (TinyNAS counts it only with a projection shortcut)
        if act != "none":
            f += self._out * a
        for _ in range(repeat):  # a repeated unit is computed once and summed unit by unit
            self.flops += f * self.area
            self.params += self._p
            self.area *= a  # 1/s^2: exact
        self.layers += self._convs * repeat
        self.log_std += [self._ls] * repeat
        self._f = self._p = self._ls = 0.0
        self._convs = 0
        self._a = self._sa = 1.0
        self._sc = self._proj = False


@lru_cache(maxsize=1 << 16)
def block_cost(b: Block) -> BlockCost:
    """Per-block analytic cost, derived from the block kind's layout; cached, since a mutation changes
    only one or two blocks (``block_cost.__wrapped__`` is the uncached function)."""
    kind = BLOCK_KINDS.get(b.type)
    if kind is None:
        raise SpecError(f"no cost model for block type {b.type!r} (known: {', '.join(BLOCK_KINDS)})")
    c = _Counter()
    kind.layout(b, c)
    return BlockCost(c.flops, c.params, c.layers, tuple(c.log_std))


on_kinds_change(block_cost.cache_clear)


def check_size(height: int, width: int) -> None:
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise SpecError(f"{name} must be a positive integer, got {v!r}", field=name)


def costs(structure: Structure, height: int = 480, width: int | None = None) -> Costs:
    """FLOPs (MACs + BN/activation ops), params and layers of ``structure`` at ``height x width``."""
    width = height if width is None else width
    check_size(height, width)
    area = float(height * width)
    flops = params = 0.0
    layers = 0
    for b in structure.blocks:
        c = block_cost(b)
        flops += c.flops_per_pixel * area
        params += c.params
        layers += c.layers
        area /= b.stride * b.stride
    return Costs(flops, params, layers, height, width)


def count_layers(structure: Structure) -> int:
    return sum(block_cost(b).layers for b in structure.blocks)


def format_flops(flops: float) -> str:
    """Human-readable figure with its unit spelled out (MACs + BN/activation ops)."""
    return f"{flops / 1e9:.3f} GFLOPs (MACs + BN/act ops)"
