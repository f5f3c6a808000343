"""The one ONNX export zennas uses: ``zennas export-onnx`` and the latency profiles both call it, so
what is profiled, checked and deployed is the same graph.

torch's TorchScript-based exporter (``dynamo=False``: the dynamo exporter of torch >= 2.9 needs
``onnxscript``), eval mode, constant folding on: BatchNorm is folded into the preceding conv's weights
and bias. The batch dimension is dynamic.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

DEFAULT_OPSET = 17


def export_module(model: nn.Module, inputs: tuple[torch.Tensor, ...], out: str | Path | IO[bytes], *,
                  input_names: Sequence[str], output_names: Sequence[str], opset: int = DEFAULT_OPSET) -> None:
    model.eval()
    # the export traces one forward pass: flush denormals so the tiny activations of a freshly
    # initialised deep network do not slow it (torch has no getter; its default, off, is restored)
    torch.set_flush_denormal(True)
    try:
        _export(model, inputs, out, input_names, output_names, opset)
    finally:
        torch.set_flush_denormal(False)


def _export(model: nn.Module, inputs: tuple[torch.Tensor, ...], out: str | Path | IO[bytes],
            input_names: Sequence[str], output_names: Sequence[str], opset: int) -> None:
    f: Any = str(out) if isinstance(out, Path) else out  # a path or a binary stream
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy-exporter deprecation and tracer notes
        torch.onnx.export(
            model,
            inputs,
            f,
            dynamo=False,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes={n: {0: "batch"} for n in (*input_names, *output_names)},
            opset_version=opset,
        )


def module_onnx_bytes(model: nn.Module, inputs: tuple[torch.Tensor, ...], *, input_names: Sequence[str],
                      output_names: Sequence[str], opset: int = DEFAULT_OPSET) -> bytes:
    buf = io.BytesIO()
    export_module(model, inputs, buf, input_names=input_names, output_names=output_names, opset=opset)
    return buf.getvalue()
