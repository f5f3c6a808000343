"""``zennas train``: the helpers (fast) and a real GFL + GFPN training run on a synthetic COCO set (slow)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from zennas.errors import SpecError
from zennas.mmdet.train import load_config, parse_cfg_options, trusted_torch_load

pytest.importorskip("mmdet")

# A tiny S2D chain (GiraffeDet's family): strides 2..32, C3..C5 = 32, 64, 128 channels.
TINY = [
    {"type": "ConvKXBNRELU", "in": 3, "out": 8, "stride": 2, "kernel": 3, "layers": 1},
    {"type": "S2D", "in": 8, "out": 16, "stride": 2, "kernel": 3, "layers": 1},
    {"type": "S2D", "in": 16, "out": 32, "stride": 2, "kernel": 3, "layers": 1},
    {"type": "S2D", "in": 32, "out": 64, "stride": 2, "kernel": 3, "layers": 1},
    {"type": "S2D", "in": 64, "out": 128, "stride": 2, "kernel": 3, "layers": 1},
]
COLORS = {1: (230, 40, 40), 2: (40, 40, 230)}


def make_coco(root: Path, n_train: int = 24, n_val: int = 8, size: int = 128, seed: int = 0) -> None:
    """Noise images with 1-3 solid red/blue rectangles each, in COCO layout under ``root``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    cats = [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]
    for split, n in (("train2017", n_train), ("val2017", n_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for i in range(n):
            img = rng.integers(60, 140, size=(size, size, 3), dtype=np.uint8)
            for _ in range(int(rng.integers(1, 4))):
                cid = int(rng.integers(1, 3))
                w, h = (int(v) for v in rng.integers(24, 56, size=2))
                x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
                img[y : y + h, x : x + w] = COLORS[cid]
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cid,
                             "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
            name = f"{i:04d}.jpg"
            Image.fromarray(img).save(root / split / name, quality=95)
            images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": cats})
        )


def _zennas() -> list[str]:
    exe = shutil.which("zennas", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "zennas.cli"]


# -- fast ----------------------------------------------------------------------------------------
def test_parse_cfg_options() -> None:
    opts = parse_cfg_options(["a.b=1", "c=[1,2]", "d=0.5", "e=True", "f=x"])
    assert opts == {"a.b": 1, "c": [1, 2], "d": 0.5, "e": True, "f": "x"}
    with pytest.raises(SpecError) as e:
        parse_cfg_options(["novalue"])
    assert e.value.field == "cfg_options"


def test_load_config_max_iters(tmp_path: Path) -> None:
    from zennas.mmdet.configs import make_config

    cfg_path = tmp_path / "c.py"
    cfg_path.write_text(make_config(TINY, num_classes=80, gfpn_depth=2))
    cfg = load_config(cfg_path, work_dir=tmp_path / "wd", max_iters=40,
                      cfg_options=["default_hooks.logger.interval=1"])
    assert cfg.train_cfg.type == "IterBasedTrainLoop" and cfg.train_cfg.max_iters == 40
    assert cfg.train_cfg.val_interval == 40
    assert cfg.default_hooks.checkpoint.by_epoch is False and cfg.default_hooks.checkpoint.interval == 40
    assert cfg.default_hooks.logger.interval == 1  # cfg options win
    assert all(s.get("by_epoch") is False for s in cfg.param_scheduler)
    assert cfg.work_dir == str(tmp_path / "wd")
    assert load_config(cfg_path).work_dir == str(Path("work_dirs") / "c")
    with pytest.raises(SpecError) as e:
        load_config(tmp_path / "missing.py")
    assert e.value.field == "config"
    with pytest.raises(SpecError) as e:
        load_config(cfg_path, max_iters=0)
    assert e.value.field == "max_iters"


def test_trusted_torch_load_reads_mmengine_checkpoints(tmp_path: Path) -> None:
    """torch >= 2.6 refuses mmengine checkpoints (numpy, HistoryBuffer) by default; the run allows them."""
    from mmengine.logging import HistoryBuffer
    from mmengine.runner.checkpoint import _load_checkpoint

    path = tmp_path / "ckpt.pth"
    torch.save({"meta": {"seed": np.int64(3), "hist": HistoryBuffer([1.0, 2.0], [1, 1]), "arr": np.zeros(2)},
                "state_dict": {"w": torch.ones(2)}}, path)
    original = torch.load
    with pytest.raises(Exception, match="weights_only"):
        _load_checkpoint(str(path), map_location="cpu")
    with trusted_torch_load():
        ckpt = _load_checkpoint(str(path), map_location="cpu")
        assert torch.load(path, weights_only=False)["meta"]["seed"] == 3
    assert torch.equal(ckpt["state_dict"]["w"], torch.ones(2))
    assert torch.load is original  # restored


def test_cli_train_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zennas.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", str(tmp_path / "missing.py")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config" in err[0]


# -- slow: a real run --------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_train_gfl_gfpn_end_to_end(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_coco(data)
    structure = tmp_path / "structure.json"
    structure.write_text(json.dumps(TINY))
    cfg = tmp_path / "gfl_gfpn.py"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(
        [*_zennas(), "export-mmdet", str(structure), "--detector", "gfl", "--neck", "gfpn",
         "--gfpn-depth", "2", "--gfpn-width", "0.125", "--neck-channels", "64", "--data-root", str(data),
         "--img-scale", "128", "--batch-size", "4", "--num-workers", "0", "--lr", "0.04", "--out", str(cfg)],
        check=True, timeout=120, env=env,
    )
    work = tmp_path / "work"
    proc = subprocess.run(
        [*_zennas(), "train", str(cfg), "--work-dir", str(work), "--max-iters", "40", "--test",
         # score_thr 0: an almost untrained detector still returns boxes, so COCO metrics are computed
         "--cfg-options", "model.test_cfg.score_thr=0.0", "model.bbox_head.stacked_convs=2",
         "randomness.seed=0"],
        capture_output=True, text=True, timeout=540, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    scalars = list(work.glob("*/vis_data/scalars.json"))
    assert len(scalars) == 1
    losses = [row["loss"] for row in map(json.loads, scalars[0].read_text().splitlines()) if "loss" in row]
    assert len(losses) >= 10
    assert np.isfinite(losses).all()
    first, last = float(np.mean(losses[:5])), float(np.mean(losses[-5:]))
    assert first > last, losses

    ckpts = list(work.glob("*.pth"))
    assert [p.name for p in ckpts] == ["iter_40.pth"]
    assert "iter_40.pth" in (work / "last_checkpoint").read_text()
    assert "iter_40.pth" in proc.stdout

    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("test metrics: "))
    metrics = json.loads(line[len("test metrics: "):])
    assert "coco/bbox_mAP" in metrics and 0.0 <= metrics["coco/bbox_mAP"] <= 1.0
    assert json.loads((work / "test_metrics.json").read_text()) == metrics
