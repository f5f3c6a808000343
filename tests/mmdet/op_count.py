"""Count what a forward pass does, in zennas's FLOPs convention, from the ops it actually runs.

Convolution (and fc) multiply-accumulates come from ``torch.utils.flop_counter.FlopCounterMode``
(which counts 2 FLOPs per MAC); the element operations of the convention (norms 2 per element,
activations 1, max pooling k^2 per output element, tensor additions 1) from a dispatch-level counter
over the aten ops. Independent of zennas's analytic formulas: the tests hold those against this.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode


class ElementOps(TorchDispatchMode):
    """Counts the element operations of the convention on the aten ops a forward pass runs."""

    NORMS = ("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
             "native_group_norm")
    ACTS = ("relu", "relu_", "silu", "silu_")

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0.0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        first = out[0] if isinstance(out, (tuple, list)) else out
        if name in self.NORMS:
            self.ops += 2 * first.numel()
        elif name in self.ACTS:
            self.ops += first.numel()
        elif name in ("max_pool2d_with_indices", "max_pool2d"):
            k = args[1] if len(args) > 1 else kwargs["kernel_size"]
            k = k if isinstance(k, (list, tuple)) else [k]
            kk = k[0] * (k[1] if len(k) > 1 else k[0])
            self.ops += kk * first.numel()
        elif (name in ("add", "add_") and isinstance(args[1], torch.Tensor)
              and args[0].numel() == args[1].numel() == first.numel() > 1):
            # two maps added element-wise (FPN's top-down path); not mmdet's "x += y.sum() * 0" tricks
            self.ops += first.numel()
        return out


def count(fn: Any, *args: Any) -> tuple[float, float, Any]:
    """(conv/fc MACs, element ops, output) of ``fn(*args)``."""
    with FlopCounterMode(display=False) as fc, ElementOps() as el, torch.no_grad():
        out = fn(*args)
    return fc.get_total_flops() / 2, el.ops, out


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
