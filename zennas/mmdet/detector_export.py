"""Export a whole detector (backbone + neck + head) from a generated config to ONNX (``zennas export-onnx
CONFIG.py``), and check it against PyTorch with ONNX Runtime.

The exported graph is the raw network, without pre- or post-processing: its input ``image`` is the
preprocessed tensor ``1 x 3 x H x W`` (normalized, padded), ``H x W`` by default the config's test
image scale (width, height) padded up to the data preprocessor's ``pad_size_divisor``, i.e. the
largest image the test pipeline feeds the network; its outputs are the leaves of
``model(x, mode="tensor")`` in order (for a dense head: the classification maps of every level, then
the box maps, then ATSS's centerness maps), named ``<group>_p<level>`` (``cls_score_p3``, ...). No NMS,
no box decoding. Two-stage detectors are refused: their RoI stage needs proposals from a
post-processing step that is not part of the raw network.

ONNX uses torch's TorchScript-based exporter (``dynamo=False``), as the backbone export does.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zennas.errors import SpecError

log = logging.getLogger(__name__)

GROUPS = {  # names of the groups model(x, mode="tensor") returns, per dense head type
    "GFLHead": ("cls_score", "bbox_pred"),
    "ATSSHead": ("cls_score", "bbox_pred", "centerness"),
    "RetinaHead": ("cls_score", "bbox_pred"),
}


@dataclass(frozen=True)
class DetectorExportResult:
    path: Path
    input_shape: tuple[int, int, int, int]
    output_names: tuple[str, ...]
    output_shapes: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class ParityReport:
    max_abs_diff: float  # over all outputs
    worst_output: str  # the output with the largest diff relative to its scale
    relative: float  # max over outputs of max|onnx - torch| / max|torch| (the output's scale)
    torch_ms: float  # median latency of one forward, PyTorch eager, this process's threads
    onnx_ms: float  # median latency of one run, ONNX Runtime CPU
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.relative <= self.tolerance


class _Raw(nn.Module):
    """``model(x, mode="tensor")`` with its nested tuples/lists flattened to a tuple of tensors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return tuple(_leaves(self.model(x, mode="tensor")))


def _leaves(obj: Any) -> list[Tensor]:
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _leaves(o)]
    raise SpecError(f"the model's tensor-mode output holds a {type(obj).__name__}, not tensors", field="config")


def load_detector(config: str | Path, checkpoint: str | Path | None = None, *, seed: int = 0) -> tuple[nn.Module, Any]:
    """(the detector in eval mode, its mmengine Config) from a config file. Without a checkpoint its weights
    are mmdet's initialization drawn from ``seed`` (the caller's global RNG state is left as it was), so the
    same config and seed give the same network anywhere (the service bundle's ONNX is checked so)."""
    path = Path(config)
    if not path.is_file():
        raise SpecError(f"config file {str(path)!r} does not exist", field="config")
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    try:
        cfg = Config.fromfile(str(path))
    except Exception as e:  # a config that does not parse: mmengine raises many types
        raise SpecError(f"{path}: cannot load the config: {e}", field="config") from e
    if "model" not in cfg:
        raise SpecError(f"{path}: the config has no 'model'", field="config")
    if "roi_head" in cfg.model:
        raise SpecError(
            f"{path}: two-stage detectors (Faster R-CNN) cannot be exported as one raw network: their RoI "
            "stage needs proposals from the RPN's post-processing; export the backbone instead",
            field="config",
        )
    with torch.random.fork_rng(devices=[]):  # mmdet's initializers draw from the global generator
        torch.manual_seed(seed)
        model = MODELS.build(cfg.model)
        model.init_weights()
    if checkpoint is not None:
        p = Path(checkpoint)
        if not p.is_file():
            raise SpecError(f"checkpoint file {str(p)!r} does not exist", field="checkpoint")
        state = torch.load(p, map_location="cpu", weights_only=False)  # the user's own mmengine checkpoint
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        model.load_state_dict(state, strict=True)
    return model.eval(), cfg


def config_input_size(cfg: Any) -> tuple[int, int]:
    """(H, W) the network sees for the config's largest test image: its Resize scale (width, height),
    padded up to the data preprocessor's ``pad_size_divisor``."""
    scale = None
    for step in cfg.get("test_pipeline", []) or []:
        if step.get("type") == "Resize" and "scale" in step:
            scale = step["scale"]
    if scale is None:
        raise SpecError("the config's test_pipeline has no Resize with a scale; pass --height/--width", field="config")
    w, h = (scale, scale) if isinstance(scale, int) else (int(scale[0]), int(scale[1]))
    pad = int(cfg.model.get("data_preprocessor", {}).get("pad_size_divisor", 1) or 1)
    return math.ceil(h / pad) * pad, math.ceil(w / pad) * pad


def _names(model: nn.Module, outs: list[Tensor], levels: int) -> tuple[str, ...]:
    groups = GROUPS.get(type(getattr(model, "bbox_head", None)).__name__)
    if groups is None or len(outs) != len(groups) * levels:
        return tuple(f"output_{i}" for i in range(len(outs)))
    first = 8  # P3 for single-stage detectors; the stride of the first map tells it
    strides = getattr(getattr(model.bbox_head, "prior_generator", None), "strides", None)
    if strides:
        first = int(strides[0][0] if isinstance(strides[0], (tuple, list)) else strides[0])
    lv0 = int(math.log2(first))
    return tuple(f"{g}_p{lv0 + i}" for g in groups for i in range(levels))


def export_detector_onnx(
    config: str | Path,
    out: str | Path,
    *,
    height: int | None = None,
    width: int | None = None,
    checkpoint: str | Path | None = None,
    opset: int = 17,
    round_up: bool = False,
) -> tuple[DetectorExportResult, nn.Module, Tensor]:
    """Write the detector of ``config`` as ONNX to ``out`` (checked with ``onnx.checker``).

    ``round_up``: pad a given ``height``/``width`` up to the config's ``pad_size_divisor`` (as the data
    preprocessor pads an image of that size) instead of refusing it. Returns the result, the eval-mode
    raw module and the example input (for :func:`check_parity`)."""
    import onnx

    model, cfg = load_detector(config, checkpoint)
    h0, w0 = config_input_size(cfg) if height is None or width is None else (height, width)
    h = height if height is not None else h0
    w = width if width is not None else w0
    pad = int(cfg.model.get("data_preprocessor", {}).get("pad_size_divisor", 1) or 1)
    if round_up:
        h, w = (math.ceil(v / pad) * pad if isinstance(v, int) and not isinstance(v, bool) and v > 0 else v
                for v in (h, w))
    for name, v in (("height", h), ("width", w)):
        if isinstance(v, bool) or not isinstance(v, int) or v < pad or v % pad:
            raise SpecError(f"{name} must be a positive multiple of the config's pad_size_divisor {pad}, got {v!r}",
                            field=name)
    raw = _Raw(model).eval()
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        outs = list(raw(x))
    levels = len(cfg.model.bbox_head.anchor_generator.strides) if "bbox_head" in cfg.model else 0
    names = _names(model, outs, levels)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy-exporter deprecation and tracer notes
        torch.onnx.export(raw, (x,), str(path), dynamo=False, input_names=["image"], output_names=list(names),
                          opset_version=opset)
    onnx.checker.check_model(onnx.load(str(path)))
    result = DetectorExportResult(path, (1, 3, h, w), names, tuple(tuple(t.shape) for t in outs))
    return result, raw, x


def _median_ms(fn: Any, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def check_parity(path: str | Path, raw: nn.Module, *, height: int, width: int, seed: int = 1,
                 tolerance: float = 1e-4, repeats: int = 5) -> ParityReport:
    """Run the ONNX file in ONNX Runtime and the module in PyTorch on one random input; compare every
    output (max abs difference relative to the PyTorch output's max abs value) and time both."""
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - the mmdet extra installs it
        raise SpecError("--check needs onnxruntime (pip install 'zennas[mmdet]')", field="check") from e
    x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(seed))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x.numpy()}
    names = [o.name for o in sess.get_outputs()]
    got = sess.run(None, feed)
    with torch.no_grad():
        ref = [t.numpy() for t in raw(x)]
    worst, rel, diff = names[0], 0.0, 0.0
    for name, a, b in zip(names, got, ref, strict=True):
        d = float(abs(a - b).max()) if a.size else 0.0
        scale = float(abs(b).max()) if b.size else 0.0
        r = d / scale if scale > 0 else d
        diff = max(diff, d)
        if r >= rel:
            worst, rel = name, r
    with torch.no_grad():
        torch_ms = _median_ms(lambda: raw(x), repeats)
    onnx_ms = _median_ms(lambda: sess.run(None, feed), repeats)
    report = ParityReport(diff, worst, rel, torch_ms, onnx_ms, tolerance)
    log.info("onnx parity: max abs diff %.3g (%.3g of scale, %s); torch %.1f ms, onnxruntime %.1f ms",
             diff, rel, worst, torch_ms, onnx_ms)
    return report


def export_checked(config: str | Path, out: str | Path, *, height: int | None = None, width: int | None = None,
                   round_up: bool = False) -> dict[str, Any]:
    """Export (:func:`export_detector_onnx`) and check parity (:func:`check_parity`); the record as
    plain data: the input shape, every output's name and shape, the parity figures and both latencies."""
    r, raw, _ = export_detector_onnx(config, out, height=height, width=width, round_up=round_up)
    rep = check_parity(r.path, raw, height=r.input_shape[2], width=r.input_shape[3])
    return {
        "input": {"name": "image", "shape": list(r.input_shape)},
        "outputs": [{"name": n, "shape": list(sh)} for n, sh in zip(r.output_names, r.output_shapes, strict=True)],
        "parity": {"max_abs_diff": rep.max_abs_diff, "relative": rep.relative, "worst_output": rep.worst_output,
                   "tolerance": rep.tolerance, "ok": rep.ok,
                   "measure": "max |onnxruntime - pytorch| / max |pytorch| per output, the worst output; "
                              "one random input (seed 1)"},
        "latency_ms": {"pytorch": rep.torch_ms, "onnxruntime": rep.onnx_ms},
    }


def _main(argv: list[str] | None = None) -> int:
    """``python -m zennas.mmdet.detector_export CONFIG OUT HEIGHT WIDTH RECORD``: :func:`export_checked`
    (``round_up``) in a process of its own, its record written as JSON to RECORD (the service's bundle runs
    it so, keeping torch and mmdet out of the HTTP process)."""
    import json
    import sys

    config, out, height, width, record = sys.argv[1:] if argv is None else argv
    rec = export_checked(config, out, height=int(height), width=int(width), round_up=True)
    Path(record).write_text(json.dumps(rec, indent=2) + "\n")
    return 0


__all__ = ["DetectorExportResult", "ParityReport", "check_parity", "config_input_size", "export_checked",
           "export_detector_onnx", "load_detector"]

if __name__ == "__main__":
    raise SystemExit(_main())
