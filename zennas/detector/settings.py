"""What a detector around a searched backbone is, as data: detector type, neck, neck size, classes.

One frozen dataclass, :class:`DetectorSettings`, whose defaults are the defaults of every place that
describes a detector (``zennas export-mmdet``, ``zennas costs``, a search spec's ``detector``), so the
config generator and the cost model always describe the same network. Torch-free.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from zennas.errors import SpecError

DETECTOR_TYPES = ("gfl", "atss", "retinanet", "faster-rcnn")
NECK_TYPES = ("gfpn", "fpn")
TWO_STAGE = frozenset({"faster-rcnn"})
NUM_LEVELS = 5  # the neck's output levels: P3-P7 (single-stage) or P2-P6 (Faster R-CNN)


def levels(two_stage: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(backbone levels the neck takes, neck output levels): single-stage detectors use P3-P7 on
    C3..C5; Faster R-CNN uses P2-P6 on C2..C5 (levels are log2 of the stride)."""
    first, n_in = (2, 4) if two_stage else (3, 3)
    return tuple(range(first, first + n_in)), tuple(range(first, first + NUM_LEVELS))


def pad_divisor(neck: str) -> int:
    """The data preprocessor's ``pad_size_divisor`` of a generated config: a GFPN fuses P3..P7 by exact
    2x resampling, so its input is padded to a multiple of P7's stride, 128; an FPN to 32."""
    return 128 if neck == "gfpn" else 32


def _int(value: Any, field: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{field.replace('_', '-')} must be an integer >= {minimum}, got {value!r}", field=field)
    return value


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    detector: str = "gfl"  # gfl | atss | retinanet | faster-rcnn
    neck: str = "gfpn"  # gfpn (GiraffeDet's generalized FPN) | fpn (mmdet's FPN)
    gfpn_depth: int = 7  # GFPN depth d: 2d - 1 fusion layers
    gfpn_width: float = 0.7  # GFPN fusion nodes are int(256 * width) channels wide
    neck_channels: int = 256  # neck output channels = head input and feature channels
    num_classes: int = 80  # classes the head predicts (80: COCO)

    def __post_init__(self) -> None:
        if self.detector not in DETECTOR_TYPES:
            raise SpecError(
                f"detector must be one of {', '.join(DETECTOR_TYPES)}, got {self.detector!r}", field="detector"
            )
        if self.neck not in NECK_TYPES:
            raise SpecError(f"neck must be one of {', '.join(NECK_TYPES)}, got {self.neck!r}", field="neck")
        _int(self.gfpn_depth, "gfpn_depth")
        w = self.gfpn_width
        if isinstance(w, bool) or not isinstance(w, (int, float)) or int(256 * w) < 1:
            raise SpecError(f"gfpn-width must be a number > 0, got {w!r}", field="gfpn_width")
        _int(self.neck_channels, "neck_channels")
        _int(self.num_classes, "num_classes")
        if self.detector in ("gfl", "atss") and self.neck_channels % 32:
            raise SpecError(
                f"neck-channels must be a multiple of 32 for {self.detector} (its head uses GroupNorm with "
                f"32 groups), got {self.neck_channels}",
                field="neck_channels",
            )

    @property
    def two_stage(self) -> bool:
        return self.detector in TWO_STAGE

    @property
    def in_levels(self) -> tuple[int, ...]:
        """Backbone levels the neck takes (C3..C5, or C2..C5 for Faster R-CNN)."""
        return levels(self.two_stage)[0]

    @property
    def out_levels(self) -> tuple[int, ...]:
        """The neck's output levels (P3-P7, or P2-P6 for Faster R-CNN)."""
        return levels(self.two_stage)[1]

    @property
    def gfpn_inner(self) -> int:
        """Channels of a GFPN fusion node."""
        return int(256 * self.gfpn_width)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: Any, field: str = "detector") -> DetectorSettings:
        """From a spec's ``detector`` mapping; keys ``type``/``depth``/``width`` are accepted as the
        short names of ``detector``/``gfpn_depth``/``gfpn_width``. Unknown keys are an error."""
        if isinstance(obj, DetectorSettings):
            return obj
        if not isinstance(obj, dict):
            raise SpecError(f"{field} must be a mapping, got {type(obj).__name__}", field=field)
        alias = {"type": "detector", "depth": "gfpn_depth", "width": "gfpn_width"}
        known = set(cls.__dataclass_fields__)
        kw: dict[str, Any] = {}
        for k, v in obj.items():
            name = alias.get(k, k)
            if name not in known:
                raise SpecError(
                    f"{field}.{k}: unknown key (known: type, neck, depth, width, neck_channels, num_classes)",
                    field=f"{field}.{k}",
                )
            kw[name] = float(v) if name == "gfpn_width" and isinstance(v, int) and not isinstance(v, bool) else v
        used = {alias.get(k, k): k for k in obj}  # errors name the key as the caller spelled it
        try:
            return cls(**kw)
        except SpecError as e:
            raise SpecError(e.message, field=f"{field}.{used.get(e.field or '', e.field)}") from None


DEFAULT_DETECTOR = DetectorSettings()


def resolve_neck(chosen: Any, *, neck: str | None = None, gfpn_depth: int | None = None,
                 gfpn_width: float | None = None) -> tuple[str, int, float]:
    """(neck, gfpn_depth, gfpn_width) of the detector around a structure whose file may carry the neck
    chosen for it (``chosen``: its :class:`zennas.space.structure.Neck`, or None).

    The one rule for every place that reads a structure file (``zennas export-mmdet``, ``zennas costs``,
    the service bundle's config): a value given explicitly (not None) is used; one not given comes from
    the file's neck, else from :class:`DetectorSettings`' defaults. An explicit value that contradicts
    the file's neck is an error naming it (``gfpn_depth``: the CLI's ``--gfpn-depth``); repeating the
    file's value is allowed."""
    if chosen is None:
        d = DEFAULT_DETECTOR
        return (d.neck if neck is None else neck, d.gfpn_depth if gfpn_depth is None else gfpn_depth,
                d.gfpn_width if gfpn_width is None else gfpn_width)
    desc = (f"gfpn depth {chosen.depth} width {chosen.width:g}" if chosen.type == "gfpn" else chosen.type)
    for name, given, have in (("neck", neck, chosen.type), ("gfpn_depth", gfpn_depth, chosen.depth),
                              ("gfpn_width", gfpn_width, chosen.width)):
        if given is None or given == have:
            continue
        flag = "--" + name.replace("_", "-")
        if have is None:  # a GFPN size given for a file whose neck is an FPN
            raise SpecError(f"{flag} {given:g} does not apply: the structure file's neck is {desc}; drop {flag}",
                            field=name)
        shown = f"{given:g}" if isinstance(given, (int, float)) else given
        raise SpecError(f"{flag} {shown} contradicts the structure file's neck ({desc}): drop {flag} "
                        "or edit the file's neck", field=name)
    d = DEFAULT_DETECTOR
    return (chosen.type, d.gfpn_depth if chosen.depth is None else chosen.depth,
            d.gfpn_width if chosen.width is None else chosen.width)
