"""ONNX and TorchScript export of a backbone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from zennas.errors import SpecError
from zennas.mmdet.export import build_export_module, export_onnx, export_torchscript

onnx = pytest.importorskip("onnx")

TINY = [
    {"type": "ConvKXBNRELU", "in": 3, "out": 8, "stride": 2, "kernel": 3, "layers": 1},
    {"type": "SuperResK1KXK1", "in": 8, "out": 16, "stride": 2, "kernel": 3, "layers": 1, "bottleneck": 8},
    {"type": "SuperResK1DWK1", "in": 16, "out": 24, "stride": 2, "kernel": 5, "layers": 1, "bottleneck": 32},
    {"type": "S2D", "in": 24, "out": 32, "stride": 2, "kernel": 3, "layers": 2},
    {"type": "SuperResK1KXK1", "in": 32, "out": 48, "stride": 2, "kernel": 3, "layers": 1, "bottleneck": 16},
]


@pytest.fixture()
def weights(tmp_path: Path) -> Path:
    """A backbone state dict with non-trivial BN statistics."""
    torch.manual_seed(0)
    m = build_export_module(TINY)
    with torch.no_grad():
        for b in m.buffers():
            if b.is_floating_point():
                b.uniform_(0.5, 1.5)
    path = tmp_path / "backbone.pth"
    torch.save(m.state_dict(), path)
    return path


def test_onnx_export_checks_and_outputs(tmp_path: Path, weights: Path) -> None:
    out = tmp_path / "backbone.onnx"
    r = export_onnx(TINY, out, height=64, width=96, checkpoint=weights)
    assert r.path == out and out.is_file()
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert [o.name for o in model.graph.output] == ["c3", "c4", "c5"]
    assert [i.name for i in model.graph.input] == ["image"]
    assert r.output_shapes == ((1, 24, 8, 12), (1, 32, 4, 6), (1, 48, 2, 3))

    try:
        from onnx.reference import ReferenceEvaluator
    except ImportError:  # pragma: no cover - older onnx
        return
    x = torch.randn(2, 3, 64, 96)  # dynamic batch
    got = ReferenceEvaluator(model).run(None, {"image": x.numpy()})
    eager = build_export_module(TINY, checkpoint=weights)
    with torch.no_grad():
        want = eager(x)
    assert len(got) == 3
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-3, atol=1e-4)


def test_onnx_export_out_indices(tmp_path: Path) -> None:
    r = export_onnx(TINY, tmp_path / "b.onnx", height=64, width=64, out_indices=[1, 2, 3, 4])
    assert r.output_names == ("c2", "c3", "c4", "c5")
    assert len(onnx.load(str(tmp_path / "b.onnx")).graph.output) == 4


def test_torchscript_matches_eager(tmp_path: Path, weights: Path) -> None:
    out = tmp_path / "backbone.pt"
    export_torchscript(TINY, out, height=64, width=64, checkpoint=weights)
    loaded = torch.jit.load(str(out))
    eager = build_export_module(TINY, checkpoint=weights)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got, want = loaded(x), eager(x)
    assert len(got) == len(want) == 3
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


def test_detector_checkpoint_backbone_prefix(tmp_path: Path, weights: Path) -> None:
    state = torch.load(weights)
    ckpt = tmp_path / "detector.pth"
    torch.save({"meta": {"epoch": 1}, "state_dict": {**{f"backbone.{k}": v for k, v in state.items()},
                                                       "neck.w": torch.zeros(1)}}, ckpt)
    a = build_export_module(TINY, checkpoint=ckpt)
    b = build_export_module(TINY, checkpoint=weights)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_bad_size_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as e:
        export_onnx(TINY, tmp_path / "x.onnx", height=100, width=64)
    assert e.value.field == "height"


def test_cli_export_onnx_and_torchscript(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zennas.cli import main

    structure = tmp_path / "s.json"
    structure.write_text(json.dumps(TINY))
    with pytest.raises(SystemExit) as e:
        main(["export-onnx", str(structure), "--out", str(tmp_path / "b.onnx"), "--resolution", "64"])
    assert e.value.code == 0
    onnx.checker.check_model(onnx.load(str(tmp_path / "b.onnx")))
    with pytest.raises(SystemExit) as e:
        main(["export-onnx", str(structure), "--out", str(tmp_path / "b.ts"), "--height", "64", "--width", "32",
              "--torchscript"])
    assert e.value.code == 0
    assert len(torch.jit.load(str(tmp_path / "b.ts"))(torch.randn(1, 3, 64, 32))) == 3
    with pytest.raises(SystemExit) as e:
        main(["export-onnx", str(structure), "--out", str(tmp_path / "c.pt"), "--resolution", "64"])
    assert e.value.code == 0
    torch.jit.load(str(tmp_path / "c.pt"))  # .pt means TorchScript

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["export-onnx", str(structure), "--out", str(tmp_path / "d.onnx"), "--resolution", "50"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "height" in err[0]
