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
from zennas.space.layout import Op, Unit
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


def _path(ops: tuple[Op, ...], area: float) -> tuple[float, float, float, float, int]:
    """(FLOPs, params, output area, log-std, main convs) of ops applied in order to an input of
    relative ``area``: conv ``cin*cout*k^2/g`` MACs + 2 BN ops (+ 1 activation op) per output element,
    pool 1 op per input element, space-to-depth 0."""
    f = p = ls = 0.0
    convs = 0
    log = math.log
    for op in ops:
        if op.op == "conv":
            cin, cout, k, s, g, act = op[:6]
            s2 = s * s
            k2 = k * k
            out_area = area / s2
            f += cin * cout * k2 / (s2 * g) * area + 2 * cout * out_area
            if act != "none":
                f += cout * out_area
            p += cin * cout * k2 / g + 2 * cout
            ls += 0.5 * log(cin // g * k2)  # log sqrt(fan_in)
            convs += 1
            area = out_area
        elif op.op == "pool":
            f += op[0] * area  # one op per input element
            area /= 4
        else:  # space-to-depth: a reshape
            area /= 4
    return f, p, area, ls, convs


@lru_cache(maxsize=1 << 16)  # units recur across blocks (a block's later units, the bound's grids)
def unit_cost(u: Unit) -> tuple[float, float, float, int, float]:
    """(FLOPs per pixel of the unit's input, params, log-std, main-path convs, output area per input
    pixel) of one unit."""
    f, p, area, ls, convs = _path(u.main, 1.0)
    if u.shortcut is not None:
        fs, ps, _, _, projects = _path(u.shortcut, 1.0)
        f += fs
        p += ps
        if projects:
            f += u.out_channels * area  # the add (TinyNAS counts it only with a projection shortcut)
    if u.act != "none":
        f += u.out_channels * area
    return f, p, ls, convs, area


@lru_cache(maxsize=1 << 16)
def block_cost(b: Block) -> BlockCost:
    """Per-block analytic cost, derived from the block kind's layout; cached, since a mutation changes
    only one or two blocks (``block_cost.__wrapped__`` is the uncached function)."""
    kind = BLOCK_KINDS.get(b.type)
    if kind is None:
        raise SpecError(f"no cost model for block type {b.type!r} (known: {', '.join(BLOCK_KINDS)})")
    flops = params = 0.0
    layers = 0
    log_std: list[float] = []
    area = 1.0  # this unit's input area relative to the block's input
    for u in kind.layout(b):
        f, p, ls, convs, shrink = unit_cost(u)  # a repeated unit is computed once, summed unit by unit
        n = u.repeat
        for _ in range(n):
            flops += f * area
            params += p
            area *= shrink  # 1/s^2: exact
        layers += convs * n
        log_std += [ls] * n
    return BlockCost(flops, params, layers, tuple(log_std))


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
