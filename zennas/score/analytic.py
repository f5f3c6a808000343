"""``entropy-analytic``: the closed form of the multi-scale entropy score (TinyNAS v2's "madnas").

ZenDet / MAE-DET (arXiv 2111.13336) scores a backbone by the differential entropy of its C1..C5
features at Gaussian init with BN, ReLU and residuals removed. For a linear chain of convs with
N(0, 1) weights and unit-variance input, each conv multiplies the feature std by sqrt(fan_in), with
fan_in = C_in/groups * k^2. So the log-std a conv contributes is ``log sqrt(C_in * k^2 / groups)``
and no forward pass is needed:

    S_i = sum of the log-stds of every conv up to the end of stage i  +  log(C_i)
    score = sum_i w_i * S_i          (detection weights w = [0, 0, 1, 1, 6] by default)

It does not depend on the resolution. It is what the search runs in the driver, ~microseconds each.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from zennas.cost import block_cost
from zennas.score.base import DETECTION_WEIGHTS, ScoreResult, check_weights, weigh
from zennas.space.kinds import on_kinds_change
from zennas.space.structure import Block, Structure


@lru_cache(maxsize=1 << 16)
def _block_log_std(b: Block) -> float:
    return math.fsum(block_cost(b).log_std)


on_kinds_change(_block_log_std.cache_clear)


def stage_values(structure: Structure) -> tuple[float, ...]:
    """Unweighted stage scores S_1..S_n (one per stage end, MAE-DET's stage rule)."""
    blocks = structure.blocks
    values: list[float] = []
    acc = 0.0
    first = 0
    for last in structure.stage_ends():
        for b in blocks[first:last + 1]:
            acc += _block_log_std(b)
        values.append(acc + math.log(blocks[last].out_channels))
        first = last + 1
    return tuple(values)


def analytic_score(structure: Structure, weights: Sequence[float] = DETECTION_WEIGHTS) -> float:
    """The scalar only: the search's hot path."""
    vals = stage_values(structure)
    weigh(vals, weights, len(vals))  # checks the stage count
    return sum(v * w for v, w in zip(vals, weights, strict=True) if w != 0)


@dataclass(frozen=True)
class EntropyAnalytic:
    stage_weights: tuple[float, ...] = DETECTION_WEIGHTS
    name: str = "entropy-analytic"
    forward_pass: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage_weights", check_weights(self.stage_weights))

    def settings(self) -> dict[str, Any]:
        return {"stage_weights": list(self.stage_weights)}

    def __call__(self, structure: Structure) -> ScoreResult:
        t0 = time.perf_counter()
        vals = stage_values(structure)
        weighted = weigh(vals, self.stage_weights, len(vals))
        return ScoreResult(self.name, math.fsum(weighted), vals, weighted, settings=self.settings(),
                           seconds=time.perf_counter() - t0)


def block_log_std(structure: Structure) -> list[float]:
    """The log-std each unit contributes, in order (as the reference's ``block_std_list``)."""
    return [x for b in structure.blocks for x in block_cost(b).log_std]


def _make(*, stage_weights: Sequence[float] = DETECTION_WEIGHTS) -> EntropyAnalytic:
    return EntropyAnalytic(stage_weights=check_weights(stage_weights))
