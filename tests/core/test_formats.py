"""Structure importers/exporters: TinyNAS block lists, ZenNAS block strings, auto-detection, rejections."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from zennas.errors import FormatError, StructureError
from zennas.space import (
    Block,
    Structure,
    dump_structure,
    dumps_tinynas,
    from_tinynas,
    from_zennas,
    get_space,
    load_structure,
    parse_structure,
    space_names,
    to_tinynas,
)

DATA = Path(__file__).parent.parent / "data"
BAD = DATA / "bad"
STRUCTURES = json.loads((DATA / "structures.json").read_text())["structures"]
SEARCH = json.loads((DATA / "search.json").read_text())
FIXTURES = sorted(STRUCTURES)

MAEDET_S = Structure(
    (
        Block("ConvKXBNRELU", 3, 32, 2, 3),
        Block("SuperResK1KXK1", 32, 48, 2, 5, 2, 32),
        Block("SuperResK1KXK1", 48, 272, 2, 3, 4, 120),
        Block("SuperResK1KXK1", 272, 1024, 2, 5, 10, 80),
        Block("SuperResK1KXK1", 1024, 2048, 2, 3, 10, 240),
    )
)


def _py_literal(blocks: list[dict[str, Any]]) -> str:
    return "[" + ", ".join(repr(b) for b in blocks) + "]"  # single-quoted Python literal


# -- TinyNAS import --------------------------------------------------------------------------
def test_tinynas_maedet_s_fields() -> None:
    assert from_tinynas(STRUCTURES["maedet_s"]["structure"]) == MAEDET_S


@pytest.mark.parametrize("name", FIXTURES)
def test_tinynas_forms_agree(name: str) -> None:
    blocks = STRUCTURES[name]["structure"]
    s = from_tinynas(blocks)
    assert from_tinynas({"best_structures": [blocks], "space_arch": "CnnNet"}) == s
    assert parse_structure(json.dumps(blocks)) == s
    assert parse_structure(json.dumps({"best_structures": [blocks]})) == s
    literal = _py_literal(blocks)
    assert "'class'" in literal and '"' not in literal
    assert parse_structure(literal) == s
    assert parse_structure("{'best_structures': [" + literal + "], 'acc': [0.5]}") == s


def test_tinynas_defaults_stride_and_layers() -> None:
    s = from_tinynas([{"class": "ConvKXBNRELU", "in": 3, "out": 16, "k": 3}])
    assert s.blocks[0] == Block("ConvKXBNRELU", 3, 16, 1, 3, 1, None)


def test_tinynas_alias_class_name() -> None:
    s = from_tinynas(
        [
            {"class": "ConvKXBNRELU", "in": 3, "out": 16, "s": 2, "k": 3},
            {"class": "SuperResConvK1KXK1", "in": 16, "out": 32, "s": 2, "k": 3, "L": 1, "btn": 8},
        ]
    )
    assert s.blocks[1].type == "SuperResK1KXK1"


# -- TinyNAS export --------------------------------------------------------------------------
def _all_structures() -> dict[str, Structure]:
    out = {name: from_tinynas(fx["structure"]) for name, fx in STRUCTURES.items()}
    out["search_start"] = from_tinynas(SEARCH["start_structure"])
    for name in space_names():
        out[f"space:{name}"] = get_space(name).start
    return out


ALL = _all_structures()


@pytest.mark.parametrize("name", sorted(ALL))
def test_tinynas_export_round_trip(name: str) -> None:
    s = ALL[name]
    text = dumps_tinynas(s)
    assert text.startswith("[\n") and text.endswith("\n]\n")
    assert len(text.strip().splitlines()) == len(s) + 2  # one block per line
    assert parse_structure(text) == s
    assert from_tinynas(to_tinynas(s)) == s
    assert dump_structure(s, "tinynas") == text
    assert parse_structure(dump_structure(s, "json")) == s


@pytest.mark.parametrize("name", FIXTURES)
def test_tinynas_export_matches_fixture_dicts(name: str) -> None:
    # stems are written without L/btn, as TinyNAS writes them
    assert to_tinynas(from_tinynas(STRUCTURES[name]["structure"])) == STRUCTURES[name]["structure"]


# -- ZenNAS import ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", FIXTURES)
def test_zennas_string_equals_fixture(name: str) -> None:
    text = STRUCTURES[name]["zen"]["zennas_string"]
    expected = from_tinynas(STRUCTURES[name]["structure"])
    assert from_zennas(text) == expected
    assert parse_structure(text) == expected


def test_zennas_raw_triples_regroup_r50() -> None:
    text = STRUCTURES["r50_like"]["zen"]["zennas_string"]
    assert "ConvKX(" in text  # the fixture does use raw triples
    s = from_zennas(text)
    assert [b.layers for b in s.blocks] == [1, 3, 4, 6, 3]
    assert [b.stride for b in s.blocks] == [2, 2, 2, 2, 2]
    assert [b.bottleneck for b in s.blocks] == [None, 64, 128, 256, 512]


def test_zennas_whitespace_and_pipe_arguments() -> None:
    text = " SuperConvK3BNRELU(3, 32, 2, 1)\n  SuperResK1K5K1(name|32,48,2,32,1) "
    s = from_zennas(text)
    assert s == Structure((Block("ConvKXBNRELU", 3, 32, 2, 3), Block("SuperResK1KXK1", 32, 48, 2, 5, 2, 32)))


def test_zennas_super_conv_sub_layers_expand() -> None:
    s = from_zennas("SuperConvK3BNRELU(3,16,2,2)")
    assert s.blocks == (Block("ConvKXBNRELU", 3, 16, 2, 3), Block("ConvKXBNRELU", 16, 16, 1, 3))


def test_zennas_lone_raw_triple_is_a_conv_block() -> None:
    s = from_zennas("ConvKX(3,16,3,2)BN(16)RELU(16)")
    assert s.blocks == (Block("ConvKXBNRELU", 3, 16, 2, 3),)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("SuperConvK3BNRELU(3,32,2)", r"expected 4 arguments, got 3"),
        ("SuperConvK3BNRELU(3,a,2,1)", r"arguments must be integers"),
        ("SuperResK1K3K1(32,48,2,32,1", r"cannot parse ZenNAS string at character 0"),
        ("SuperConvK3BNRELU(3,32,2,1)!", r"cannot parse ZenNAS string at character 27"),
        (
            "SuperConvK3BNRELU(3,32,2,1)SuperResK1DWK1(32,48,2,32,1)",
            r"ZenNAS block 'SuperResK1DWK1' is not supported",
        ),
        ("ConvKX(3,16,3,2)", r"must be followed by BN\(\.\.\)RELU\(\.\.\)"),
        ("ConvKX(3,16,3,2)BN(8)RELU(16)", r"BN/RELU channels must equal the conv's out"),
        (
            "SuperConvK3BNRELU(3,32,2,1)SuperResK1K3K1(48,64,2,16,1)",
            r"invalid structure: blocks\[1\]\.in is 48",
        ),
        ("SuperConvK4BNRELU(3,32,2,1)", r"invalid structure: blocks\[0\]\.kernel must be a positive odd"),
        ("   ", r"empty ZenNAS string"),
    ],
)
def test_zennas_rejections(text: str, pattern: str) -> None:
    with pytest.raises(FormatError, match=pattern):
        from_zennas(text)


def test_zennas_invalid_structure_keeps_field() -> None:
    with pytest.raises(FormatError) as ei:
        from_zennas("SuperConvK3BNRELU(3,32,2,1)SuperResK1K3K1(48,64,2,16,1)")
    assert ei.value.field == "blocks[1].in"


# -- auto-detection --------------------------------------------------------------------------
def test_parse_structure_detects_every_format() -> None:
    s = MAEDET_S
    assert parse_structure(s.to_json()) == s  # ours
    assert parse_structure(json.dumps(s.to_dict()["blocks"])) == s  # our block list, no envelope
    assert parse_structure(json.dumps({"structure": to_tinynas(s)})) == s  # a fixture entry
    assert parse_structure(json.dumps({"structure": s.to_dict()})) == s  # a search summary
    assert parse_structure(dumps_tinynas(s)) == s  # TinyNAS literal
    assert parse_structure(STRUCTURES["maedet_s"]["zen"]["zennas_string"]) == s  # ZenNAS
    assert parse_structure("\n\n  " + s.to_json(indent=2) + "\n") == s  # surrounding whitespace


def test_format_error_is_a_structure_error() -> None:
    assert issubclass(FormatError, StructureError)


@pytest.mark.parametrize(
    ("text", "error", "pattern", "field"),
    [
        ("", FormatError, r"empty structure text", None),
        ("[{'class': 'ConvKXBNRELU', 'in': 3,", FormatError, r"not JSON and not a Python literal", None),
        ("[]", FormatError, r"non-empty list of block dicts", None),
        (
            "{'best_structures': []}",
            FormatError,
            r"'best_structures': \[\[block, \.\.\.\]\]",
            "best_structures",
        ),
        ("{'best': 1}", FormatError, r"'best_structures'", "best_structures"),
        ("[1, 2]", FormatError, r"blocks\[0\] must be a dict, got int", "blocks[0]"),
        (
            "[{'class': 'ConvKXBNRELU', 'in': 3, 'out': 8, 's': 2, 'k': 3, 'g': 1}]",
            FormatError,
            r"blocks\[0\] has key 'g', which zennas does not read",
            "blocks[0].g",
        ),
        (
            "[{'class': 'SuperResK1DWSEK1', 'in': 3, 'out': 8, 's': 2, 'k': 3}]",
            FormatError,
            r"blocks\[0\]\.class 'SuperResK1DWSEK1' is not supported",
            "blocks[0].class",
        ),
        (
            "[{'class': None, 'in': 3, 'out': 8, 's': 2, 'k': 3}]",
            FormatError,
            r"blocks\[0\]\.class None is not supported",
            "blocks[0].class",
        ),
        (
            "[{'class': 'ConvKXBNRELU', 'in': 3, 'out': 8, 's': 2}]",
            StructureError,
            r"blocks\[0\]\.kernel must be an integer, got None",
            "blocks[0].kernel",
        ),
        (
            "[{'class': 'ConvKXBNRELU', 'in': 3, 'out': 8, 's': 2, 'k': 3, 'L': 2}]",
            StructureError,
            r"blocks\[0\]\.layers must be between 1 and 1",
            "blocks[0].layers",
        ),
        (
            '{"format": "zennas.structure", "version": 9, "blocks": []}',
            StructureError,
            r"version 9",
            "version",
        ),
    ],
)
def test_parse_structure_rejections(
    text: str, error: type[Exception], pattern: str, field: str | None
) -> None:
    with pytest.raises(error, match=pattern) as ei:
        parse_structure(text)
    assert ei.value.field == field  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "text",
    [
        "[__import__('pathlib').Path('ZENNAS_PWNED').touch()]",
        "{'best_structures': [[__import__('pathlib').Path('ZENNAS_PWNED').touch()]]}",
        "__import__('pathlib').Path('ZENNAS_PWNED').touch()",
        "[(lambda: __import__('pathlib').Path('ZENNAS_PWNED').touch())()]",
    ],
)
def test_code_is_never_executed(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FormatError):
        parse_structure(text)
    assert not (tmp_path / "ZENNAS_PWNED").exists()


def test_literal_eval_rejects_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FormatError, match="not JSON and not a Python literal"):
        parse_structure("[__import__('os').system('touch ZENNAS_PWNED')]")
    assert not (tmp_path / "ZENNAS_PWNED").exists()


# -- files -----------------------------------------------------------------------------------
def test_load_structure_each_format(tmp_path: Path) -> None:
    s = MAEDET_S
    files = {
        "s.json": dump_structure(s, "json"),
        "s.txt": dump_structure(s, "tinynas"),
        "s.zen": STRUCTURES["maedet_s"]["zen"]["zennas_string"] + "\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        assert load_structure(tmp_path / name) == s
        assert load_structure(str(tmp_path / name)) == s


def test_load_structure_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(FormatError, match=r"cannot read structure file .*nope\.json") as ei:
        load_structure(missing)
    assert ei.value.field == "structure"


@pytest.mark.parametrize(
    ("name", "error", "pattern", "field"),
    [
        ("bad_tinynas_unknown_key.txt", FormatError, r"blocks\[1\] has key 'g'", "blocks[1].g"),
        (
            "bad_tinynas_unknown_class.txt",
            FormatError,
            r"blocks\[1\]\.class 'SuperResK1DWSEK1'",
            "blocks[1].class",
        ),
        ("bad_zennas.txt", FormatError, r"cannot parse ZenNAS string", None),
        ("bad_literal_eval.txt", FormatError, r"not JSON and not a Python literal", None),
        (
            "bad_structure_chain.json",
            StructureError,
            r"blocks\[1\]\.in is 48 but the previous block's out is 32",
            "blocks[1].in",
        ),
    ],
)
def test_load_structure_bad_files(
    name: str,
    error: type[Exception],
    pattern: str,
    field: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    path = BAD / name
    with pytest.raises(error, match=pattern) as ei:
        load_structure(path)
    assert type(ei.value) is error  # the error keeps its class when the file name is prefixed
    assert str(ei.value).startswith(f"{path}: ")  # names the file
    assert ei.value.field == field  # type: ignore[attr-defined]
    assert not (tmp_path / "ZENNAS_PWNED").exists()


def test_dump_structure_unknown_format() -> None:
    with pytest.raises(FormatError, match="unknown output format 'yaml'") as ei:
        dump_structure(MAEDET_S, "yaml")
    assert ei.value.field == "format"


def test_dump_json_is_our_document() -> None:
    text = dump_structure(MAEDET_S)
    assert text.endswith("\n")
    assert json.loads(text) == MAEDET_S.to_dict()


def test_load_structure_non_utf8_file() -> None:
    with pytest.raises(FormatError, match=r"bad_not_utf8\.json"):
        load_structure(BAD / "bad_not_utf8.json")
