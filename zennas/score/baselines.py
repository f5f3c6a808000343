"""Baseline proxies for comparison: ``params``, ``flops``, ``grad-norm`` and ``synflow``.

``params``/``flops`` are the analytic counts of :mod:`zennas.cost` (bigger is "better", the naive
baseline every zero-shot proxy must beat). ``grad-norm`` (Abdelfattah et al., 2021) is the L2 norm of
the weight gradients of a sum-of-features loss at Kaiming init on a Gaussian batch; ``synflow``
(Tanaka et al., 2020) is log sum |theta * dR/dtheta| with all weights made positive and an all-ones
input, computed in float64 to avoid overflow.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from zennas.cost import check_size, costs
from zennas.score._torch import torch_threads
from zennas.score.base import ScoreResult, check_counts, check_seed, check_threads
from zennas.score.entropy import _first
from zennas.space.structure import Structure


@dataclass(frozen=True)
class CostProxy:
    name: str
    height: int = 480
    width: int = 480
    forward_pass: bool = False

    def __post_init__(self) -> None:
        check_size(self.height, self.width)

    def settings(self) -> dict[str, Any]:
        return {"height": self.height, "width": self.width}

    def __call__(self, structure: Structure) -> ScoreResult:
        t0 = time.perf_counter()
        c = costs(structure, self.height, self.width)
        value = c.params if self.name == "params" else c.flops
        return ScoreResult(self.name, math.log(value), settings=self.settings(), seconds=time.perf_counter() - t0)


@dataclass(frozen=True)
class GradProxy:
    name: str
    height: int = 224
    width: int = 224
    batch: int = 2
    seed: int = 0
    threads: int | None = None
    forward_pass: bool = True

    def __post_init__(self) -> None:
        check_size(self.height, self.width)
        check_counts(self, "batch")
        check_seed(self)
        check_threads(self)

    def settings(self) -> dict[str, Any]:
        return {"height": self.height, "width": self.width, "batch": self.batch, "seed": self.seed}

    def __call__(self, structure: Structure) -> ScoreResult:
        from zennas.blocks import build_backbone

        t0 = time.perf_counter()
        with torch_threads(self.threads):
            gen = torch.Generator().manual_seed(self.seed)
            # module init uses torch's global generator: fork it so the caller's random state is untouched
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                model = build_backbone(structure, out_stages=[len(_stage_ends(structure)) - 1])
            if self.name == "synflow":
                model = model.double().eval()
                with torch.no_grad():
                    for p in model.parameters():
                        p.abs_()
                x = torch.ones(1, structure.in_channels, self.height, self.width, dtype=torch.float64)
                model(x)[-1].sum().backward()
                with torch.no_grad():
                    total = sum((p * p.grad).abs().sum() for p in model.parameters() if p.grad is not None)
                value = math.log(float(total) + 1e-300)
            else:
                model.train()
                x = torch.randn(self.batch, structure.in_channels, self.height, self.width, generator=gen)
                model(x)[-1].sum().backward()
                with torch.no_grad():
                    total = sum((p.grad**2).sum() for p in model.parameters() if p.grad is not None)
                value = math.sqrt(float(total))
        return ScoreResult(self.name, value, resolution=(self.height, self.width), settings=self.settings(),
                           seconds=time.perf_counter() - t0)


def _stage_ends(structure: Structure) -> list[int]:
    from zennas.blocks import stages

    return [s.end_block for s in stages(structure)]


def _params(*, resolution: int | None = None, height: int | None = None, width: int | None = None) -> CostProxy:
    return CostProxy("params", _first(height, resolution, 480), _first(width, resolution, 480))


def _flops(*, resolution: int | None = None, height: int | None = None, width: int | None = None) -> CostProxy:
    return CostProxy("flops", _first(height, resolution, 480), _first(width, resolution, 480))


def _grad_norm(*, resolution: int | None = None, height: int | None = None, width: int | None = None,
               batch: int = 2, seed: int = 0, threads: int | None = None) -> GradProxy:
    return GradProxy("grad-norm", _first(height, resolution, 224), _first(width, resolution, 224), batch, seed, threads)


def _synflow(*, resolution: int | None = None, height: int | None = None, width: int | None = None,
             seed: int = 0, threads: int | None = None) -> GradProxy:
    return GradProxy("synflow", _first(height, resolution, 224), _first(width, resolution, 224), 1, seed, threads)
