"""FLOPs, params and conv MACs of a whole detector (backbone + neck + head), as pure functions.

No model is built. The convention is the backbone's (:mod:`zennas.cost`, TinyNAS's counter): **FLOPs
are multiply-accumulates plus norm and activation element operations**; a norm (BatchNorm, and
GroupNorm counted the same way) is 2 ops per output element, an activation (ReLU, SiLU) 1; ``conv_macs``
is the multiply-accumulates of convolutions (and fully connected layers) alone, what papers that count
"MACs" report. Also counted, as element operations: max pooling, ``k^2`` per output element (the rule
TinyNAS's counter uses for its 2x2 average pool: ``in`` per input pixel), and FPN's top-down
additions, 1 per element. Not counted (data movement): nearest resizing, concatenation, conv biases,
GFL/ATSS's per-level ``Scale`` multiply. Params count conv/fc weights and biases, norm gamma/beta and
the ``Scale`` factors; buffers (running stats, GFL's integral projection) are not parameters.

Sizes: level ``l`` (stride ``2^l``) has ``H * W / 4^l`` pixels, as floats, like the backbone's count;
this is exact when ``H`` and ``W`` are multiples of the largest stride (128 for P7, what the GFPN
configs pad images to), and the count stays linear in ``H * W`` otherwise.

What each term counts (channels ``C``; ``F`` = neck channels; ``A_l`` = pixels of level ``l``):

- **GFPN** (:mod:`zennas.detector.graph`, the network :class:`zennas.mmdet.gfpn.GiraffeNeck` builds):
  levels above the last backbone map come from repeated 3x3/2 max pooling of it (``9 C A_l`` each);
  every fusion node ``(l, i)`` pools its finer inputs down to level ``i`` (``9 C A`` per halving),
  resizes coarser ones (0), concatenates them (``ΣC``), then 1x1 conv ``ΣC -> w`` (no bias), SiLU,
  3x3 conv ``w -> w`` (no bias), norm; an output node is a 1x1 conv ``w -> F`` + norm unless ``w = F``.
- **FPN** (mmdet's ``FPN``, as the generated configs set it): 1x1 lateral and 3x3 output convs with
  bias, the top-down additions, and the extra levels: 3x3/2 convs with bias on the last input
  (RetinaNet, ``on_input``) or output (GFL/ATSS, ``on_output``), or 1x1/2 max pooling (Faster R-CNN).
- **GFL / ATSS heads**: per level, two towers of 4 ConvModules (3x3 conv, no bias; GroupNorm(32);
  ReLU), then 3x3 prediction convs with bias: GFL ``num_classes`` and ``4 (reg_max + 1)`` (68);
  ATSS ``num_classes``, 4 and 1 (centerness); one ``Scale`` parameter per level.
- **RetinaNet head**: per level, two towers of 4 ConvModules (3x3 conv with bias, ReLU), then 3x3
  ``9 num_classes`` and ``9 * 4`` prediction convs with bias (9 anchors).
- **Faster R-CNN**: RPN per level (3x3 conv with bias, ReLU, 1x1 convs to 3 and 12 channels) plus
  ``rois`` times the per-RoI box head (``Shared2FCBBoxHead``: fc ``F*7*7 -> 1024``, ReLU, fc
  ``1024 -> 1024``, ReLU, fc to ``num_classes + 1`` and ``4 num_classes``); RoIAlign's sampling is not
  counted. ``rois`` defaults to 1000, the base config's test-time proposals per image.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from zennas.cost import check_size, costs
from zennas.detector.graph import gfpn_graph
from zennas.detector.settings import DetectorSettings
from zennas.errors import SpecError
from zennas.space.kinds import BLOCK_KINDS, on_kinds_change
from zennas.space.layout import Conv, Op
from zennas.space.structure import Block, Structure

GN_GROUPS = 32  # GroupNorm groups of the GFL/ATSS heads (mmdet's defaults)
STACKED_CONVS = 4  # conv layers per head tower (mmdet's GFL/ATSS/RetinaNet defaults)
GFL_REG_MAX = 16  # GFL's integral regression bins - 1: the reg conv has 4 * (reg_max + 1) outputs
RETINA_ANCHORS = 9  # RetinaNet: 3 scales x 3 ratios per location
RPN_ANCHORS = 3  # Faster R-CNN's RPN: 3 ratios x 1 scale per location
ROI_SIZE = 7  # RoIAlign output size of Faster R-CNN's box head
ROI_FC = 1024  # Shared2FCBBoxHead's fc width
DEFAULT_ROIS = 1000  # Faster R-CNN test-time proposals per image (mmdet's rpn test_cfg.max_per_img)


@dataclass(frozen=True, slots=True)
class CostTerm:
    flops: float  # MACs + norm/activation element ops (see the module docstring)
    params: float  # parameters
    conv_macs: float  # multiply-accumulates of convolutions and fc layers alone

    def __add__(self, other: CostTerm) -> CostTerm:
        return CostTerm(self.flops + other.flops, self.params + other.params, self.conv_macs + other.conv_macs)

    def to_dict(self) -> dict[str, float]:
        return {"flops": self.flops, "params": self.params, "conv_macs": self.conv_macs}


@dataclass(frozen=True, slots=True)
class DetectorCosts:
    backbone: CostTerm
    neck: CostTerm
    head: CostTerm
    height: int
    width: int
    settings: DetectorSettings

    @property
    def total(self) -> CostTerm:
        return self.backbone + self.neck + self.head

    def to_dict(self) -> dict[str, object]:
        return {
            "backbone": self.backbone.to_dict(),
            "neck": self.neck.to_dict(),
            "head": self.head.to_dict(),
            "total": self.total.to_dict(),
            "height": self.height,
            "width": self.width,
            "detector": self.settings.to_dict(),
            "flops_unit": "MACs + norm/activation element ops (GroupNorm counted like BN)",
        }


class _Tally:
    """Accumulates one term's ops. ``area``: output pixels of the layer, per image."""

    def __init__(self) -> None:
        self.macs = 0.0
        self.elem = 0.0
        self.params = 0.0

    def conv(self, cin: float, cout: float, k: int, area: float, bias: bool, owned: bool = True) -> None:
        """``owned=False``: a layer whose parameters were counted already (a head shared across levels)."""
        self.macs += cin * cout * k * k * area
        if owned:
            self.params += cin * cout * k * k + (cout if bias else 0)

    def norm(self, c: float, area: float, owned: bool = True) -> None:  # BN or GN: 2 ops/element, gamma, beta
        self.elem += 2 * c * area
        if owned:
            self.params += 2 * c

    def act(self, c: float, area: float) -> None:
        self.elem += c * area

    def pool(self, c: float, k: int, area: float) -> None:  # max pooling: k^2 per output element
        self.elem += k * k * c * area

    def add(self, c: float, area: float) -> None:
        self.elem += c * area

    def term(self) -> CostTerm:
        return CostTerm(self.macs + self.elem, self.params, self.macs)


def _areas(levels: tuple[int, ...], height: int, width: int) -> dict[int, float]:
    return {lvl: height * width / 4.0**lvl for lvl in levels}


# -- necks -----------------------------------------------------------------------------------------
def gfpn_cost(
    in_channels: tuple[int, ...],
    *,
    depth: int,
    width: float,
    out_channels: int,
    levels: tuple[int, ...],
    in_levels: tuple[int, ...],
    height: int,
    width_px: int,
    fusion_outputs: bool = False,
) -> CostTerm:
    """The GFPN neck on backbone maps ``in_channels`` at ``in_levels`` (consecutive, fine to coarse).

    ``fusion_outputs=True`` counts the output nodes the way GiraffeDet's own implementation builds
    them (a full fusion node: 1x1 ``w -> F``, SiLU, 3x3 ``F -> F``, norm) instead of zennas's
    1x1 + norm; it exists to cross-check the published GiraffeDet figures."""
    inner = int(256 * width)
    t = _Tally()
    area = _areas(tuple(range(min(levels[0], in_levels[0]), max(levels[-1], in_levels[-1]) + 1)), height, width_px)
    backbone = dict(zip(in_levels, in_channels, strict=True))
    chans: dict[tuple[int, int], int] = {}
    last = in_levels[-1]
    for lvl in levels:
        if lvl in backbone:
            chans[(-1, lvl)] = backbone[lvl]
        else:  # above the last backbone map: max-pooled (3x3/2) from the level below
            chans[(-1, lvl)] = in_channels[-1]
            if lvl > last:
                t.pool(in_channels[-1], 3, area[lvl])
    for node in gfpn_graph(depth, levels):
        tag, lvl = node.node
        a = area[lvl]
        if tag == "out":
            if fusion_outputs:
                t.conv(inner, out_channels, 1, a, bias=False)
                t.act(out_channels, a)
                t.conv(out_channels, out_channels, 3, a, bias=False)
                t.norm(out_channels, a)
            elif inner != out_channels:
                t.conv(inner, out_channels, 1, a, bias=False)
                t.norm(out_channels, a)
            continue
        total = 0
        for key in node.inputs:
            c = chans[key]
            total += c
            for j in range(key[1] + 1, lvl + 1):  # a finer input: one 3x3/2 max pool per halving
                t.pool(c, 3, area[j])
        t.conv(total, inner, 1, a, bias=False)  # reduce
        t.act(inner, a)  # SiLU
        t.conv(inner, inner, 3, a, bias=False)
        t.norm(inner, a)
        chans[(int(tag), lvl)] = inner
    return t.term()


def fpn_cost(
    in_channels: tuple[int, ...],
    *,
    out_channels: int,
    levels: tuple[int, ...],
    in_levels: tuple[int, ...],
    extra: str,
    height: int,
    width_px: int,
) -> CostTerm:
    """mmdet's FPN (``start_level=0``, ``num_outs=len(levels)``) with ``add_extra_convs=extra``
    (``on_input`` | ``on_output`` | ``""`` for max pooling)."""
    t = _Tally()
    area = _areas(levels, height, width_px)
    for c, lvl in zip(in_channels, in_levels, strict=True):
        t.conv(c, out_channels, 1, area[lvl], bias=True)  # lateral
    for lvl in in_levels[:-1]:
        t.add(out_channels, area[lvl])  # top-down: lateral + upsampled coarser
    for lvl in in_levels:
        t.conv(out_channels, out_channels, 3, area[lvl], bias=True)  # fpn conv
    for k, lvl in enumerate(lv for lv in levels if lv > in_levels[-1]):
        if not extra:
            t.pool(out_channels, 1, area[lvl])  # F.max_pool2d(x, 1, stride=2)
            continue
        cin = in_channels[-1] if k == 0 and extra == "on_input" else out_channels
        t.conv(cin, out_channels, 3, area[lvl], bias=True)
    return t.term()


# -- heads -----------------------------------------------------------------------------------------
def dense_head_cost(
    detector: str,
    *,
    channels: int,
    num_classes: int,
    levels: tuple[int, ...],
    height: int,
    width_px: int,
    stacked_convs: int = STACKED_CONVS,
) -> CostTerm:
    """GFL, ATSS or RetinaNet head on ``len(levels)`` maps of ``channels`` (feat = in channels)."""
    t = _Tally()
    area = _areas(levels, height, width_px)
    normed = detector in ("gfl", "atss")
    if detector == "gfl":
        outs = [num_classes, 4 * (GFL_REG_MAX + 1)]
    elif detector == "atss":
        outs = [num_classes, 4, 1]
    elif detector == "retinanet":
        outs = [RETINA_ANCHORS * num_classes, RETINA_ANCHORS * 4]
    else:
        raise SpecError(f"no dense head for detector {detector!r}", field="detector")
    for i, lvl in enumerate(levels):  # one head shared by every level: its parameters count once
        a, owned = area[lvl], i == 0
        for _tower in ("cls", "reg"):
            for _ in range(stacked_convs):
                t.conv(channels, channels, 3, a, bias=not normed, owned=owned)
                if normed:
                    t.norm(channels, a, owned=owned)  # GroupNorm, counted like BN
                t.act(channels, a)  # ReLU
        for c in outs:
            t.conv(channels, c, 3, a, bias=True, owned=owned)
    if normed:
        t.params += len(levels)  # one Scale per level
    return t.term()


def faster_rcnn_head_cost(
    *, channels: int, num_classes: int, levels: tuple[int, ...], height: int, width_px: int, rois: int = DEFAULT_ROIS
) -> CostTerm:
    """RPN on every level plus ``rois`` passes of the per-RoI box head (see the module docstring)."""
    t = _Tally()
    area = _areas(levels, height, width_px)
    for i, lvl in enumerate(levels):  # the RPN is shared by every level: its parameters count once
        a, owned = area[lvl], i == 0
        t.conv(channels, channels, 3, a, bias=True, owned=owned)
        t.act(channels, a)  # F.relu
        t.conv(channels, RPN_ANCHORS, 1, a, bias=True, owned=owned)  # objectness (sigmoid: 1 per anchor)
        t.conv(channels, 4 * RPN_ANCHORS, 1, a, bias=True, owned=owned)
    flat = channels * ROI_SIZE * ROI_SIZE
    for cin, cout in ((flat, ROI_FC), (ROI_FC, ROI_FC), (ROI_FC, num_classes + 1), (ROI_FC, 4 * num_classes)):
        t.conv(cin, cout, 1, rois, bias=True)
    t.act(2 * ROI_FC, rois)
    return t.term()


# -- the whole detector ----------------------------------------------------------------------------
FPN_EXTRA = {"gfl": "on_output", "atss": "on_output", "retinanet": "on_input", "faster-rcnn": ""}  # base configs


def level_channels(structure: Structure, in_levels: tuple[int, ...]) -> tuple[int, ...]:
    """Channels of the backbone's feature map at stride ``2^l`` for each level (the last block at
    that stride, i.e. the end of the stage the config generator picks)."""
    at: dict[int, int] = {}
    stride = 1
    for b in structure.blocks:
        stride *= b.stride
        at[stride] = b.out_channels
    missing = [lvl for lvl in in_levels if 2**lvl not in at]
    if missing:
        raise SpecError(
            f"structure: the detector needs backbone maps of stride {[2**lvl for lvl in in_levels]} "
            f"but this structure has strides {sorted(at)}",
            field="structure",
        )
    return tuple(at[2**lvl] for lvl in in_levels)


@lru_cache(maxsize=4096)
def neck_head_cost(
    settings: DetectorSettings, in_channels: tuple[int, ...], height: int, width: int, rois: int = DEFAULT_ROIS
) -> tuple[CostTerm, CostTerm]:
    """(neck, head) costs; they depend only on the backbone's channels per level and the input size,
    so a search caches them per distinct ``in_channels``."""
    s = settings
    lv_in, lv_out = s.in_levels, s.out_levels
    if len(in_channels) != len(lv_in):
        raise SpecError(f"in_channels must have {len(lv_in)} entries, got {in_channels!r}", field="in_channels")
    if s.neck == "gfpn":
        neck = gfpn_cost(in_channels, depth=s.gfpn_depth, width=s.gfpn_width, out_channels=s.neck_channels,
                         levels=lv_out, in_levels=lv_in, height=height, width_px=width)
    else:
        neck = fpn_cost(in_channels, out_channels=s.neck_channels, levels=lv_out, in_levels=lv_in,
                        extra=FPN_EXTRA[s.detector], height=height, width_px=width)
    if s.two_stage:
        head = faster_rcnn_head_cost(channels=s.neck_channels, num_classes=s.num_classes, levels=lv_out,
                                     height=height, width_px=width, rois=rois)
    else:
        head = dense_head_cost(s.detector, channels=s.neck_channels, num_classes=s.num_classes, levels=lv_out,
                               height=height, width_px=width)
    return neck, head


def detector_costs(
    structure: Structure,
    settings: DetectorSettings | None = None,
    height: int = 800,
    width: int | None = None,
    *,
    rois: int = DEFAULT_ROIS,
) -> DetectorCosts:
    """Backbone, neck and head costs of the detector ``settings`` builds around ``structure``."""
    settings = settings or DetectorSettings()
    width = height if width is None else width
    check_size(height, width)
    b = costs(structure, height, width)
    backbone = CostTerm(b.flops, b.params, backbone_conv_macs(structure, height, width))
    neck, head = neck_head_cost(settings, level_channels(structure, settings.in_levels), height, width, rois)
    return DetectorCosts(backbone, neck, head, height, width, settings)


def detector_flops_params(
    structure: Structure, settings: DetectorSettings, height: int, width: int
) -> tuple[float, float]:
    """(FLOPs, params) of the whole detector: the search's budget check (no conv-MACs split)."""
    b = costs(structure, height, width)
    neck, head = neck_head_cost(settings, level_channels(structure, settings.in_levels), height, width)
    return b.flops + neck.flops + head.flops, b.params + neck.params + head.params


class DetectorTerm:
    """The neck + head cost of a search under a detector budget (what the search's evaluator,
    :class:`zennas.search.evaluate.DetectorScope`, adds to a candidate's backbone FLOPs and params).

    A mutation never changes a stride, so the blocks whose outputs the neck takes sit at fixed
    positions (the last block at each stride ``2^l``); the neck and head cost depends only on those
    blocks' output channels and the input size, so it is computed once per distinct channel tuple
    (a few hundred in a 100k-trial search) and then read from a dict."""

    def __init__(self, settings: DetectorSettings, start: Structure, height: int, width: int) -> None:
        self.settings, self.height, self.width = settings, height, width
        at: dict[int, int] = {}
        stride = 1
        for i, b in enumerate(start.blocks):
            stride *= b.stride
            at[stride] = i
        level_channels(start, settings.in_levels)  # raises if a needed stride is missing
        self.positions = tuple(at[2**lvl] for lvl in settings.in_levels)
        self._cache: dict[tuple[int, ...], tuple[float, float]] = {}

    def of_channels(self, channels: tuple[int, ...]) -> tuple[float, float]:
        """(FLOPs, params) of neck + head on backbone maps of these channels."""
        c = self._cache.get(channels)
        if c is None:
            if len(self._cache) >= 1 << 13:
                self._cache.clear()  # bounded memory in a long search
            neck, head = neck_head_cost(self.settings, channels, self.height, self.width)
            c = self._cache[channels] = (neck.flops + head.flops, neck.params + head.params)
        return c

    def of(self, structure: Structure) -> tuple[float, float]:
        blocks = structure.blocks
        return self.of_channels(tuple(blocks[i].out_channels for i in self.positions))


# -- the backbone's convolutions alone -------------------------------------------------------------
def _conv_macs(ops: tuple[Op, ...], area: float) -> tuple[float, float]:
    """(conv MACs, output area) of ops applied in order to an input of relative ``area``."""
    total = 0.0
    for op in ops:
        if isinstance(op, Conv):
            area /= op.stride * op.stride
            total += op.cin // op.groups * op.cout * op.kernel * op.kernel * area
        else:  # a pool or space-to-depth: no MACs, a quarter of the area
            area /= 4
    return total, area


@lru_cache(maxsize=1 << 16)
def _block_macs_per_pixel(b: Block) -> float:
    """Conv MACs (main path and shortcuts) of a block per pixel of its input, from its kind's layout
    (:mod:`zennas.space.layout`)."""
    kind = BLOCK_KINDS.get(b.type)
    if kind is None:
        raise SpecError(f"no cost model for block type {b.type!r} (known: {', '.join(BLOCK_KINDS)})", field="type")
    total, area = 0.0, 1.0
    for u in kind.units(b):
        for _ in range(u.repeat):
            main, out_area = _conv_macs(u.main, area)
            total += main
            if u.shortcut:
                total += _conv_macs(u.shortcut, area)[0]
            area = out_area
    return total


on_kinds_change(_block_macs_per_pixel.cache_clear)


def backbone_conv_macs(structure: Structure, height: int, width: int) -> float:
    """Multiply-accumulates of the backbone's convolutions alone at ``height x width``."""
    area = float(height * width)
    total = 0.0
    for b in structure.blocks:
        total += _block_macs_per_pixel(b) * area
        area /= b.stride * b.stride
    return total


__all__ = [
    "CostTerm",
    "DetectorCosts",
    "DetectorTerm",
    "backbone_conv_macs",
    "dense_head_cost",
    "detector_costs",
    "detector_flops_params",
    "faster_rcnn_head_cost",
    "fpn_cost",
    "gfpn_cost",
    "level_channels",
    "neck_head_cost",
]
