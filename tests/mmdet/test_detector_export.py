"""Whole-detector ONNX export from a generated config: ONNX Runtime agrees with PyTorch."""

from __future__ import annotations

from pathlib import Path

import pytest

from zennas.errors import SpecError
from zennas.mmdet.configs import make_config
from zennas.space import get_space

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("mmdet")

START = get_space("giraffe-s2d").start
CLASSES = ("cat", "dog", "cow")


def _config(tmp_path: Path, detector: str, neck: str, scale: tuple[int, int] = (256, 128)) -> Path:
    text = make_config(START, detector=detector, neck=neck, gfpn_depth=2, gfpn_width=0.5, neck_channels=64,
                       classes=CLASSES, data_root=str(tmp_path / "data"), img_scale=scale)
    path = tmp_path / f"{detector}_{neck}.py"
    path.write_text(text)
    return path


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("detector", "neck", "groups"), [("gfl", "gfpn", 2), ("retinanet", "fpn", 2), ("atss", "gfpn", 3)])
def test_export_parity(tmp_path: Path, detector: str, neck: str, groups: int) -> None:
    from zennas.mmdet.detector_export import check_parity, export_detector_onnx

    cfg = _config(tmp_path, detector, neck)
    r, raw, _ = export_detector_onnx(cfg, tmp_path / "det.onnx")
    assert r.input_shape == (1, 3, 128, 256)  # the config's scale (W 256, H 128), padded to 128 / 32
    assert len(r.output_names) == groups * 5
    assert r.output_names[0] == "cls_score_p3" and r.output_names[5] == "bbox_pred_p3"
    assert r.output_shapes[0][-2:] == (16, 32) and r.output_shapes[4][-2:] == (1, 2)  # P3 .. P7
    model = onnx.load(str(r.path))
    assert [o.name for o in model.graph.output] == list(r.output_names)
    rep = check_parity(r.path, raw, height=128, width=256, repeats=2)
    assert rep.ok, rep
    assert rep.relative <= 1e-4 and rep.torch_ms > 0 and rep.onnx_ms > 0


@pytest.mark.timeout(180)
def test_cli_export_onnx_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zennas.cli import main

    cfg = _config(tmp_path, "gfl", "gfpn")
    out = tmp_path / "gfl.onnx"
    with pytest.raises(SystemExit) as ei:
        main(["export-onnx", str(cfg), "--out", str(out), "--check"])
    text = capsys.readouterr().out
    assert ei.value.code in (0, None), text
    assert out.is_file() and "input image (1, 3, 128, 256)" in text
    assert "parity:" in text and ": ok" in text and "pytorch" in text and "onnxruntime" in text


def test_refuses_two_stage_and_bad_sizes(tmp_path: Path) -> None:
    from zennas.mmdet.detector_export import export_detector_onnx

    with pytest.raises(SpecError, match="two-stage") as ei:
        export_detector_onnx(_config(tmp_path, "faster-rcnn", "fpn"), tmp_path / "x.onnx")
    assert ei.value.field == "config"
    with pytest.raises(SpecError) as ei:
        export_detector_onnx(_config(tmp_path, "gfl", "gfpn"), tmp_path / "x.onnx", height=100, width=128)
    assert ei.value.field == "height"
    with pytest.raises(SpecError) as ei:
        export_detector_onnx(tmp_path / "missing.py", tmp_path / "x.onnx")
    assert ei.value.field == "config"
