"""FLOPs, params and layer counts as pure functions of a structure and an input size.

No model is built. The convention is TinyNAS v2's analytic counter, which defines the units of the
MAE-DET budget (188e8 at 480x480): **FLOPs are multiply-accumulates plus BN and activation element
operations** (BN counts 2 per output element, an activation 1). Params count conv weights and BN's
gamma and beta. Layers count convolutions on the main path (1 per stem conv, 3 per bottleneck unit,
shortcut convs not counted).

Per input pixel of a unit, with stride ``s`` carried by the unit's spatial conv:

- conv+BN ``in->out``, kernel k, groups g: ``in*out*k^2/(s^2*g) + 2*out/s^2``;
  params ``in*out*k^2/g + 2*out``.
- ConvKXBNRELU (stem): conv+BN, plus ``out/s^2`` for the ReLU.
- SuperResK1KXK1 unit (``in->btn`` 1x1, ``btn->btn`` kxk stride s, ``btn->out`` 1x1): conv1
  ``in*btn + 2*btn``; conv2 ``btn*btn*k^2/s^2 + 2*btn/s^2``; conv3 ``(btn*out + 2*out)/s^2``; ReLUs
  ``btn + btn/s^2 + out/s^2``; if s = 2 the shortcut's 2x2 average pool adds ``in``; if in != out the
  shortcut's 1x1 conv+BN adds ``(in*out + 2*out)/s^2`` and the add ``out/s^2``.
- SuperResK1DWK1 unit: the same with a depthwise kxk (groups = btn): conv2 ``btn*k^2/s^2 + 2*btn/s^2``,
  params ``btn*k^2 + 2*btn``.
- S2D block: space-to-depth x2 is a reshape (0 FLOPs); then a 1x1 conv ``4*in -> out`` + BN + SiLU at
  the output resolution: ``(4*in*out + 2*out + out)/4`` per input pixel; each of the ``layers-1``
  refinement units is a kxk conv ``out->out`` + BN + SiLU at the output resolution. 1 layer per conv.

The first unit of a block carries its stride and ``in``; the others stride 1 and ``in = out``. The
count is linear in H*W: a block's figure is its per-pixel count times its input H*W, where H and W
are divided by the strides before it (as floats, as the reference does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from zennas.errors import SpecError
from zennas.space.kinds import BLOCK_KINDS
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


def _conv_bn(cin: float, cout: float, k: int, s: int, g: float = 1) -> tuple[float, float]:
    return cin * cout * k * k / (s * s * g) + 2 * cout / (s * s), cin * cout * k * k / g + 2 * cout


def _log_sqrt(x: float) -> float:
    return 0.5 * math.log(x)


def _unit(cin: int, btn: int, out: int, k: int, s: int, depthwise: bool,
          first: bool = False) -> tuple[float, float, float]:
    """(FLOPs per input pixel, params, log-std) of one bottleneck unit ``cin -> btn -> btn -> out``.
    LOCAL FIX (helper bound, to be replaced by helper proj's): TinyNAS forces a 1x1 conv+BN projection
    shortcut on the first unit of every K1KXK1 block; K1DWK1 has an identity residual only when
    in == out and no residual at all otherwise."""
    f1, p1 = _conv_bn(cin, btn, 1, 1)
    f2, p2 = _conv_bn(btn, btn, k, s, g=btn if depthwise else 1)
    f3, p3 = _conv_bn(btn, out, 1, s)  # conv3 runs at the output resolution: /s^2
    f = f1 + f2 + f3 + btn + btn / s**2 + out / s**2  # ReLUs
    p = p1 + p2 + p3
    residual = not depthwise or cin == out
    if residual and s == 2:
        f += cin  # shortcut 2x2 average pool
    if not depthwise and (cin != out or first):
        fs, ps = _conv_bn(cin, out, 1, s)
        f += fs + out / s**2  # shortcut 1x1 conv+BN and the add
        p += ps
    fan_in_mid = k * k if depthwise else btn * k * k
    return f, p, _log_sqrt(cin) + _log_sqrt(fan_in_mid) + _log_sqrt(btn)


def bottleneck_cost(cin: int, out: int, stride: int, k: int, layers: int, btn: int, depthwise: bool) -> BlockCost:
    """A K1KXK1 / K1DWK1 block of ``layers`` units. Units after the second equal the second (stride 1,
    ``out -> out``), so each is computed once and summed in unit order, exactly as a unit-by-unit loop."""
    flops = params = 0.0
    log_std: list[float] = []
    area = 1.0  # this unit's input area relative to the block's input
    rest: tuple[float, float, float] | None = None
    for u in range(layers):
        if u == 0:
            f, p, ls = _unit(cin, btn, out, k, stride, depthwise, first=True)
            flops += f
            params += p
            area /= stride * stride
        else:
            if rest is None:
                rest = _unit(out, btn, out, k, 1, depthwise)
            f, p, ls = rest
            flops += f * area
            params += p
        log_std.append(ls)
    return BlockCost(flops, params, 3 * layers, tuple(log_std))


BOTTLENECK_DEPTHWISE = {"SuperResK1KXK1": False, "SuperResK1DWK1": True}  # bottleneck types: is the kxk depthwise


def _bottleneck_units(b: Block, depthwise: bool) -> BlockCost:
    assert b.bottleneck is not None  # validated by Structure
    return bottleneck_cost(b.in_channels, b.out_channels, b.stride, b.kernel, b.layers, b.bottleneck, depthwise)


def _stem(b: Block) -> BlockCost:
    f, p = _conv_bn(b.in_channels, b.out_channels, b.kernel, b.stride)
    f += b.out_channels / b.stride**2  # ReLU
    return BlockCost(f, p, 1, (_log_sqrt(b.in_channels * b.kernel * b.kernel),))


def _s2d(b: Block) -> BlockCost:
    cin4, out, k = 4 * b.in_channels, b.out_channels, b.kernel
    f0, p0 = _conv_bn(cin4, out, 1, 1)
    flops = (f0 + out) / 4  # runs at the output resolution (H/2 x W/2): per block-input pixel /4
    params = p0
    log_std = [_log_sqrt(cin4)]
    for _ in range(b.layers - 1):
        fr, pr = _conv_bn(out, out, k, 1)
        flops += (fr + out) / 4
        params += pr
        log_std.append(_log_sqrt(out * k * k))
    return BlockCost(flops, params, b.layers, tuple(log_std))


@lru_cache(maxsize=1 << 16)
def block_cost(b: Block) -> BlockCost:
    """Per-block analytic cost; cached, since a mutation changes only one or two blocks."""
    if b.type == "ConvKXBNRELU":
        return _stem(b)
    depthwise = BOTTLENECK_DEPTHWISE.get(b.type)
    if depthwise is not None:
        return _bottleneck_units(b, depthwise)
    if b.type == "S2D":
        return _s2d(b)
    raise SpecError(f"no cost model for block type {b.type!r} (known: {', '.join(BLOCK_KINDS)})")


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
