"""Torch helpers the forward-pass scores share: fast model construction and seeded init."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from zennas.blocks import Backbone, build_backbone
from zennas.space.structure import Structure


def build_uninitialized(structure: Structure) -> Backbone:
    """Build on the meta device and allocate without running PyTorch's default init.

    Every score re-initializes the weights it uses from its own seeded generator, so the default
    (Kaiming-uniform) init is wasted work: about as long as a small forward pass.
    """
    with torch.device("meta"):
        model = build_backbone(structure, out_stages=None)
    return model.to_empty(device="cpu")


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads (None: leave as set), restoring the previous setting."""
    if n is None:
        yield
        return
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def gaussian_(module: nn.Module, std: float, generator: torch.Generator) -> None:
    """N(0, std^2) conv/linear weights, zero biases, BN gamma 1 and beta 0 (as both references do)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.normal_(0.0, std, generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                m.weight.fill_(1.0)
                m.bias.zero_()
