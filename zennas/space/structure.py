"""A candidate backbone as plain data: an ordered tuple of blocks.

JSON document (format version 1)::

    {"format": "zennas.structure", "version": 1,
     "blocks": [{"type": "ConvKXBNRELU", "in": 3, "out": 32, "stride": 2, "kernel": 3, "layers": 1},
                {"type": "SuperResK1KXK1", "in": 32, "out": 256, "stride": 2, "kernel": 3,
                 "layers": 1, "bottleneck": 64}, ...],
     "neck": {"type": "gfpn", "depth": 7, "width": 0.7}}

``neck`` is optional: the detector neck chosen for this backbone (a neck co-search writes it; see
:class:`Neck`). A structure is the backbone either way: scores and backbone costs read the blocks
alone, and a document without ``neck`` is exactly the format-1 document it always was.

A structure is *valid* when every block's type is known, its channels are positive and chained
(each block's ``in`` is the previous block's ``out``), its stride is 1 or 2 (or the one its type
fixes), its kernel odd and positive, and its layer count within the type's bounds. The search
space's mutation rules (``out <= 4*in`` and the like) constrain only what a mutation produces, so
published structures that break them are still valid structures.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from zennas.errors import StructureError
from zennas.space.kinds import BLOCK_KINDS

FORMAT_NAME = "zennas.structure"
FORMAT_VERSION = 1

_BLOCK_KEYS = ("type", "in", "out", "stride", "kernel", "layers", "bottleneck")
_NECK_KEYS = ("type", "depth", "width")


class Block(NamedTuple):
    """One block of a structure. A named tuple, so that building, hashing and comparing one runs in C:
    the search builds a few per candidate and looks each up in per-block cost caches."""

    type: str  # block type name, one of zennas.space.kinds.BLOCK_KINDS
    in_channels: int  # input channels ("in" in JSON)
    out_channels: int  # output channels ("out" in JSON)
    stride: int  # 1 or 2, carried by the block's first unit
    kernel: int  # kxk kernel of the block's spatial convs (odd)
    layers: int = 1  # repeated units (a K1KXK1 unit is 3 convs)
    bottleneck: int | None = None  # bottleneck / expanded channels, for types that have them

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "type": self.type,
            "in": self.in_channels,
            "out": self.out_channels,
            "stride": self.stride,
            "kernel": self.kernel,
            "layers": self.layers,
        }
        if self.bottleneck is not None:
            d["bottleneck"] = self.bottleneck
        return d


def _int_field(raw: Mapping[str, Any], key: str, where: str, *, default: int | None = None) -> int:
    if key not in raw:
        if default is not None:
            return default
        raise StructureError(f"{where}.{key} is missing", field=f"{where}.{key}")
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise StructureError(
            f"{where}.{key} must be an integer, got {value!r}", field=f"{where}.{key}"
        )
    return value


def block_from_dict(raw: Any, index: int) -> Block:
    where = f"blocks[{index}]"
    if not isinstance(raw, Mapping):
        raise StructureError(f"{where} must be an object, got {type(raw).__name__}", field=where)
    unknown = sorted(set(raw) - set(_BLOCK_KEYS))
    if unknown:
        raise StructureError(
            f"{where} has unknown key {unknown[0]!r} (allowed: {', '.join(_BLOCK_KEYS)})",
            field=f"{where}.{unknown[0]}",
        )
    btype = raw.get("type")
    if not isinstance(btype, str):
        raise StructureError(f"{where}.type must be a block type name, got {btype!r}", field=f"{where}.type")
    bottleneck = raw.get("bottleneck")
    if bottleneck is not None and (isinstance(bottleneck, bool) or not isinstance(bottleneck, int)):
        raise StructureError(
            f"{where}.bottleneck must be an integer, got {bottleneck!r}", field=f"{where}.bottleneck"
        )
    return Block(
        type=btype,
        in_channels=_int_field(raw, "in", where),
        out_channels=_int_field(raw, "out", where),
        stride=_int_field(raw, "stride", where),
        kernel=_int_field(raw, "kernel", where),
        layers=_int_field(raw, "layers", where, default=1),
        bottleneck=bottleneck,
    )


def validate_block(block: Block, index: int, prev_out: int | None) -> None:
    """Raise :class:`StructureError` naming ``blocks[index].field`` and the value if invalid."""
    where = f"blocks[{index}]"
    kind = BLOCK_KINDS.get(block.type)
    if kind is None:
        raise StructureError(
            f"{where}.type {block.type!r} is not a known block type (known: {', '.join(BLOCK_KINDS)})",
            field=f"{where}.type",
        )
    for name, value in (("in", block.in_channels), ("out", block.out_channels), ("stride", block.stride),
                        ("kernel", block.kernel), ("layers", block.layers)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise StructureError(f"{where}.{name} must be an integer, got {value!r}", field=f"{where}.{name}")
    if block.bottleneck is not None and (isinstance(block.bottleneck, bool) or not isinstance(block.bottleneck, int)):
        raise StructureError(f"{where}.bottleneck must be an integer, got {block.bottleneck!r}",
                             field=f"{where}.bottleneck")
    for name, value in (("in", block.in_channels), ("out", block.out_channels)):
        if value <= 0:
            raise StructureError(f"{where}.{name} must be positive, got {value}", field=f"{where}.{name}")
    if prev_out is not None and block.in_channels != prev_out:
        raise StructureError(
            f"{where}.in is {block.in_channels} but the previous block's out is {prev_out}: "
            "channels must be chained",
            field=f"{where}.in",
        )
    allowed = (kind.fixed_stride,) if kind.fixed_stride else (1, 2)
    if block.stride not in allowed:
        raise StructureError(
            f"{where}.stride must be {' or '.join(map(str, allowed))} for {block.type}, got {block.stride}",
            field=f"{where}.stride",
        )
    if block.kernel <= 0 or block.kernel % 2 == 0:
        raise StructureError(
            f"{where}.kernel must be a positive odd number, got {block.kernel}", field=f"{where}.kernel"
        )
    if block.layers < 1 or (kind.max_layers is not None and block.layers > kind.max_layers):
        bound = f"between 1 and {kind.max_layers}" if kind.max_layers else ">= 1"
        raise StructureError(
            f"{where}.layers must be {bound} for {block.type}, got {block.layers}", field=f"{where}.layers"
        )
    if kind.has_bottleneck:
        if block.bottleneck is None or block.bottleneck <= 0:
            raise StructureError(
                f"{where}.bottleneck must be a positive integer for {block.type}, got {block.bottleneck!r}",
                field=f"{where}.bottleneck",
            )
    elif block.bottleneck is not None:
        raise StructureError(
            f"{where}.bottleneck is not a field of {block.type}, got {block.bottleneck!r}",
            field=f"{where}.bottleneck",
        )


@dataclass(frozen=True, slots=True)
class Neck:
    """The detector neck chosen for a backbone: ``gfpn`` with its depth and width, or ``fpn`` (no size).

    Values follow :class:`zennas.detector.DetectorSettings`' rules (checked there, the one place);
    errors name ``neck.<key>``."""

    type: str  # gfpn | fpn (zennas.detector.NECK_TYPES)
    depth: int | None = None  # GFPN depth d (2d - 1 fusion layers); gfpn only
    width: float | None = None  # GFPN width (fusion nodes int(256 * width) wide); gfpn only

    def __post_init__(self) -> None:
        from zennas.detector.settings import DEFAULT_DETECTOR as D  # torch-free; imported here: it imports us back
        from zennas.detector.settings import DetectorSettings
        from zennas.errors import SpecError

        if self.type == "gfpn":
            for key, value in (("depth", self.depth), ("width", self.width)):
                if value is None:
                    raise StructureError(f"neck.{key} is missing (a gfpn neck has a depth and a width)",
                                         field=f"neck.{key}")
        elif self.type == "fpn":
            for key, value in (("depth", self.depth), ("width", self.width)):
                if value is not None:
                    raise StructureError(f"neck.{key} is not a field of an fpn neck, got {value!r}",
                                         field=f"neck.{key}")
        if isinstance(self.width, int) and not isinstance(self.width, bool):
            object.__setattr__(self, "width", float(self.width))  # 1 and 1.0 are one width
        keys = {"neck": "type", "gfpn_depth": "depth", "gfpn_width": "width"}
        try:
            DetectorSettings(neck=self.type, gfpn_depth=D.gfpn_depth if self.depth is None else self.depth,
                             gfpn_width=D.gfpn_width if self.width is None else self.width)
        except SpecError as e:
            name = f"neck.{keys.get(e.field or '', 'type')}"
            raise StructureError(f"{name}: {e.message}", field=name) from None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type}
        if self.depth is not None:
            d["depth"] = self.depth
        if self.width is not None:
            d["width"] = self.width
        return d

    @classmethod
    def from_dict(cls, raw: Any) -> Neck:
        if not isinstance(raw, Mapping):
            raise StructureError(f"neck must be an object, got {type(raw).__name__}", field="neck")
        unknown = sorted(set(raw) - set(_NECK_KEYS))
        if unknown:
            raise StructureError(f"neck has unknown key {unknown[0]!r} (allowed: {', '.join(_NECK_KEYS)})",
                                 field=f"neck.{unknown[0]}")
        if "type" not in raw:
            raise StructureError("neck.type is missing (gfpn or fpn)", field="neck.type")
        depth, width = raw.get("depth"), raw.get("width")
        if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int)):
            raise StructureError(f"neck.depth must be an integer, got {depth!r}", field="neck.depth")
        if width is not None and (isinstance(width, bool) or not isinstance(width, (int, float))):
            raise StructureError(f"neck.width must be a number, got {width!r}", field="neck.width")
        return cls(raw["type"], depth, width)


@dataclass(frozen=True, slots=True)
class Structure:
    """An ordered, validated tuple of blocks, and optionally the detector neck chosen for it. Hashable,
    so it can key caches and deduplicate. The search's candidates never carry a neck (:meth:`trusted`):
    a neck co-search attaches the chosen one (:meth:`with_neck`) only to the structure it writes out."""

    blocks: tuple[Block, ...]
    neck: Neck | None = None  # the detector neck chosen for this backbone (None: not part of the document)
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.blocks, tuple):
            object.__setattr__(self, "blocks", tuple(self.blocks))
        if not self.blocks:
            raise StructureError("a structure needs at least one block", field="blocks")
        prev: int | None = None
        for i, b in enumerate(self.blocks):
            validate_block(b, i, prev)
            prev = b.out_channels
        if self.neck is not None and not isinstance(self.neck, Neck):
            raise StructureError(f"neck must be a Neck, got {type(self.neck).__name__}", field="neck")
        object.__setattr__(self, "_hash", hash(self.blocks) if self.neck is None else hash((self.blocks, self.neck)))

    def __hash__(self) -> int:
        return self._hash

    @classmethod
    def trusted(cls, blocks: tuple[Block, ...]) -> Structure:
        """A structure whose validity the caller guarantees, built without the checks: only the
        mutation calls it, and tests/core/test_mutation.py re-validates every child it makes."""
        s = object.__new__(cls)
        _SET_BLOCKS(s, blocks)  # the slots' own setters: the frozen __setattr__ is bypassed, and a
        _SET_NECK(s, None)  # third slot costs no more than the two object.__setattr__ calls did
        _SET_HASH(s, hash(blocks))
        return s

    def with_neck(self, neck: Neck | None) -> Structure:
        """This backbone with ``neck`` attached (None: the backbone alone)."""
        return self if neck == self.neck else Structure(self.blocks, neck)

    def __len__(self) -> int:
        return len(self.blocks)

    @property
    def in_channels(self) -> int:
        return self.blocks[0].in_channels

    @property
    def out_channels(self) -> int:
        return self.blocks[-1].out_channels

    def stages(self) -> tuple[tuple[int, int], ...]:
        """The stages C1..Cn as (first, last) block indices, inclusive. The one place of MAE-DET's stage
        rule: a stage ends at the block before each stride-2 block and at the last block."""
        blocks = self.blocks
        last = len(blocks) - 1
        out: list[tuple[int, int]] = []
        first = 0
        for i in range(len(blocks)):
            if i == last or blocks[i + 1].stride == 2:
                out.append((first, i))
                first = i + 1
        return tuple(out)

    def stage_ends(self) -> tuple[int, ...]:
        """The index of the last block of each stage (see :meth:`stages`)."""
        return tuple(last for _, last in self.stages())

    def stage_table(self) -> list[dict[str, Any]]:
        """The stages as plain data (what the service returns, what the console and report draw):
        name (C1..Cn), first and last block, output channels, total stride w.r.t. the input image."""
        out: list[dict[str, Any]] = []
        total = 1
        for n, (first, last) in enumerate(self.stages()):
            for b in self.blocks[first:last + 1]:
                total *= b.stride
            out.append({"name": f"C{n + 1}", "start": first, "end": last,
                        "channels": self.blocks[last].out_channels, "stride": total})
        return out

    def replace_block(self, index: int, **changes: Any) -> Structure:
        blocks = list(self.blocks)
        blocks[index] = blocks[index]._replace(**changes)
        return Structure(tuple(blocks), self.neck)

    # -- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "blocks": [b.to_dict() for b in self.blocks],
        }
        if self.neck is not None:
            d["neck"] = self.neck.to_dict()
        return d

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, raw: Any) -> Structure:
        if not isinstance(raw, Mapping):
            raise StructureError(f"a structure must be a JSON object, got {type(raw).__name__}")
        unknown = sorted(set(raw) - {"format", "version", "blocks", "neck"})
        if unknown:
            raise StructureError(f"unknown key {unknown[0]!r} in structure document", field=unknown[0])
        fmt = raw.get("format", FORMAT_NAME)
        if fmt != FORMAT_NAME:
            raise StructureError(f"format must be {FORMAT_NAME!r}, got {fmt!r}", field="format")
        version = raw.get("version", FORMAT_VERSION)
        if isinstance(version, bool) or not isinstance(version, int) or version != FORMAT_VERSION:
            raise StructureError(
                f"version {version!r} is not supported (this zennas reads version {FORMAT_VERSION})",
                field="version",
            )
        blocks = raw.get("blocks")
        if not isinstance(blocks, list):
            raise StructureError("blocks must be a list of block objects", field="blocks")
        neck = Neck.from_dict(raw["neck"]) if raw.get("neck") is not None else None
        return cls(tuple(block_from_dict(b, i) for i, b in enumerate(blocks)), neck)

    @classmethod
    def from_json(cls, text: str) -> Structure:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise StructureError(f"not valid JSON: {e}") from e
        return cls.from_dict(raw)

    @classmethod
    def of(cls, blocks: Iterable[Block]) -> Structure:
        return cls(tuple(blocks))


_SET_BLOCKS, _SET_NECK, _SET_HASH = (Structure.__dict__[n].__set__ for n in ("blocks", "neck", "_hash"))
