"""A structure file may carry the detector neck chosen for its backbone: round trip, validation naming
``neck.<key>``, the one rule that reconciles it with explicit flags, and ``zennas costs`` reading it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from zennas.cli import _register_optional_commands, app
from zennas.detector import DetectorSettings, detector_costs
from zennas.detector.settings import resolve_neck
from zennas.errors import SpecError, StructureError
from zennas.search import SearchSpec
from zennas.space import Structure, dump_structure, get_space, load_structure, parse_structure
from zennas.space.structure import Neck

EXAMPLES = Path(__file__).parents[2] / "examples"
START = get_space("giraffe-s2d-gfpn").start  # a shipped start structure (any backbone with C3..C5 does)


def _doc(neck: Any) -> dict[str, Any]:
    return {**START.to_dict(), "neck": neck}


# -- the document -------------------------------------------------------------------------------
@pytest.mark.parametrize("neck", [{"type": "gfpn", "depth": 7, "width": 0.7}, {"type": "gfpn", "depth": 2, "width": 1.0},
                                  {"type": "fpn"}])
def test_round_trip_is_exact(neck: dict[str, Any]) -> None:
    s = Structure.from_dict(_doc(neck))
    assert s.neck == Neck(**neck)
    assert s.to_dict() == _doc(neck)  # the document, key for key
    text = dump_structure(s)
    assert parse_structure(text) == s and json.loads(text) == _doc(neck)
    assert s.with_neck(None) == START and s != START and hash(s) != hash(START)  # a different document


def test_a_structure_without_a_neck_is_the_document_it_always_was() -> None:
    d = START.to_dict()
    assert "neck" not in d and set(d) == {"format", "version", "blocks"}
    assert START.neck is None and Structure.trusted(START.blocks).neck is None  # the search's candidates
    assert Structure.from_dict({**d, "neck": None}) == START
    assert hash(START) == hash(START.blocks)  # the caches' key is unchanged


def test_an_integer_width_is_the_same_width() -> None:
    a = Structure.from_dict(_doc({"type": "gfpn", "depth": 3, "width": 1}))
    assert a == Structure.from_dict(_doc({"type": "gfpn", "depth": 3, "width": 1.0}))
    assert a.to_dict()["neck"] == {"type": "gfpn", "depth": 3, "width": 1.0}


@pytest.mark.parametrize(
    ("neck", "field"),
    [
        ({"type": "gfpn", "depth": 7, "width": 0.7, "levels": 5}, "neck.levels"),  # unknown key
        ({"depth": 7, "width": 0.7}, "neck.type"),
        ({"type": "bifpn"}, "neck.type"),
        ({"type": "gfpn", "width": 0.7}, "neck.depth"),
        ({"type": "gfpn", "depth": 7}, "neck.width"),
        ({"type": "gfpn", "depth": 0, "width": 0.7}, "neck.depth"),
        ({"type": "gfpn", "depth": True, "width": 0.7}, "neck.depth"),
        ({"type": "gfpn", "depth": 7, "width": 0.001}, "neck.width"),  # int(256 * width) = 0 channels
        ({"type": "gfpn", "depth": 7, "width": "0.7"}, "neck.width"),
        ({"type": "fpn", "depth": 3}, "neck.depth"),  # an FPN has no depth
        ([7, 0.7], "neck"),
    ],
)
def test_a_bad_neck_names_its_field(neck: Any, field: str) -> None:
    with pytest.raises(StructureError) as ei:
        Structure.from_dict(_doc(neck))
    assert ei.value.field == field
    assert field.split(".")[-1] in str(ei.value)  # the message names the key


def test_a_warm_start_drops_the_files_neck() -> None:
    s = START.with_neck(Neck("gfpn", 3, 0.5))
    assert SearchSpec(space="giraffe-s2d-gfpn", start=s).start == START
    assert SearchSpec.from_dict({"space": "giraffe-s2d-gfpn", "start": s.to_dict()}).start == START


# -- the rule: explicit flags vs the file's neck -----------------------------------------------------
def test_resolve_neck() -> None:
    d = DetectorSettings()
    assert resolve_neck(None) == (d.neck, d.gfpn_depth, d.gfpn_width)
    assert resolve_neck(None, neck="fpn", gfpn_depth=3) == ("fpn", 3, d.gfpn_width)
    n = Neck("gfpn", 3, 0.5)
    assert resolve_neck(n) == ("gfpn", 3, 0.5)
    assert resolve_neck(n, neck="gfpn", gfpn_depth=3, gfpn_width=0.5) == ("gfpn", 3, 0.5)  # the same: fine
    for kw, field in (({"gfpn_depth": 5}, "gfpn_depth"), ({"gfpn_width": 0.7}, "gfpn_width"), ({"neck": "fpn"}, "neck")):
        with pytest.raises(SpecError) as ei:
            resolve_neck(n, **kw)  # type: ignore[arg-type]
        assert ei.value.field == field and "--" + field.replace("_", "-") in ei.value.message
    assert resolve_neck(Neck("fpn"))[0] == "fpn"
    with pytest.raises(SpecError) as ei:
        resolve_neck(Neck("fpn"), gfpn_depth=3)
    assert ei.value.field == "gfpn_depth"


# -- zennas costs ------------------------------------------------------------------------------------
runner = CliRunner()


def _costs(args: list[str]):  # type: ignore[no-untyped-def]
    _register_optional_commands()
    return runner.invoke(app, ["costs", *args])


def test_costs_reads_the_files_neck(tmp_path: Path) -> None:
    backbone = load_structure(EXAMPLES / "maedet_s.txt")
    f = tmp_path / "structure.json"
    f.write_text(dump_structure(backbone.with_neck(Neck("gfpn", 3, 0.5))))
    want = detector_costs(backbone, DetectorSettings(gfpn_depth=3, gfpn_width=0.5), 480, 640).to_dict()
    for extra in ([], ["--gfpn-depth", "3", "--gfpn-width", "0.5", "--neck", "gfpn"]):  # no flags, or the same values
        r = _costs([str(f), "--height", "480", "--width", "640", "--json", *extra])
        assert r.exit_code == 0, r.output
        assert json.loads(r.output) == want
    default = detector_costs(backbone, DetectorSettings(), 480, 640).to_dict()
    assert want["neck"] != default["neck"]  # so the test tells the file's neck from the default


@pytest.mark.parametrize(("flag", "value"), [("--gfpn-depth", "5"), ("--gfpn-width", "0.7"), ("--neck", "fpn")])
def test_costs_refuses_a_flag_that_contradicts_the_file(tmp_path: Path, flag: str, value: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from zennas.cli import main

    f = tmp_path / "structure.json"
    f.write_text(dump_structure(load_structure(EXAMPLES / "maedet_s.txt").with_neck(Neck("gfpn", 3, 0.5))))
    with pytest.raises(SystemExit) as ei:
        main(["costs", str(f), flag, value])
    assert ei.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0] and "contradicts" in err[0]
