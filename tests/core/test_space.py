"""Search spaces as YAML data: the shipped spaces load; bad documents name the file, the key and the value."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from zennas.errors import SpaceError
from zennas.space import (
    Budgets,
    MutationRules,
    SearchSpace,
    check_structure_in_space,
    from_tinynas,
    get_space,
    load_space_file,
    space_from_dict,
    space_names,
)
from zennas.space.kinds import BLOCK_KINDS

DATA = Path(__file__).parent.parent / "data"
BAD = DATA / "bad"
STRUCTURES = json.loads((DATA / "structures.json").read_text())["structures"]
SEARCH = json.loads((DATA / "search.json").read_text())
SHIPPED = Path(__file__).parent.parent.parent / "search_spaces"


def test_space_names() -> None:
    assert space_names() == ["detection-dw", "detection-k1kxk1", "giraffe-s2d", "giraffe-s2d-gfpn"]


@pytest.mark.parametrize("name", space_names())
def test_shipped_spaces_load(name: str) -> None:
    sp = get_space(name)
    assert isinstance(sp, SearchSpace)
    assert sp.name == name
    assert get_space(name) is sp  # cached
    assert len(sp.stage_weights) == sp.stages == 5
    check_structure_in_space(sp, sp.start)
    assert sp.start.blocks[0].type in sp.block_types.first
    assert all(b.type in sp.block_types.rest for b in sp.start.blocks[1:])
    assert all(t in BLOCK_KINDS for t in sp.block_types.first + sp.block_types.rest)
    assert sp.budgets.height == sp.budgets.width == 480
    # the file in the source tree is the one installed
    assert load_space_file(SHIPPED / f"{name}.yaml") == sp


@pytest.mark.parametrize("name", space_names())
def test_space_to_dict_round_trip(name: str) -> None:
    sp = get_space(name)
    d = sp.to_dict()
    json.dumps(d)  # plain data
    assert space_from_dict(d) == sp
    assert space_from_dict(yaml.safe_load(yaml.safe_dump(d))) == sp


def test_k1kxk1_space_is_the_mae_det_setting() -> None:
    sp = get_space("detection-k1kxk1")
    assert sp.start == from_tinynas(SEARCH["start_structure"])
    assert sp.budgets.flops == SEARCH["budgets"]["flops_at_480"]
    assert sp.budgets.layers == SEARCH["budgets"]["layers"]
    assert list(sp.stage_weights) == SEARCH["score"]["stage_weights"]
    m, ref = sp.mutation, SEARCH["mutation"]
    assert m.rounds == ref["rounds_per_candidate"]
    assert list(m.channel_multipliers) == ref["channel_multipliers"]
    assert list(m.kernels) == ref["kernels"]
    assert list(m.layer_deltas) == ref["layer_deltas"]
    assert m.max_channels == ref["max_channels"]
    assert list(m.stem_fields) == ref["stem_fields"]
    assert m.pick == "any"  # the reference's quirk is not the default


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_published_structures_belong_to_k1kxk1(name: str) -> None:
    # MAE-DET-S breaks the mutation rules (btn < out/10, out > 4*in) but is a valid structure of the space
    check_structure_in_space(get_space("detection-k1kxk1"), from_tinynas(STRUCTURES[name]["structure"]))


def test_check_structure_in_space_rejections() -> None:
    s = from_tinynas(STRUCTURES["maedet_s"]["structure"])
    with pytest.raises(SpaceError, match=r"blocks\[1\]\.type 'SuperResK1KXK1' is not allowed there") as ei:
        check_structure_in_space(get_space("detection-dw"), s, "candidate")
    assert ei.value.field == "candidate.blocks[1].type"
    four_stages = s.replace_block(4, stride=1)
    with pytest.raises(SpaceError, match="has 4 stages but space 'detection-k1kxk1' needs 5") as ei:
        check_structure_in_space(get_space("detection-k1kxk1"), four_stages)
    assert ei.value.field == "structure.blocks"


def test_get_space_unknown() -> None:
    with pytest.raises(
        SpaceError, match=r"unknown space 'nope' \(shipped: detection-dw, detection-k1kxk1"
    ) as ei:
        get_space("nope")
    assert ei.value.field == "space"


def test_variants_with_dataclasses_replace() -> None:
    sp = get_space("detection-k1kxk1")
    ref = dataclasses.replace(sp, mutation=dataclasses.replace(sp.mutation, pick="reference"))
    assert ref.mutation.pick == "reference" and sp.mutation.pick == "any"
    with pytest.raises(dataclasses.FrozenInstanceError):
        sp.mutation.pick = "reference"  # type: ignore[misc]


# -- bad documents ---------------------------------------------------------------------------
def _k1kxk1_raw() -> dict[str, Any]:
    return yaml.safe_load((SHIPPED / "detection-k1kxk1.yaml").read_text())


def _write(tmp_path: Path, raw: Any, name: str = "space.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    return p


def _set(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    *parents, last = path.split(".")
    node = raw
    for k in parents:
        node = node[k]
    node[last] = value
    return raw


BAD_VALUES = [
    # (dotted key, value, field, what the message must contain besides the file name)
    ("colour", "red", "colour", ["unknown key 'colour'", "'red'"]),
    ("mutation.rouns", 3, "mutation.rouns", ["unknown key 'mutation.rouns'", "3"]),
    ("budgets.flop", 1.0e9, "budgets.flop", ["unknown key 'budgets.flop'", "1000000000.0"]),
    ("mutation.pick", "sometimes", "mutation.pick", ["mutation.pick = 'sometimes'", "'any' or 'reference'"]),
    ("mutation.rounds", 0, "mutation.rounds", ["mutation.rounds = 0", "must be >= 1"]),
    ("mutation.kernels", [3, 4], "mutation.kernels", ["mutation.kernels = [3, 4]", "positive odd"]),
    (
        "mutation.channel_multipliers",
        [1.5, 0],
        "mutation.channel_multipliers",
        ["mutation.channel_multipliers = [1.5, 0.0]", "> 0"],
    ),
    (
        "mutation.layer_deltas",
        [-1, 0, 1],
        "mutation.layer_deltas",
        ["mutation.layer_deltas = [-1, 0, 1]", "0"],
    ),
    (
        "mutation.block_fields",
        ["out", "stride"],
        "mutation.block_fields",
        ["mutation.block_fields = 'stride'", "not a mutable field"],
    ),
    ("mutation.stem_fields", ["layers"], "mutation.stem_fields", ["mutation.stem_fields = 'layers'"]),
    ("mutation.channel_round", 0, "mutation.channel_round", ["mutation.channel_round = 0", ">= 1"]),
    ("mutation.max_channels", -8, "mutation.max_channels", ["mutation.max_channels = -8"]),
    ("mutation.kernels", [], "mutation.kernels", ["mutation.kernels must not be empty"]),
    ("budgets.flops", -1.0, "budgets.flops", ["budgets.flops = -1.0", "must be positive"]),
    ("budgets.layers", 0, "budgets.layers", ["budgets.layers = 0", "must be positive"]),
    (
        "block_types.rest",
        ["SuperResK1K9K1"],
        "block_types.rest",
        ["block_types.rest = 'SuperResK1K9K1'", "unknown block type"],
    ),
    (
        "stage_weights",
        [0, 1, 6],
        "stage_weights",
        ["stage_weights = [0.0, 1.0, 6.0]", "one weight per stage (5)"],
    ),
    # wrong types
    ("budgets.layers", "ninety-one", "budgets.layers", ["budgets.layers must be an integer", "'ninety-one'"]),
    ("budgets.layers", True, "budgets.layers", ["budgets.layers must be an integer", "True"]),
    ("budgets.height", 480.5, "budgets.height", ["budgets.height must be an integer", "480.5"]),
    ("budgets.flops", "lots", "budgets.flops", ["budgets.flops must be a number", "'lots'"]),
    ("budgets.flops", float("inf"), "budgets.flops", ["budgets.flops must be a number", "inf"]),
    (
        "mutation.out_max_next",
        "yes",
        "mutation.out_max_next",
        ["mutation.out_max_next must be true or false", "'yes'"],
    ),
    ("mutation.pick", 1, "mutation.pick", ["mutation.pick must be a string", "1"]),
    ("mutation.kernels", 3, "mutation.kernels", ["mutation.kernels must be a list", "3"]),
    ("mutation.kernels", [3, "5"], "mutation.kernels[1]", ["mutation.kernels[1] must be an integer", "'5'"]),
    ("mutation", [1, 2], "mutation", ["mutation must be a mapping", "[1, 2]"]),
    ("name", 7, "name", ["name must be a string", "7"]),
    ("start", "r50", "start", ["start must be a list of blocks", "'r50'"]),
]


@pytest.mark.parametrize(
    ("key", "value", "field", "needles"), BAD_VALUES, ids=[f"{r[0]}={r[1]!r}" for r in BAD_VALUES]
)
def test_bad_yaml_names_file_key_value(
    tmp_path: Path, key: str, value: Any, field: str, needles: list[str]
) -> None:
    path = _write(tmp_path, _set(_k1kxk1_raw(), key, value), "my-space.yaml")
    with pytest.raises(SpaceError) as ei:
        load_space_file(path)
    msg = str(ei.value)
    assert msg.startswith(f"{path}: ")  # the file
    for needle in needles:  # the key and the value
        assert needle in msg, msg
    assert ei.value.field == field


def test_yaml_float_without_exponent_sign() -> None:
    # PyYAML reads 1.88e10 as a string; the loader still takes it as a number
    raw = yaml.safe_load("flops: 1.88e10\nlayers: 91\n")
    assert isinstance(raw["flops"], str)
    raw_space = _set(_k1kxk1_raw(), "budgets", raw)
    assert space_from_dict(raw_space).budgets == Budgets(flops=1.88e10, layers=91)


def test_nullable_rules() -> None:
    raw = _set(_k1kxk1_raw(), "mutation.out_max_in_ratio", None)
    assert space_from_dict(raw).mutation.out_max_in_ratio is None
    raw = _set(_k1kxk1_raw(), "budgets.height", 480.0)  # an integral float is an int
    assert space_from_dict(raw).budgets.height == 480


def test_defaults_fill_missing_keys() -> None:
    raw = {"name": "mini", "start": _k1kxk1_raw()["start"]}
    sp = space_from_dict(raw)
    assert sp.mutation == MutationRules() and sp.budgets == Budgets()
    assert sp.stages == 5


@pytest.mark.parametrize("missing", ["name", "start"])
def test_required_keys(missing: str) -> None:
    raw = _k1kxk1_raw()
    del raw[missing]
    with pytest.raises(SpaceError, match=f"required key '{missing}' is missing") as ei:
        space_from_dict(raw, source="inline.yaml")
    assert str(ei.value).startswith("inline.yaml: ")
    assert ei.value.field == missing


def test_start_structure_error_is_located(tmp_path: Path) -> None:
    raw = _k1kxk1_raw()
    raw["start"][2]["in"] = 300
    path = _write(tmp_path, raw)
    with pytest.raises(SpaceError, match=re.escape(f"{path}: start: blocks[2].in is 300")) as ei:
        load_space_file(path)
    assert ei.value.field == "start.blocks[2].in"


def test_start_outside_the_space(tmp_path: Path) -> None:
    raw = _set(_k1kxk1_raw(), "block_types.rest", ["SuperResK1DWK1"])
    path = _write(tmp_path, raw)
    with pytest.raises(
        SpaceError, match=re.escape(f"{path}: start.blocks[1].type 'SuperResK1KXK1' is not allowed")
    ):
        load_space_file(path)
    raw = _set(_k1kxk1_raw(), "stages", 4)
    raw["stage_weights"] = [0, 1, 1, 6]
    with pytest.raises(SpaceError, match="start has 5 stages but space 'detection-k1kxk1' needs 4"):
        space_from_dict(raw)


@pytest.mark.parametrize(
    ("name", "field", "needles"),
    [
        ("bad_space_unknown_key.yaml", "mutation.rouns", ["unknown key 'mutation.rouns'", "(value 3)"]),
        ("bad_space_bad_value.yaml", "mutation.pick", ["mutation.pick = 'sometimes'"]),
        ("bad_space_wrong_type.yaml", "budgets.layers", ["budgets.layers", "'ninety-one'"]),
        (
            "bad_space_start_chain.yaml",
            "start.blocks[2].in",
            ["blocks[2].in is 96", "previous block's out is 64"],
        ),
    ],
)
def test_bad_space_fixture_files(name: str, field: str, needles: list[str]) -> None:
    path = BAD / name
    with pytest.raises(SpaceError) as ei:
        load_space_file(path)
    msg = str(ei.value)
    assert msg.startswith(f"{path}: ") and name in msg
    for needle in needles:
        assert needle in msg, msg
    assert ei.value.field == field


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match=r"cannot read space file .*missing\.yaml"):
        load_space_file(tmp_path / "missing.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpaceError, match=r"broken\.yaml: not valid YAML"):
        load_space_file(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(SpaceError, match=r"empty\.yaml: the document must be a mapping, got None"):
        load_space_file(empty)


@pytest.mark.parametrize(
    "key", ["first_block_max_layers", "stem_max_out", "btn_min_divisor", "next_out_divisor"]
)
def test_mutation_rules_reject_values_that_break_mutation(key: str) -> None:
    raw = _set(_k1kxk1_raw(), f"mutation.{key}", 0)
    with pytest.raises(SpaceError) as ei:
        space_from_dict(raw, source="inline.yaml")
    assert ei.value.field == f"mutation.{key}"


def test_non_utf8_space_file() -> None:
    with pytest.raises(SpaceError, match=r"bad_space_not_utf8\.yaml"):
        load_space_file(BAD / "bad_space_not_utf8.yaml")
