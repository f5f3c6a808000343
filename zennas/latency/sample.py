"""Structures of a space sampled by random walks of its mutator: what ``profile check`` measures and
what a profile's grid is sized from."""

from __future__ import annotations

import random

from zennas.cost import costs
from zennas.space.mutation import Mutator
from zennas.space.space import SearchSpace
from zennas.space.structure import Structure


def default_max_flops(space: SearchSpace, height: int, width: int) -> float | None:
    """The space's default FLOPs budget, scaled from its own input size to ``height x width``."""
    b = space.budgets
    if b.flops is None:
        return None
    return b.flops * (height * width) / (b.height * b.width)


def sample_structures(space: SearchSpace, n: int, *, seed: int, height: int, width: int,
                      max_flops: float | None = None, max_steps: int = 64) -> list[Structure]:
    """``n`` distinct structures, each the end of a random walk of 1..``max_steps`` mutations from the
    space's start; a step whose child breaks ``max_flops`` (at ``height x width``) or the space's layer
    budget is not taken. Deterministic in ``seed``."""
    if n <= 0:
        return []
    mut = Mutator(space, budget_layers=space.budgets.layers, height=height, width=width)
    rng = random.Random(seed)
    out: list[Structure] = []
    seen: set[Structure] = set()
    tries = 0
    while len(out) < n and tries < 20 * n + 100:
        tries += 1
        s = space.start
        for _ in range(rng.randint(1, max_steps)):
            child = mut.mutate(s, rng)
            if max_flops is None or costs(child, height, width).flops <= max_flops:
                s = child
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out
