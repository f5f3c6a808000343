"""Analytic detector costs without a model: the GiraffeDet-D7 cross-check, scaling, caching, settings
and the ``zennas costs`` command. (Each term against built mmdet models: tests/mmdet/test_detector_cost.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zennas.cli import _register_optional_commands, app
from zennas.cost import costs
from zennas.detector import DetectorSettings, detector_costs, neck_head_cost
from zennas.detector.cost import backbone_conv_macs, dense_head_cost, gfpn_cost, level_channels
from zennas.errors import SpecError
from zennas.space import Block, Structure, load_structure

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MAEDET_S = load_structure(EXAMPLES / "maedet_s.txt")

# GiraffeDet-D7 as published (damo-cv/GiraffeDet: configs/giraffeDet/giraffe_d7_scratch_6x.py and
# mmdet/models/backbones/space2depth_chain.py): two 3x3/2 convs 3->32->64, then five space-to-depth
# x2 + 1x1 conv blocks to 128, 256, 512, 1024, 2048 channels, all five maps (P3-P7) into the GFPN
# (depth 7, width 0.7: 179-channel nodes, 256-channel outputs), a GFLv2 head with 2 stacked convs.
GIRAFFE_D7_BACKBONE = Structure((
    Block("ConvKXBNRELU", 3, 32, 2, 3),
    Block("ConvKXBNRELU", 32, 64, 2, 3),
    Block("S2D", 64, 128, 2, 1, 1),
    Block("S2D", 128, 256, 2, 1, 1),
    Block("S2D", 256, 512, 2, 1, 1),
    Block("S2D", 512, 1024, 2, 1, 1),
    Block("S2D", 1024, 2048, 2, 1, 1),
))
PAPER_D7_GFLOPS = 190.77  # GiraffeDet paper (arXiv 2202.04256), Table of GiraffeDet-D7, at 1280x768, MACs


def _d7_macs(fusion_outputs: bool) -> float:
    h, w, lv = 768, 1280, (3, 4, 5, 6, 7)
    neck = gfpn_cost((128, 256, 512, 1024, 2048), depth=7, width=0.7, out_channels=256, levels=lv, in_levels=lv,
                     height=h, width_px=w, fusion_outputs=fusion_outputs)
    head = dense_head_cost("gfl", channels=256, num_classes=80, levels=lv, height=h, width_px=w, stacked_convs=2)
    # GFLv2's distribution-guided quality predictor: per location 1x1 convs 4 * (topk 4 + mean) = 20 -> 64 -> 1
    dgqp = sum(h * w / 4**lvl for lvl in lv) * (20 * 64 + 64)
    return backbone_conv_macs(GIRAFFE_D7_BACKBONE, h, w) + neck.conv_macs + head.conv_macs + dgqp


def test_giraffedet_d7_against_the_paper() -> None:
    published = _d7_macs(fusion_outputs=True) / 1e9  # output nodes as GiraffeDet's code builds them
    assert published == pytest.approx(PAPER_D7_GFLOPS, rel=0.03)
    assert abs(published / PAPER_D7_GFLOPS - 1) < 0.002  # measured: 190.60 G, -0.09 %
    ours = _d7_macs(fusion_outputs=False) / 1e9  # zennas's GiraffeNeck: output node = 1x1 conv + norm
    # the difference is exactly the reference's output-node SiLU-free part: 3x3 256->256 on every P3-P7 pixel
    pixels = sum(768 * 1280 / 4**lvl for lvl in (3, 4, 5, 6, 7))
    assert (published - ours) * 1e9 == pytest.approx(256 * 256 * 9 * pixels, rel=1e-12)


@pytest.mark.parametrize("detector", ["gfl", "atss", "retinanet", "faster-rcnn"])
@pytest.mark.parametrize("neck", ["gfpn", "fpn"])
def test_terms_sum_and_scale_with_area(detector: str, neck: str) -> None:
    s = DetectorSettings(detector=detector, neck=neck, gfpn_depth=3, num_classes=20)
    a = detector_costs(MAEDET_S, s, 384, 640, rois=1)
    b = detector_costs(MAEDET_S, s, 768, 1280, rois=1)
    assert a.total == a.backbone + a.neck + a.head
    for name in ("backbone", "neck"):
        ta, tb = getattr(a, name), getattr(b, name)
        assert tb.flops == pytest.approx(4 * ta.flops, rel=1e-12)
        assert tb.conv_macs == pytest.approx(4 * ta.conv_macs, rel=1e-12)
        assert tb.params == ta.params
    if detector != "faster-rcnn":  # the per-RoI head does not scale with the image
        assert b.head.flops == pytest.approx(4 * a.head.flops, rel=1e-12)
    assert b.total.params == a.total.params
    assert a.backbone.flops == costs(MAEDET_S, 384, 640).flops  # the backbone term is zennas.cost's
    assert 0 < a.backbone.conv_macs < a.backbone.flops
    assert a.neck.conv_macs < a.neck.flops and a.head.conv_macs < a.head.flops


def test_neck_and_head_depend_only_on_level_channels() -> None:
    s = DetectorSettings(detector="gfl", neck="gfpn", gfpn_depth=2)
    ch = level_channels(MAEDET_S, s.in_levels)
    assert len(ch) == 3 and ch[-1] == MAEDET_S.blocks[-1].out_channels
    neck_head_cost.cache_clear()
    a = detector_costs(MAEDET_S, s, 480, 480)
    blocks = list(MAEDET_S.blocks)
    blocks[1] = blocks[1]._replace(kernel=7 if blocks[1].kernel != 7 else 5)  # same maps, another backbone
    b = detector_costs(Structure(tuple(blocks)), s, 480, 480)
    assert b.backbone != a.backbone and (b.neck, b.head) == (a.neck, a.head)
    assert neck_head_cost.cache_info().hits >= 1  # the second one came from the cache
    blocks[-1] = blocks[-1]._replace(out_channels=blocks[-1].out_channels * 2)  # a wider C5: a dearer neck
    c = detector_costs(Structure(tuple(blocks)), s, 480, 480)
    assert c.neck.flops > a.neck.flops and c.head == a.head


def test_more_classes_cost_more_head_only() -> None:
    a = detector_costs(MAEDET_S, DetectorSettings(num_classes=1), 512, 512)
    b = detector_costs(MAEDET_S, DetectorSettings(num_classes=81), 512, 512)
    assert a.neck == b.neck and a.backbone == b.backbone
    # gfl_cls is a 3x3 conv 256 -> num_classes with bias on every P3-P7 pixel
    pixels = sum(512 * 512 / 4**lvl for lvl in (3, 4, 5, 6, 7))
    assert b.head.conv_macs - a.head.conv_macs == pytest.approx(80 * 256 * 9 * pixels, rel=1e-12)
    assert b.head.params - a.head.params == 80 * (256 * 9 + 1)


def test_structure_without_the_needed_strides() -> None:
    flat = Structure((Block("ConvKXBNRELU", 3, 16, 2, 3), Block("SuperResK1KXK1", 16, 32, 2, 3, 1, 8)))
    with pytest.raises(SpecError, match="stride") as ei:
        detector_costs(flat, DetectorSettings(), 256, 256)
    assert ei.value.field == "structure"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"detector": "yolo"}, "detector"),
        ({"neck": "bifpn"}, "neck"),
        ({"gfpn_depth": 0}, "gfpn_depth"),
        ({"gfpn_width": 0.001}, "gfpn_width"),
        ({"neck_channels": 48}, "neck_channels"),  # GFL's GroupNorm(32)
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_settings_name_the_bad_field(kwargs: dict, field: str) -> None:
    with pytest.raises(SpecError) as ei:
        DetectorSettings(**kwargs)
    assert ei.value.field == field


def test_settings_from_a_spec_mapping() -> None:
    s = DetectorSettings.from_dict({"type": "atss", "neck": "gfpn", "depth": 3, "width": 1, "num_classes": 5})
    assert s == DetectorSettings(detector="atss", gfpn_depth=3, gfpn_width=1.0, num_classes=5)
    with pytest.raises(SpecError) as ei:
        DetectorSettings.from_dict({"type": "gfl", "levels": 4})
    assert ei.value.field == "detector.levels"
    with pytest.raises(SpecError) as ei:
        DetectorSettings.from_dict({"depth": -1})
    assert ei.value.field == "detector.depth"  # named as the caller spelled it


# -- the command ---------------------------------------------------------------------------------
runner = CliRunner()


def _invoke(args: list[str]):  # type: ignore[no-untyped-def]
    _register_optional_commands()
    return runner.invoke(app, args)


def test_cli_costs_json() -> None:
    args = ["costs", str(EXAMPLES / "maedet_s.txt"), "--detector", "gfl", "--neck", "gfpn", "--gfpn-depth", "7",
            "--gfpn-width", "0.7", "--num-classes", "80", "--height", "768", "--width", "1280", "--json"]
    r = _invoke(args)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    c = detector_costs(MAEDET_S, DetectorSettings(), 768, 1280)
    for name in ("backbone", "neck", "head", "total"):
        assert set(out[name]) == {"flops", "params", "conv_macs"}
        assert out[name] == getattr(c, name).to_dict()
    assert (out["height"], out["width"]) == (768, 1280)
    assert "MACs" in out["flops_unit"]
    text = _invoke(args[:-1])
    assert text.exit_code == 0 and "total" in text.output and "GFLOPs" in text.output


def test_cli_costs_defaults_are_export_mmdets() -> None:
    import typer.main

    _register_optional_commands()
    cmd = typer.main.get_command(app)
    params = {name: {p.name: p for p in cmd.commands[name].params} for name in ("costs", "export-mmdet")}  # type: ignore[attr-defined]
    shared = ("detector", "neck", "gfpn_depth", "gfpn_width", "neck_channels", "num_classes")
    for name in shared:
        a, b = params["costs"][name], params["export-mmdet"][name]
        assert a.default == b.default and a.opts == b.opts, name


@pytest.mark.parametrize(
    ("extra", "field_word"),
    [(["--detector", "yolo"], "detector"), (["--gfpn-depth", "0"], "gfpn-depth"), (["--height", "0"], "height")],
)
def test_cli_costs_bad_input_exit_2(extra: list[str], field_word: str) -> None:
    from zennas.cli import main

    with pytest.raises(SystemExit) as ei:
        main(["costs", str(EXAMPLES / "maedet_s.txt"), *extra])
    assert ei.value.code == 2
