"""Generated MMDetection configs: they load, build, wire channels/levels from data; bad input names the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from zennas.errors import SpecError, ZenNASError
from zennas.mmdet.configs import DETECTORS, make_config, mmdet_config_dir
from zennas.space import get_space

mmengine_config = pytest.importorskip("mmengine.config")
MODELS = pytest.importorskip("mmdet.registry").MODELS

START = get_space("giraffe-s2d").start
SMALL = dict(gfpn_depth=2, gfpn_width=0.25, neck_channels=64, classes=("cat", "dog", "cow"))


@pytest.fixture(scope="module", autouse=True)
def _mmdet_modules() -> None:
    from mmdet.utils import register_all_modules

    register_all_modules()


def _load(tmp_path: Path, text: str, name: str = "config.py"):
    path = tmp_path / name
    path.write_text(text)
    return mmengine_config.Config.fromfile(str(path))


def test_base_configs_exist() -> None:
    for spec in DETECTORS.values():
        assert (mmdet_config_dir() / spec.base).is_file(), spec.base


@pytest.mark.parametrize(
    ("detector", "neck"),
    [(d, n) for d in ("gfl", "atss", "retinanet", "faster-rcnn") for n in ("gfpn", "fpn")],
)
def test_config_loads_builds_and_forwards(tmp_path: Path, detector: str, neck: str) -> None:
    text = make_config(START, detector=detector, neck=neck, data_root=str(tmp_path / "data"), **SMALL)
    cfg = _load(tmp_path, text)
    assert cfg.custom_imports.imports == ["zennas.mmdet"] and cfg.custom_imports.allow_failed_imports is False
    assert cfg.model.backbone.type == "ZenNASBackbone" and cfg.model.backbone.get("init_cfg") is None
    assert "ResNet" not in cfg.pretty_text and "torchvision://" not in cfg.pretty_text  # backbone replaced
    assert cfg.model.data_preprocessor.pad_size_divisor == (128 if neck == "gfpn" else 32)
    two_stage = detector == "faster-rcnn"
    if two_stage:
        assert cfg.model.roi_head.bbox_head.num_classes == 3
        assert list(cfg.model.backbone.out_indices) == [1, 2, 3, 4]  # C2..C5
    else:
        assert cfg.model.bbox_head.num_classes == 3
        assert list(cfg.model.backbone.out_indices) == [2, 3, 4]  # C3..C5
    assert list(cfg.train_dataloader.dataset.metainfo.classes) == ["cat", "dog", "cow"]
    assert cfg.val_evaluator.ann_file == str(tmp_path / "data") + "/annotations/instances_val2017.json"

    model = MODELS.build(cfg.model)
    model.init_weights()
    model.eval()
    with torch.no_grad():
        feats = model.neck(model.backbone(torch.randn(1, 3, 128, 128)))
    assert len(feats) == 5
    first = 4 if two_stage else 8  # P2 or P3
    for k, f in enumerate(feats):
        assert tuple(f.shape) == (1, 64, max(1, 128 // (first * 2**k)), max(1, 128 // (first * 2**k)))
    assert tuple(model.backbone.out_channels) == tuple(
        cfg.model.neck.in_channels
    )


def test_gfpn_neck_wiring_and_pretty_text(tmp_path: Path) -> None:
    cfg = _load(tmp_path, make_config(START, detector="gfl", neck="gfpn", num_classes=3, **SMALL))
    neck = cfg.model.neck
    assert neck.type == "GiraffeNeck" and neck.depth == 2 and neck.width == 0.25
    assert tuple(neck.levels) == (3, 4, 5, 6, 7) and tuple(neck.in_levels) == (3, 4, 5)
    assert list(neck.in_channels) == [64, 128, 256]
    assert list(cfg.model.bbox_head.anchor_generator.strides) == [8, 16, 32, 64, 128]
    assert cfg.model.bbox_head.in_channels == cfg.model.bbox_head.feat_channels == 64
    # The Runner logs and dumps the config through pretty_text: it must be valid Python again.
    dumped = tmp_path / "dumped.py"
    cfg.dump(str(dumped))
    again = mmengine_config.Config.fromfile(str(dumped))
    assert again.model.backbone.structure == cfg.model.backbone.structure


def test_faster_rcnn_gfpn_levels(tmp_path: Path) -> None:
    cfg = _load(tmp_path, make_config(START, detector="faster-rcnn", neck="gfpn", **SMALL))
    assert tuple(cfg.model.neck.levels) == (2, 3, 4, 5, 6) and tuple(cfg.model.neck.in_levels) == (2, 3, 4, 5)
    assert list(cfg.model.rpn_head.anchor_generator.strides) == [4, 8, 16, 32, 64]
    assert list(cfg.model.roi_head.bbox_roi_extractor.featmap_strides) == [4, 8, 16, 32]


def test_defaults_are_coco_and_epochs_scale(tmp_path: Path) -> None:
    cfg = _load(tmp_path, make_config(START, num_classes=80, max_epochs=36))
    assert cfg.model.neck.depth == 7 and cfg.model.neck.width == 0.7
    assert "metainfo" not in cfg.train_dataloader.dataset  # COCO's own classes
    assert cfg.train_dataloader.dataset.ann_file == "annotations/instances_train2017.json"
    assert cfg.train_dataloader.dataset.data_prefix.img == "train2017/"
    assert cfg.train_cfg.max_epochs == 36
    assert cfg.param_scheduler[1].milestones == [24, 33]


def test_classes_read_from_annotation_file(tmp_path: Path) -> None:
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "train.json").write_text(
        json.dumps({"images": [], "annotations": [], "categories": [{"id": 7, "name": "b"}, {"id": 3, "name": "a"}]})
    )
    text = make_config(START, data_root=tmp_path, train_ann="ann/train.json", train_img="imgs/",
                       val_ann="/abs/val.json", val_img="vimgs/", gfpn_depth=2)
    cfg = _load(tmp_path, text)
    assert list(cfg.train_dataloader.dataset.metainfo.classes) == ["b", "a"]
    assert cfg.model.bbox_head.num_classes == 2
    assert cfg.val_evaluator.ann_file == "/abs/val.json"
    assert cfg.val_dataloader.dataset.data_prefix.img == "vimgs/"
    assert cfg.test_dataloader.dataset.ann_file == "/abs/val.json"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(detector="yolo", num_classes=80), "detector"),
        (dict(neck="bifpn", num_classes=80), "neck"),
        (dict(num_classes=0, classes=None), "num_classes"),
        (dict(classes=("a", "a")), "classes"),
        (dict(num_classes=0, classes=("a",)), "num_classes"),
        (dict(num_classes=2, classes=("a",)), "num_classes"),
        (dict(num_classes=5), "classes"),  # no names, no annotation file to read them from
        (dict(num_classes=80, neck_channels=48), "neck_channels"),  # GN(32) head
        (dict(num_classes=80, gfpn_depth=0), "gfpn_depth"),
        (dict(num_classes=80, max_epochs=0), "max_epochs"),
        (dict(num_classes=80, img_scale=(0, 10)), "img_scale"),
    ],
)
def test_bad_input_names_the_field(tmp_path: Path, kwargs: dict, field: str) -> None:
    with pytest.raises(SpecError) as e:
        make_config(START, data_root=tmp_path, **kwargs)
    assert e.value.field == field


def test_structure_without_needed_strides() -> None:
    blocks = [
        {"type": "ConvKXBNRELU", "in": 3, "out": 8, "stride": 1, "kernel": 3},
        {"type": "ConvKXBNRELU", "in": 8, "out": 16, "stride": 2, "kernel": 3},
        {"type": "ConvKXBNRELU", "in": 16, "out": 32, "stride": 2, "kernel": 3},
    ]
    with pytest.raises(SpecError) as e:
        make_config(blocks, num_classes=80)
    assert e.value.field == "structure"


def test_missing_structure_file(tmp_path: Path) -> None:
    with pytest.raises(ZenNASError) as e:
        make_config(tmp_path / "missing.json", num_classes=80)
    assert e.value.field == "structure"


def test_cli_export_mmdet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zennas.cli import main

    structure = tmp_path / "s.json"
    structure.write_text(START.to_json())
    out = tmp_path / "cfg" / "gfl.py"
    with pytest.raises(SystemExit) as e:
        main(["export-mmdet", str(structure), "--detector", "atss", "--neck", "fpn", "--num-classes", "2",
              "--classes", "a,b", "--data-root", str(tmp_path), "--max-epochs", "24", "--img-scale", "640",
              "--out", str(out)])
    assert e.value.code == 0
    cfg = mmengine_config.Config.fromfile(str(out))
    assert cfg.model.bbox_head.type == "ATSSHead" and cfg.model.bbox_head.num_classes == 2
    assert cfg.train_pipeline[2].scale == (640, 640)

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["export-mmdet", str(structure), "--detector", "yolo", "--num-classes", "80"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "detector" in err[0]

    with pytest.raises(SystemExit) as e:
        main(["export-mmdet", str(tmp_path / "missing.json"), "--num-classes", "80"])
    assert e.value.code == 2
    assert "missing.json" in capsys.readouterr().err


def test_cli_export_mmdet_uses_the_structure_files_neck(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A neck co-search's structure file carries its neck: the config uses it without flags; a flag that
    contradicts it is one line, exit 2, naming the flag; the same value is fine."""
    from zennas.cli import main
    from zennas.space.structure import Neck

    structure = tmp_path / "s.json"
    structure.write_text(START.with_neck(Neck("gfpn", 3, 0.5)).to_json())
    base = ["export-mmdet", str(structure), "--num-classes", "80", "--data-root", str(tmp_path)]
    for extra in ([], ["--gfpn-depth", "3", "--gfpn-width", "0.5"]):
        out = tmp_path / "cfg.py"
        with pytest.raises(SystemExit) as e:
            main([*base, *extra, "--out", str(out)])
        assert e.value.code == 0
        cfg = mmengine_config.Config.fromfile(str(out))
        assert cfg.model.neck.type == "GiraffeNeck"
        assert (cfg.model.neck.depth, cfg.model.neck.width) == (3, 0.5)  # the file's, not the default 7, 0.7
    capsys.readouterr()
    for flag, value in (("--gfpn-depth", "7"), ("--gfpn-width", "0.7"), ("--neck", "fpn")):
        with pytest.raises(SystemExit) as e:
            main([*base, flag, value])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and flag in err[0] and "contradicts" in err[0], err
