"""``zen``: the Zen-score of Zen-NAS (arXiv 2102.01063).

At Gaussian init (conv weights N(0, 1), BN gamma 1 / beta 0) and with residuals removed, the network
f is run on a Gaussian input x and on x + gamma * e (gamma = 1e-2, e Gaussian). The score is

    log E_batch[ sum |f(x) - f(x + gamma e)| ]  +  sum over BN layers of log sqrt(mean_c var_c)

The first term measures expressivity (how much the output moves under a small perturbation), the
second undoes the normalization BN applied along the way.

Which BN variance (``bn_mode``):
- ``"batch"`` (default, the paper's definition): each BN's per-channel variance of its input batch
  on the clean forward pass, averaged over channels.
- ``"running"`` (the reference code): BN stays in train mode with momentum 0.1, so after the clean and
  the perturbed passes ``running_var = 0.81 + 0.09 v1 + 0.1 v2`` (unbiased). For the large v of
  Gaussian-init networks that is about 0.19 v, i.e. log sqrt(0.19) ~ -0.83 per BN layer below the
  paper's value; the fixtures' measured offsets are in the README. Use it to reproduce ZenNAS numbers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from zennas.cost import check_size
from zennas.errors import SpecError
from zennas.score._torch import build_uninitialized, gaussian_, torch_threads
from zennas.score.base import ScoreResult, check_counts, check_positive, check_seed, check_threads
from zennas.space.structure import Structure

BN_MODES = ("batch", "running")


@dataclass(frozen=True)
class Zen:
    height: int = 224
    width: int = 224
    batch: int = 16
    repeat: int = 1  # independent fresh inits averaged
    gamma: float = 1e-2  # perturbation size
    bn_mode: str = "batch"
    bn_eps: float = 1e-3
    seed: int = 0
    threads: int | None = None
    name: str = "zen"
    forward_pass: bool = True

    def __post_init__(self) -> None:
        check_size(self.height, self.width)
        check_counts(self, "batch", "repeat")
        check_seed(self)
        check_threads(self)
        check_positive(self, "gamma", "bn_eps")
        if self.bn_mode not in BN_MODES:
            raise SpecError(f"bn_mode must be one of {', '.join(BN_MODES)}, got {self.bn_mode!r}", field="bn_mode")

    def settings(self) -> dict[str, Any]:
        return {"height": self.height, "width": self.width, "batch": self.batch, "repeat": self.repeat,
                "gamma": self.gamma, "bn_mode": self.bn_mode, "bn_eps": self.bn_eps, "seed": self.seed,
                "residual": "removed"}

    def _once(self, model: nn.Module, units: list[nn.Module], bns: list[nn.BatchNorm2d],
              gen: torch.Generator, in_ch: int) -> float:
        gaussian_(model, 1.0, gen)
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum, bn.eps = 0.1, self.bn_eps
        x = torch.randn(self.batch, in_ch, self.height, self.width, generator=gen)
        e = torch.randn(self.batch, in_ch, self.height, self.width, generator=gen)

        batch_var: list[float] = []

        def record(_m: nn.Module, args: tuple[Tensor, ...]) -> None:
            batch_var.append(float(args[0].var(dim=(0, 2, 3), unbiased=False).mean()))

        def run(inp: Tensor) -> Tensor:
            for u in units:
                inp = u.plain_forward(inp)  # type: ignore[operator]
            return inp

        hooks = [bn.register_forward_pre_hook(record) for bn in bns] if self.bn_mode == "batch" else []
        try:
            out = run(x)
        finally:
            for h in hooks:
                h.remove()
        out2 = run(x + self.gamma * e)
        delta = float((out - out2).abs().sum(dim=(1, 2, 3)).mean())
        if self.bn_mode == "batch":
            bn_term = math.fsum(0.5 * math.log(v) for v in batch_var)
        else:
            bn_term = math.fsum(0.5 * math.log(float(bn.running_var.mean())) for bn in bns if bn.running_var is not None)
        return math.log(delta) + bn_term

    def __call__(self, structure: Structure) -> ScoreResult:
        t0 = time.perf_counter()
        with torch_threads(self.threads), torch.no_grad():
            model = build_uninitialized(structure).train()
            units = [u for blk in model.block_modules() for u in blk.units]
            # only the main path's BNs run once residuals are removed
            bns = [m for u in units for m in u.modules()
                   if isinstance(m, nn.BatchNorm2d) and not _in_shortcut(u, m)]
            gen = torch.Generator().manual_seed(self.seed)
            per_repeat = [self._once(model, units, bns, gen, structure.in_channels) for _ in range(self.repeat)]
        return ScoreResult(self.name, math.fsum(per_repeat) / self.repeat, per_repeat=tuple(per_repeat),
                           resolution=(self.height, self.width), settings=self.settings(),
                           seconds=time.perf_counter() - t0)


def _in_shortcut(unit: nn.Module, bn: nn.Module) -> bool:
    shortcut = getattr(unit, "shortcut", None)
    return shortcut is not None and any(m is bn for m in shortcut.modules())


def _make(*, resolution: int | None = None, height: int | None = None, width: int | None = None,
          batch: int = 16, repeat: int = 1, gamma: float = 1e-2, bn_mode: str = "batch",
          seed: int = 0, threads: int | None = None) -> Zen:
    from zennas.score.entropy import _first

    return Zen(height=_first(height, resolution, 224), width=_first(width, resolution, 224), batch=batch,
               repeat=repeat, gamma=gamma, bn_mode=bn_mode, seed=seed, threads=threads)
