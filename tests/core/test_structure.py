"""Structure / Block: JSON round trip and every validation path (messages name index, field, value)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from zennas.errors import StructureError
from zennas.space import FORMAT_VERSION, Block, Structure, from_tinynas, get_space, space_names

DATA = Path(__file__).parent.parent / "data"
STRUCTURES = json.loads((DATA / "structures.json").read_text())["structures"]
SEARCH = json.loads((DATA / "search.json").read_text())


def _all_structures() -> dict[str, Structure]:
    out = {name: from_tinynas(fx["structure"]) for name, fx in STRUCTURES.items()}
    out["search_start"] = from_tinynas(SEARCH["start_structure"])
    for name in space_names():
        out[f"space:{name}"] = get_space(name).start
    return out


ALL = _all_structures()


def _doc(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"format": "zennas.structure", "version": FORMAT_VERSION, "blocks": list(blocks)}


STEM = {"type": "ConvKXBNRELU", "in": 3, "out": 32, "stride": 2, "kernel": 3, "layers": 1}
RES = {"type": "SuperResK1KXK1", "in": 32, "out": 64, "stride": 2, "kernel": 3, "layers": 2, "bottleneck": 16}


# -- round trip ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ALL))
def test_dict_round_trip_exact(name: str) -> None:
    s = ALL[name]
    d = s.to_dict()
    assert d["format"] == "zennas.structure" and d["version"] == FORMAT_VERSION
    assert Structure.from_dict(d) == s
    assert Structure.from_dict(d).to_dict() == d
    # a deep copy through real JSON text stays identical too
    assert Structure.from_dict(json.loads(json.dumps(d))).to_dict() == d


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("indent", [None, 2])
def test_json_round_trip_exact(name: str, indent: int | None) -> None:
    s = ALL[name]
    text = s.to_json(indent=indent)
    s2 = Structure.from_json(text)
    assert s2 == s
    assert hash(s2) == hash(s)
    assert s2.to_json(indent=indent) == text


def test_to_dict_key_order_and_bottleneck_only_when_present() -> None:
    s = Structure.from_dict(_doc(STEM, RES))
    d = s.to_dict()
    assert list(d) == ["format", "version", "blocks"]
    assert list(d["blocks"][0]) == ["type", "in", "out", "stride", "kernel", "layers"]
    assert list(d["blocks"][1]) == ["type", "in", "out", "stride", "kernel", "layers", "bottleneck"]
    assert d == _doc(STEM, RES)


def test_defaults_format_version_and_layers() -> None:
    stem = {k: v for k, v in STEM.items() if k != "layers"}
    s = Structure.from_dict({"blocks": [stem]})
    assert s.blocks[0].layers == 1
    assert s.to_dict() == _doc(STEM)


def test_structure_properties_and_replace_block() -> None:
    s = Structure.from_dict(_doc(STEM, RES))
    assert len(s) == 2 and s.in_channels == 3 and s.out_channels == 64
    s2 = s.replace_block(1, kernel=5)
    assert s2.blocks[1].kernel == 5 and s.blocks[1].kernel == 3  # frozen: s unchanged
    assert s2 != s and hash(s2) != hash(s)
    with pytest.raises(StructureError, match=r"blocks\[1\]\.kernel") as ei:
        s.replace_block(1, kernel=4)
    assert ei.value.field == "blocks[1].kernel"
    assert Structure.of(iter(s.blocks)) == s
    assert Structure(list(s.blocks)) == s  # a list is accepted and frozen into a tuple
    assert isinstance(Structure(list(s.blocks)).blocks, tuple)


def test_structures_are_hashable_and_dedupe() -> None:
    a = Structure.from_dict(_doc(STEM, RES))
    b = Structure.from_json(a.to_json())
    assert len({a, b}) == 1


# -- rejection paths -------------------------------------------------------------------------
def _bad(block_index: int, **changes: Any) -> dict[str, Any]:
    blocks = [copy.deepcopy(STEM), copy.deepcopy(RES)]
    for k, v in changes.items():
        if v is _DELETE:
            del blocks[block_index][k]
        else:
            blocks[block_index][k] = v
    return _doc(*blocks)


_DELETE = object()

REJECTIONS = [
    # (document, field, regex the message must match: it names index, field and value)
    (_bad(1, out="64"), "blocks[1].out", r"blocks\[1\]\.out must be an integer, got '64'"),
    (_bad(1, kernel=3.0), "blocks[1].kernel", r"blocks\[1\]\.kernel must be an integer, got 3\.0"),
    (_bad(0, stride=True), "blocks[0].stride", r"blocks\[0\]\.stride must be an integer, got True"),
    (_bad(1, layers=False), "blocks[1].layers", r"blocks\[1\]\.layers must be an integer, got False"),
    (
        _bad(1, bottleneck=True),
        "blocks[1].bottleneck",
        r"blocks\[1\]\.bottleneck must be an integer, got True",
    ),
    (
        _bad(1, bottleneck=16.5),
        "blocks[1].bottleneck",
        r"blocks\[1\]\.bottleneck must be an integer, got 16\.5",
    ),
    (_bad(1, stride=None), "blocks[1].stride", r"blocks\[1\]\.stride must be an integer, got None"),
    (_bad(1, out=_DELETE), "blocks[1].out", r"blocks\[1\]\.out is missing"),
    (_bad(0, out=-32, **{}), "blocks[0].out", r"blocks\[0\]\.out must be positive, got -32"),
    (_bad(0, **{"in": 0}), "blocks[0].in", r"blocks\[0\]\.in must be positive, got 0"),
    (
        _bad(1, **{"in": 48}),
        "blocks[1].in",
        r"blocks\[1\]\.in is 48 but the previous block's out is 32: channels must be chained",
    ),
    (_bad(1, stride=3), "blocks[1].stride", r"blocks\[1\]\.stride must be 1 or 2 for SuperResK1KXK1, got 3"),
    (_bad(0, stride=0), "blocks[0].stride", r"blocks\[0\]\.stride must be 1 or 2 for ConvKXBNRELU, got 0"),
    (_bad(1, kernel=4), "blocks[1].kernel", r"blocks\[1\]\.kernel must be a positive odd number, got 4"),
    (_bad(1, kernel=-1), "blocks[1].kernel", r"blocks\[1\]\.kernel must be a positive odd number, got -1"),
    (_bad(1, layers=0), "blocks[1].layers", r"blocks\[1\]\.layers must be >= 1 for SuperResK1KXK1, got 0"),
    (
        _bad(0, layers=2),
        "blocks[0].layers",
        r"blocks\[0\]\.layers must be between 1 and 1 for ConvKXBNRELU, got 2",
    ),
    (
        _bad(1, bottleneck=_DELETE),
        "blocks[1].bottleneck",
        r"blocks\[1\]\.bottleneck must be a positive integer for SuperResK1KXK1, got None",
    ),
    (
        _bad(1, bottleneck=0),
        "blocks[1].bottleneck",
        r"blocks\[1\]\.bottleneck must be a positive integer for SuperResK1KXK1, got 0",
    ),
    (
        _bad(0, bottleneck=16),
        "blocks[0].bottleneck",
        r"blocks\[0\]\.bottleneck is not a field of ConvKXBNRELU, got 16",
    ),
    (
        _bad(1, type="SuperResK1K9K1"),
        "blocks[1].type",
        r"blocks\[1\]\.type 'SuperResK1K9K1' is not a known block type",
    ),
    (_bad(1, type=7), "blocks[1].type", r"blocks\[1\]\.type must be a block type name, got 7"),
    (_bad(1, type=_DELETE), "blocks[1].type", r"blocks\[1\]\.type must be a block type name, got None"),
    (_bad(1, g=1), "blocks[1].g", r"blocks\[1\] has unknown key 'g'"),
    (_bad(1, btn=16), "blocks[1].btn", r"blocks\[1\] has unknown key 'btn'"),
]


@pytest.mark.parametrize(
    ("doc", "field", "pattern"), REJECTIONS, ids=[r[1] + ":" + r[2][:40] for r in REJECTIONS]
)
def test_block_rejections_name_index_field_value(doc: dict[str, Any], field: str, pattern: str) -> None:
    with pytest.raises(StructureError, match=pattern) as ei:
        Structure.from_dict(doc)
    assert ei.value.field == field
    assert isinstance(ei.value, ValueError)  # callers may catch ValueError
    # the same error comes through JSON text
    with pytest.raises(StructureError, match=pattern):
        Structure.from_json(json.dumps(doc))


def test_s2d_stride_is_fixed() -> None:
    doc = _doc(STEM, {"type": "S2D", "in": 32, "out": 64, "stride": 1, "kernel": 3, "layers": 1})
    with pytest.raises(StructureError, match=r"blocks\[1\]\.stride must be 2 for S2D, got 1") as ei:
        Structure.from_dict(doc)
    assert ei.value.field == "blocks[1].stride"


def test_first_error_wins_in_block_order() -> None:
    doc = _doc(STEM, RES)
    doc["blocks"][0]["kernel"] = 2
    doc["blocks"][1]["kernel"] = 4
    with pytest.raises(StructureError) as ei:
        Structure.from_dict(doc)
    assert ei.value.field == "blocks[0].kernel"


def test_block_not_an_object() -> None:
    with pytest.raises(StructureError, match=r"blocks\[1\] must be an object, got list") as ei:
        Structure.from_dict(_doc(STEM, [1, 2]))  # type: ignore[arg-type]
    assert ei.value.field == "blocks[1]"


@pytest.mark.parametrize(
    ("doc", "field", "pattern"),
    [
        (
            {"format": "tinynas", "version": 1, "blocks": [STEM]},
            "format",
            r"format must be 'zennas.structure', got 'tinynas'",
        ),
        (
            {"format": "zennas.structure", "version": 2, "blocks": [STEM]},
            "version",
            r"version 2 is not supported",
        ),
        (
            {"format": "zennas.structure", "version": "1", "blocks": [STEM]},
            "version",
            r"version '1' is not supported",
        ),
        ({"blocks": [STEM], "extra": 1}, "extra", r"unknown key 'extra' in structure document"),
        ({"blocks": {"0": STEM}}, "blocks", r"blocks must be a list of block objects"),
        ({"format": "zennas.structure"}, "blocks", r"blocks must be a list of block objects"),
        ({"blocks": []}, "blocks", r"a structure needs at least one block"),
    ],
)
def test_document_rejections(doc: dict[str, Any], field: str, pattern: str) -> None:
    with pytest.raises(StructureError, match=pattern) as ei:
        Structure.from_dict(doc)
    assert ei.value.field == field


@pytest.mark.parametrize("raw", [[STEM], "text", None, 3])
def test_document_must_be_an_object(raw: Any) -> None:
    with pytest.raises(StructureError, match="a structure must be a JSON object"):
        Structure.from_dict(raw)


def test_from_json_rejects_invalid_json() -> None:
    with pytest.raises(StructureError, match="not valid JSON"):
        Structure.from_json("{'blocks': [")


def test_empty_structure_rejected_directly() -> None:
    with pytest.raises(StructureError, match="at least one block") as ei:
        Structure(())
    assert ei.value.field == "blocks"


def test_direct_construction_validates() -> None:
    stem = Block("ConvKXBNRELU", 3, 32, 2, 3)
    with pytest.raises(StructureError, match=r"blocks\[1\]\.in is 16") as ei:
        Structure((stem, Block("SuperResK1KXK1", 16, 64, 2, 3, 1, 16)))
    assert ei.value.field == "blocks[1].in"
    with pytest.raises(StructureError, match=r"blocks\[0\]\.type 'Nope'"):
        Structure((Block("Nope", 3, 32, 2, 3),))


@pytest.mark.parametrize(
    "block",
    [
        Block("ConvKXBNRELU", 3, 32, True, 3),  # bool stride (== 1) is accepted
        Block("ConvKXBNRELU", 3, 32.5, 2, 3),  # type: ignore[arg-type]  # fractional channels accepted
        Block("ConvKXBNRELU", "3", 32, 2, 3),  # type: ignore[arg-type]  # TypeError, not StructureError
    ],
    ids=["bool-stride", "float-out", "str-in"],
)
def test_direct_construction_rejects_non_int_fields(block: Block) -> None:
    with pytest.raises(StructureError):
        Structure((block,))


@pytest.mark.parametrize("version", [True, 1.0])
def test_version_must_be_the_integer_1(version: Any) -> None:
    with pytest.raises(StructureError, match="version"):
        Structure.from_dict({"format": "zennas.structure", "version": version, "blocks": [STEM]})


def test_published_structures_breaking_mutation_rules_are_valid() -> None:
    # MAE-DET-S has btn < out/10 and out > 4*in in places: still a valid structure
    s = ALL["maedet_s"]
    b3 = s.blocks[3]
    assert b3.bottleneck is not None and b3.bottleneck < b3.out_channels / 10
    assert s.blocks[2].out_channels > 4 * s.blocks[2].in_channels
