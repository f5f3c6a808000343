"""A search space is data: one YAML file per space, parsed into frozen dataclasses.

Top-level keys: ``name``, ``description``, ``start`` (a structure: list of blocks in our JSON form),
``block_types`` (which types may stand first / elsewhere), ``stages`` (stride-2 stage count, e.g. 5
for C1..C5), ``stage_weights``, ``mutation`` (:class:`MutationRules`) and ``budgets``
(:class:`Budgets`, the defaults a search uses when the user gives none). Unknown keys and bad values
fail with a message naming the file, the key and the value.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from zennas.errors import SpaceError, StructureError
from zennas.space.kinds import BLOCK_KINDS
from zennas.space.structure import Structure

MAX_NAME = 100  # characters of a space's name
MAX_DESCRIPTION = 4000  # characters of its description


@dataclass(frozen=True)
class MutationRules:
    rounds: int = 2  # mutation rounds per candidate; each changes one field of one block
    pick: str = "any"  # "any" block, or "reference" (never the last block, TinyNAS's quirk)
    stem_fields: tuple[str, ...] = ("out",)  # fields a stem mutation may change
    block_fields: tuple[str, ...] = ("out", "kernel", "bottleneck", "layers")  # the same for other blocks
    channel_multipliers: tuple[float, ...] = (1.5, 1.25, 0.8, 0.6, 0.5)  # new channels = old * one of these
    channel_round: int = 8  # channels are rounded to the nearest multiple of this (and at least it)
    max_channels: int = 2048  # upper bound on any block's out/bottleneck channels
    stem_max_out: int | None = 32  # upper bound on the stem's out channels
    kernels: tuple[int, ...] = (3, 5)  # kernel choices (a mutation picks a different one)
    layer_deltas: tuple[int, ...] = (-2, -1, 1, 2)  # layer (unit count) changes
    first_block_max_layers: int | None = 3  # block 1 (after the stem) has at most this many units
    out_min_in_ratio: float | None = 1.0  # out >= ratio * in (None: no bound)
    out_max_in_ratio: float | None = 4.0  # out <= ratio * in
    out_max_next: bool = True  # out <= the next block's out
    next_out_divisor: float | None = 4.0  # out >= round(next.out / divisor)
    btn_min_divisor: float | None = 10.0  # bottleneck >= round(out / divisor)
    btn_max_out_ratio: float = 1.0  # bottleneck <= ratio * out (6.0 for inverted residuals)
    kernel_shrink_ratio: float = 1.5  # shrink k by 2 while k * ratio > the block's input size


@dataclass(frozen=True)
class Budgets:
    flops: float | None = None  # MACs + BN/act ops at height x width
    params: float | None = None  # parameters
    layers: int | None = None  # main-path conv layers
    latency_ms: float | None = None  # measured median latency on the evaluating worker
    height: int = 480  # input size the FLOPs budget is counted at
    width: int = 480


@dataclass(frozen=True)
class NeckChoices:
    """GFPN sizes a neck co-search may choose from (score ``neck-entropy-analytic``)."""

    depths: tuple[int, ...] = (2, 3, 5, 7)  # GFPN depths d (2d - 1 fusion layers)
    widths: tuple[float, ...] = (0.5, 0.7, 1.0)  # GFPN widths (nodes are int(256 * width) wide)


@dataclass(frozen=True)
class BlockTypes:
    first: tuple[str, ...] = ("ConvKXBNRELU",)  # types allowed as block 0 (the stem)
    rest: tuple[str, ...] = ("SuperResK1KXK1",)  # types allowed elsewhere


@dataclass(frozen=True)
class SearchSpace:
    name: str  # identifier, e.g. "detection-k1kxk1"
    start: Structure  # the structure the population is seeded from
    description: str = ""
    block_types: BlockTypes = field(default_factory=BlockTypes)
    stages: int = 5  # stages (C1..Cn) a structure of this space has
    stage_weights: tuple[float, ...] = (0.0, 0.0, 1.0, 1.0, 6.0)  # default score weights per stage
    mutation: MutationRules = field(default_factory=MutationRules)
    budgets: Budgets = field(default_factory=Budgets)
    neck: NeckChoices | None = None  # neck choices for a co-search of backbone and GFPN neck

    def __post_init__(self) -> None:
        check_structure_in_space(self, self.start, "start")

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)


def check_structure_in_space(space: SearchSpace, structure: Structure, where: str = "structure") -> None:
    """A structure belongs to a space when its block types are allowed where they stand and it has the
    space's stage count. (The mutation rules do not constrain it: published structures break them.)"""
    for i, b in enumerate(structure.blocks):
        allowed = space.block_types.first if i == 0 else space.block_types.rest
        if b.type not in allowed:
            raise SpaceError(
                f"{where}.blocks[{i}].type {b.type!r} is not allowed there in space {space.name!r} "
                f"(allowed: {', '.join(allowed)})",
                field=f"{where}.blocks[{i}].type",
            )
    n_stages = len(structure.stages())
    if n_stages != space.stages:
        raise SpaceError(
            f"{where} has {n_stages} stages but space {space.name!r} needs {space.stages} "
            "(a stage ends before each stride-2 block and at the last block)",
            field=f"{where}.blocks",
        )


# -- generic, strict conversion of YAML mappings into the dataclasses above --------------------
def _to_plain(obj: Any) -> Any:
    if isinstance(obj, Structure):
        return [b.to_dict() for b in obj.blocks]
    if hasattr(obj, "__dataclass_fields__"):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, tuple):
        return [_to_plain(x) for x in obj]
    return obj


def _convert(tp: Any, value: Any, key: str, src: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, key, src)
    if tp is Structure:
        if not isinstance(value, list):
            raise SpaceError(f"{src}: {key} must be a list of blocks, got {value!r}", field=key)
        try:
            return Structure.from_dict({"blocks": value})
        except StructureError as e:
            raise SpaceError(f"{src}: {key}: {e.message}", field=f"{key}.{e.field}" if e.field else key) from e
    if isinstance(tp, type) and hasattr(tp, "__dataclass_fields__"):
        return _build(tp, value, key, src)
    if origin is tuple:
        (elem, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, list):
            raise SpaceError(f"{src}: {key} must be a list, got {value!r}", field=key)
        if not value:
            raise SpaceError(f"{src}: {key} must not be empty", field=key)
        return tuple(_convert(elem, v, f"{key}[{i}]", src) for i, v in enumerate(value))
    if tp is float:
        if isinstance(value, str):  # PyYAML reads 1.88e10 (no exponent sign) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SpaceError(f"{src}: {key} must be a number, got {value!r}", field=key)
        return float(value)
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpaceError(f"{src}: {key} must be an integer, got {value!r}", field=key)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise SpaceError(f"{src}: {key} must be true or false, got {value!r}", field=key)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise SpaceError(f"{src}: {key} must be a string, got {value!r}", field=key)
        return value
    raise TypeError(f"unsupported field type {tp!r}")  # a bug in this module, not in the input


def _build(cls: type, raw: Any, prefix: str, src: str) -> Any:
    if not isinstance(raw, Mapping):
        raise SpaceError(f"{src}: {prefix or 'the document'} must be a mapping, got {raw!r}", field=prefix or None)
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if not f.name.startswith("_")}
    for k in raw:
        if k not in known:
            path = f"{prefix}.{k}" if prefix else str(k)
            raise SpaceError(f"{src}: unknown key {path!r} (value {raw[k]!r}); known keys: {', '.join(known)}",
                             field=path)
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        path = f"{prefix}.{name}" if prefix else name
        if name in raw:
            kwargs[name] = _convert(hints[name], raw[name], path, src)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise SpaceError(f"{src}: required key {path!r} is missing", field=path)
    try:
        obj = cls(**kwargs)
    except SpaceError as e:
        raise SpaceError(f"{src}: {e.message}", field=e.field) from e
    _check_values(obj, prefix, src)
    return obj


def _check_values(obj: Any, prefix: str, src: str) -> None:
    def bad(key: str, value: Any, why: str) -> SpaceError:
        path = f"{prefix}.{key}" if prefix else key
        return SpaceError(f"{src}: {path} = {value!r}: {why}", field=path)

    if isinstance(obj, MutationRules):
        if obj.rounds < 1:
            raise bad("rounds", obj.rounds, "must be >= 1")
        if obj.pick not in ("any", "reference"):
            raise bad("pick", obj.pick, "must be 'any' or 'reference'")
        for key, allowed in (("stem_fields", {"out", "kernel"}),
                             ("block_fields", {"out", "kernel", "bottleneck", "layers"})):
            for v in getattr(obj, key):
                if v not in allowed:
                    raise bad(key, v, f"not a mutable field (allowed: {', '.join(sorted(allowed))})")
        if any(m <= 0 for m in obj.channel_multipliers):
            raise bad("channel_multipliers", list(obj.channel_multipliers), "multipliers must be > 0")
        if any(k <= 0 or k % 2 == 0 for k in obj.kernels):
            raise bad("kernels", list(obj.kernels), "kernels must be positive odd numbers")
        if any(d == 0 for d in obj.layer_deltas):
            raise bad("layer_deltas", list(obj.layer_deltas), "a delta of 0 changes nothing")
        for key in ("channel_round", "max_channels", "first_block_max_layers", "stem_max_out"):
            v = getattr(obj, key)
            if v is not None and v < 1:
                raise bad(key, v, "must be >= 1")
        for key in ("btn_min_divisor", "next_out_divisor", "out_min_in_ratio", "out_max_in_ratio",
                    "btn_max_out_ratio", "kernel_shrink_ratio"):
            v = getattr(obj, key)
            if v is not None and v <= 0:
                raise bad(key, v, "must be > 0")
    if isinstance(obj, Budgets):
        for key in ("flops", "params", "layers", "latency_ms", "height", "width"):
            v = getattr(obj, key)
            if v is not None and v <= 0:
                raise bad(key, v, "must be positive")
    if isinstance(obj, NeckChoices):
        if any(d < 1 for d in obj.depths):
            raise bad("depths", list(obj.depths), "depths must be >= 1")
        if any(int(256 * w) < 1 for w in obj.widths):
            raise bad("widths", list(obj.widths), "widths must give at least one channel (int(256 * width) >= 1)")
    if isinstance(obj, BlockTypes):
        for key in ("first", "rest"):
            for v in getattr(obj, key):
                if v not in BLOCK_KINDS:
                    raise bad(key, v, f"unknown block type (known: {', '.join(BLOCK_KINDS)})")
    if isinstance(obj, SearchSpace):
        if not 0 < len(obj.name) <= MAX_NAME or not obj.name.isprintable():
            raise bad("name", obj.name[:40] + ("..." if len(obj.name) > 40 else ""),
                      f"must be 1-{MAX_NAME} printable characters (no control characters)")
        if len(obj.description) > MAX_DESCRIPTION or any(
                not c.isprintable() and c not in "\n\t" for c in obj.description):
            raise bad("description", obj.description[:40] + "...",
                      f"must be at most {MAX_DESCRIPTION} characters, without control characters other than "
                      "newlines and tabs")
        if len(obj.stage_weights) != obj.stages:
            raise bad("stage_weights", list(obj.stage_weights), f"needs one weight per stage ({obj.stages})")


def space_from_dict(raw: Any, *, source: str = "<inline space>") -> SearchSpace:
    space: SearchSpace = _build(SearchSpace, raw, "", source)
    return space


def load_space_file(path: str | Path) -> SearchSpace:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except OSError as e:
        raise SpaceError(f"cannot read space file {str(p)!r}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise SpaceError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except yaml.YAMLError as e:
        raise SpaceError(f"{p}: not valid YAML: {e}") from e
    return space_from_dict(raw, source=str(p))


def _shipped() -> dict[str, Any]:
    root = resources.files("zennas.search_spaces")
    return {f.name[: -len(".yaml")]: f for f in root.iterdir() if f.name.endswith(".yaml")}


def space_names() -> list[str]:
    return sorted(_shipped())


_CACHE: dict[str, SearchSpace] = {}


def get_space(name: str) -> SearchSpace:
    """A shipped space by name (``detection-k1kxk1``, ``detection-dw``, ``giraffe-s2d``)."""
    if name not in _CACHE:
        files = _shipped()
        if name not in files:
            raise SpaceError(f"unknown space {name!r} (shipped: {', '.join(sorted(files))})", field="space")
        src = f"search_spaces/{name}.yaml"
        try:
            raw = yaml.safe_load(files[name].read_text())
        except yaml.YAMLError as e:
            raise SpaceError(f"{src}: not valid YAML: {e}") from e
        space = space_from_dict(raw, source=src)
        if space.name != name:
            raise SpaceError(f"{src}: name is {space.name!r} but the file is named {name!r}", field="name")
        _CACHE[name] = space
    return _CACHE[name]
