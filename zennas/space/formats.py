"""Importers and exporters for the structure formats people already have.

- ours: the JSON document of :mod:`zennas.space.structure`;
- TinyNAS / MAE-DET: a Python-literal list of dicts with keys ``class, in, out, s, k, L, btn``, or a
  dict ``{'best_structures': [[...]], ...}``; parsed with :func:`ast.literal_eval`, never ``eval``;
- ZenNAS block strings: ``SuperConvK3BNRELU(3,32,2,1)SuperResK1K5K1(32,48,2,32,1)...``. One ZenNAS
  sub_layer is two bottleneck units. Raw ``ConvKX(..)BN(..)RELU(..)`` triples are regrouped: nine
  ops of the 1x1 -> kxk -> 1x1 pattern make one bottleneck unit, a lone triple a conv block.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zennas.errors import FormatError, StructureError
from zennas.space.kinds import BLOCK_KINDS, tinynas_classes
from zennas.space.structure import Block, Structure

_TINYNAS_KEYS = {"class", "in", "out", "s", "k", "L", "btn"}


# -- TinyNAS ---------------------------------------------------------------------------------
def from_tinynas(blocks: Any) -> Structure:
    """Build a structure from TinyNAS block dicts (already parsed)."""
    if isinstance(blocks, Mapping):
        best = blocks.get("best_structures")
        if not isinstance(best, list) or not best or not isinstance(best[0], list):
            raise FormatError("a TinyNAS dict must hold 'best_structures': [[block, ...]]", field="best_structures")
        blocks = best[0]
    if not isinstance(blocks, list) or not blocks:
        raise FormatError("a TinyNAS structure must be a non-empty list of block dicts")
    out: list[Block] = []
    for i, raw in enumerate(blocks):
        where = f"blocks[{i}]"
        if not isinstance(raw, Mapping):
            raise FormatError(f"{where} must be a dict, got {type(raw).__name__}", field=where)
        unknown = sorted(set(raw) - _TINYNAS_KEYS)
        if unknown:
            raise FormatError(
                f"{where} has key {unknown[0]!r}, which zennas does not read (keys: class, in, out, s, k, L, btn)",
                field=f"{where}.{unknown[0]}",
            )
        cls = raw.get("class")
        classes = tinynas_classes()  # TinyNAS class names (and aliases used by its releases) -> our types
        btype = classes.get(cls) if isinstance(cls, str) else None
        if btype is None:
            raise FormatError(
                f"{where}.class {cls!r} is not supported (supported: {', '.join(classes)})",
                field=f"{where}.class",
            )
        fields = {"in": raw.get("in"), "out": raw.get("out"), "stride": raw.get("s", 1), "kernel": raw.get("k")}
        doc: dict[str, Any] = {"type": btype, **fields, "layers": raw.get("L", 1)}
        if "btn" in raw:
            doc["bottleneck"] = raw["btn"]
        out.append(_checked_block(doc, i))
    return Structure(tuple(out))


def _checked_block(doc: dict[str, Any], index: int) -> Block:
    from zennas.space.structure import block_from_dict

    return block_from_dict(doc, index)


def to_tinynas(structure: Structure) -> list[dict[str, Any]]:
    """The structure as TinyNAS block dicts (stems without ``L``/``btn``, as TinyNAS writes them; S2D and
    other kinds of ours under their own names)."""
    out: list[dict[str, Any]] = []
    for b in structure.blocks:
        d: dict[str, Any] = {"class": b.type, "in": b.in_channels, "out": b.out_channels, "s": b.stride, "k": b.kernel}
        kind = BLOCK_KINDS.get(b.type)
        if kind is None or not kind.stem:
            d["L"] = b.layers
        if b.bottleneck is not None:
            d["btn"] = b.bottleneck
        out.append(d)
    return out


def dumps_tinynas(structure: Structure) -> str:
    """TinyNAS's text format: a Python-literal list, one block per line."""
    lines = ",\n".join("    " + repr(d) for d in to_tinynas(structure))
    return "[\n" + lines + "\n]\n"


# -- ZenNAS ----------------------------------------------------------------------------------
_TOKEN = re.compile(r"\s*([A-Za-z][A-Za-z0-9]*)\(([^()]*)\)\s*")
_SUPER_CONV = re.compile(r"SuperConvK(\d+)BNRELU")
_SUPER_RES = re.compile(r"SuperResK1K(\d+)K1")


def _ints(args: str, token: str, n: int) -> list[int]:
    parts = [p for p in args.split(",") if p.strip()]
    if "|" in args:  # ZenNAS allows "name|a,b,c"
        parts = args.split("|", 1)[1].split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError as e:
        raise FormatError(f"{token}({args}): arguments must be integers") from e
    if len(values) != n:
        raise FormatError(f"{token}({args}): expected {n} arguments, got {len(values)}")
    return values


def from_zennas(text: str) -> Structure:
    """Parse a ZenNAS block string into a structure (see the module docstring for the rules)."""
    s = "".join(text.split())
    pos = 0
    tokens: list[tuple[str, str]] = []
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if m is None:
            raise FormatError(f"cannot parse ZenNAS string at character {pos}: {s[pos:pos + 40]!r}")
        tokens.append((m.group(1), m.group(2)))
        pos = m.end()
    if not tokens:
        raise FormatError("empty ZenNAS string")

    groups: list[tuple[Block, bool]] = []  # (block, came from raw triples)
    i = 0
    while i < len(tokens):
        name, args = tokens[i]
        if m := _SUPER_CONV.fullmatch(name):
            cin, cout, stride, sub = _ints(args, name, 4)
            k = int(m.group(1))
            for j in range(sub):  # sub_layers convs; the first carries the stride
                groups.append((Block("ConvKXBNRELU", cin if j == 0 else cout, cout, stride if j == 0 else 1, k), False))
            i += 1
        elif m := _SUPER_RES.fullmatch(name):
            cin, cout, stride, btn, sub = _ints(args, name, 5)
            k = int(m.group(1))
            groups.append((Block("SuperResK1KXK1", cin, cout, stride, k, 2 * sub, btn), False))
            i += 1
        elif name == "ConvKX":
            block, used = _raw_group(tokens, i)
            groups.append((block, True))
            i += used
        else:
            raise FormatError(f"ZenNAS block {name!r} is not supported")

    merged: list[tuple[Block, bool]] = []
    for block, raw in groups:
        if merged:
            prev, prev_raw = merged[-1]
            if (
                (raw or prev_raw)
                and block.type == prev.type == "SuperResK1KXK1"
                and block.stride == 1
                and block.in_channels == block.out_channels == prev.out_channels
                and block.kernel == prev.kernel
                and block.bottleneck == prev.bottleneck
            ):
                merged[-1] = (
                    Block(prev.type, prev.in_channels, prev.out_channels, prev.stride, prev.kernel,
                          prev.layers + block.layers, prev.bottleneck),
                    True,
                )
                continue
        merged.append((block, raw))
    try:
        return Structure(tuple(b for b, _ in merged))
    except StructureError as e:
        raise FormatError(f"ZenNAS string gives an invalid structure: {e}", field=e.field) from e


def _raw_triple(tokens: list[tuple[str, str]], i: int) -> tuple[int, int, int, int] | None:
    """ConvKX(in,out,k,s)BN(out)RELU(out) at token i -> (in, out, k, s), or None."""
    if i + 2 >= len(tokens):
        return None
    (n0, a0), (n1, a1), (n2, a2) = tokens[i : i + 3]
    if n0 != "ConvKX" or n1 != "BN" or n2 != "RELU":
        return None
    cin, cout, k, s = _ints(a0, n0, 4)
    (bn,) = _ints(a1, n1, 1)
    (relu,) = _ints(a2, n2, 1)
    if bn != cout or relu != cout:
        raise FormatError(f"ConvKX({a0})BN({a1})RELU({a2}): BN/RELU channels must equal the conv's out")
    return cin, cout, k, s


def _raw_group(tokens: list[tuple[str, str]], i: int) -> tuple[Block, int]:
    first = _raw_triple(tokens, i)
    if first is None:
        raise FormatError(f"ConvKX at token {i} must be followed by BN(..)RELU(..)")
    c1, c2 = first, _raw_triple(tokens, i + 3)
    c3 = _raw_triple(tokens, i + 6) if c2 else None
    if (
        c2 and c3
        and c1[2] == 1 and c1[3] == 1 and c3[2] == 1 and c3[3] == 1  # 1x1 convs around the kxk
        and c2[0] == c2[1] == c1[1] and c3[0] == c2[1]
    ):
        cin, btn = c1[0], c1[1]
        return Block("SuperResK1KXK1", cin, c3[1], c2[3], c2[2], 1, btn), 9
    cin, cout, k, s = c1
    return Block("ConvKXBNRELU", cin, cout, s, k), 3


# -- any format ------------------------------------------------------------------------------
def parse_structure(text: str) -> Structure:
    """Parse a structure in any supported format, detected from the text."""
    stripped = text.strip()
    if not stripped:
        raise FormatError("empty structure text")
    if stripped[0] in "[{":
        try:
            raw = json.loads(stripped)
        except RecursionError as e:
            raise FormatError("the structure text is nested too deeply to be a structure") from e
        except json.JSONDecodeError:
            try:
                raw = ast.literal_eval(stripped)
            except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
                raise FormatError(f"not JSON and not a Python literal: {e}") from e
        return structure_from_obj(raw)
    return from_zennas(stripped)


def structure_from_obj(raw: Any) -> Structure:
    """A parsed JSON/literal object in our format or TinyNAS's, told apart by its keys."""
    if isinstance(raw, Mapping) and ("blocks" in raw or raw.get("format") is not None):
        return Structure.from_dict(raw)
    if isinstance(raw, Mapping) and "structure" in raw and isinstance(raw["structure"], (list, Mapping)):
        return structure_from_obj(raw["structure"])  # e.g. a fixture entry or a search summary
    if isinstance(raw, list) and raw and isinstance(raw[0], Mapping) and "type" in raw[0]:
        return Structure.from_dict({"blocks": raw})
    return from_tinynas(raw)


def load_structure(path: str | Path) -> Structure:
    """Read a structure file of any supported format."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise FormatError(f"cannot read structure file {str(p)!r}: {e.strerror}", field="structure") from e
    except UnicodeDecodeError as e:
        raise FormatError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})", field="structure") from e
    try:
        return parse_structure(text)
    except StructureError as e:
        raise type(e)(f"{p}: {e.message}", field=e.field) from e


def dump_structure(structure: Structure, fmt: str = "json") -> str:
    if fmt == "json":
        return structure.to_json(indent=2) + "\n"
    if fmt == "tinynas":
        return dumps_tinynas(structure)
    raise FormatError(f"unknown output format {fmt!r} (json, tinynas)", field="format")
