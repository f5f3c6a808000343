"""Export a backbone to ONNX or TorchScript (``zennas export-onnx``).

The exported module is :class:`zennas.blocks.Backbone` in eval mode: one input ``image``
``(N, 3, H, W)`` and one output per stage in ``out_indices`` (default C3, C4, C5), fine to coarse,
named ``c3``, ``c4``, ``c5``. The batch dimension is dynamic; ``H`` and ``W`` are fixed at export.
Weights are freshly initialised unless ``checkpoint`` gives a trained state dict (of the backbone,
or of a detector trained with ``ZenNASBackbone``: its ``backbone.`` keys are taken).

ONNX uses torch's TorchScript-based exporter (``dynamo=False``): the default dynamo exporter of
torch >= 2.9 needs the ``onnxscript`` package, which the backbone does not need.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zennas.errors import SpecError
from zennas.latency.onnx_export import DEFAULT_OPSET, export_module


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str  # "onnx" | "torchscript"
    input_shape: tuple[int, int, int, int]
    output_names: tuple[str, ...]
    output_shapes: tuple[tuple[int, ...], ...]


def _size(height: Any, width: Any, stride: int) -> tuple[int, int]:
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, int) or v < stride or v % stride:
            raise SpecError(
                f"{name} must be a positive multiple of the backbone's largest stride {stride}, got {v!r}",
                field=name,
            )
    return int(height), int(width)


def _load_weights(model: nn.Module, checkpoint: str | Path) -> None:
    p = Path(checkpoint)
    if not p.is_file():
        raise SpecError(f"checkpoint file {str(p)!r} does not exist", field="checkpoint")
    # weights_only=False: mmengine checkpoints pickle numpy/meta objects; this is the user's own file.
    state = torch.load(p, map_location="cpu", weights_only=False)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise SpecError(f"{p}: not a state dict or an mmengine checkpoint", field="checkpoint")
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing:
        raise SpecError(
            f"{p}: {len(missing)} backbone weights are missing (e.g. {missing[0]!r}); is it this structure's?",
            field="checkpoint",
        )
    del unexpected  # a backbone checkpoint with more blocks than out_indices needs is fine


def build_export_module(structure: Any, out_indices: Sequence[int] | None = None,
                        checkpoint: str | Path | None = None) -> nn.Module:
    """The backbone to export, in eval mode."""
    from zennas.blocks import build_backbone
    from zennas.mmdet.backbone import to_structure

    s = to_structure(structure)
    try:
        model = build_backbone(s, None if out_indices is None else [int(i) for i in out_indices])
    except ValueError as e:
        if isinstance(e, SpecError) or hasattr(e, "field"):
            raise
        raise SpecError(str(e), field="out_indices") from e
    if checkpoint is not None:
        _load_weights(model, checkpoint)
    return model.eval()


def _prepare(structure: Any, height: int, width: int, out_indices: Sequence[int] | None,
             checkpoint: str | Path | None) -> tuple[nn.Module, torch.Tensor, tuple[str, ...]]:
    model = build_export_module(structure, out_indices, checkpoint)
    max_stride = max(s.stride for s in model.stages)  # type: ignore[union-attr]
    h, w = _size(height, width, max_stride)
    names = tuple(model.stages[i].name.lower() for i in model.out_stages)  # type: ignore[union-attr, index]
    return model, torch.randn(1, 3, h, w), names


def export_onnx(
    structure: Any,
    out: str | Path,
    *,
    height: int = 480,
    width: int = 480,
    out_indices: Sequence[int] | None = None,
    checkpoint: str | Path | None = None,
    opset: int = DEFAULT_OPSET,
) -> ExportResult:
    """Write the backbone as ONNX to ``out`` and check it with ``onnx.checker``."""
    import onnx

    model, x, names = _prepare(structure, height, width, out_indices, checkpoint)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        shapes = tuple(tuple(t.shape) for t in model(x))
    # the one export zennas uses (latency profiles time the same graph)
    export_module(model, (x,), path, input_names=["image"], output_names=names, opset=opset)
    onnx.checker.check_model(onnx.load(str(path)))
    return ExportResult(path, "onnx", tuple(x.shape), names, shapes)  # type: ignore[arg-type]


def export_torchscript(
    structure: Any,
    out: str | Path,
    *,
    height: int = 480,
    width: int = 480,
    out_indices: Sequence[int] | None = None,
    checkpoint: str | Path | None = None,
) -> ExportResult:
    """Trace the backbone with ``torch.jit.trace`` and save it to ``out`` (load with ``torch.jit.load``)."""
    model, x, names = _prepare(structure, height, width, out_indices, checkpoint)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (x,))
        shapes = tuple(tuple(t.shape) for t in traced(x))
    traced.save(str(path))
    return ExportResult(path, "torchscript", tuple(x.shape), names, shapes)  # type: ignore[arg-type]


__all__ = ["ExportResult", "build_export_module", "export_onnx", "export_torchscript"]
