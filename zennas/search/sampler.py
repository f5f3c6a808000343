"""Optuna samplers for architecture search.

:class:`EvolutionSampler` is the ZenDet / TinyNAS evolution as an Optuna sampler: every candidate is
one Optuna trial. Candidates are whole structures, not independent parameters, so the sampler
proposes a structure when a trial starts (``before_trial``) and learns from it when the trial ends
(``after_trial``); it suggests no Optuna parameters, which keeps a trial at a few tens of
microseconds (a structure as ~24 int parameters costs ~1 ms per trial in Optuna 5). The population
is kept incrementally (heap + index), never by scanning the study's trials.

Its randomness for trial n comes from ``random.Random((seed, n))``-style derivation, so a candidate
depends only on the seed, the trial number and the population at the start of its generation, not
on evaluation order or cluster size.

For NSGA-II and random search, :class:`StructureCodec` expresses a structure as Optuna parameters
(per block: out, kernel, layers, bottleneck) so Optuna's own samplers can drive it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from zennas.errors import SpecError
from zennas.search.population import Population
from zennas.space.mutation import Mutator
from zennas.space.space import SearchSpace
from zennas.space.structure import Block, Structure


def trial_rng(seed: int, number: int) -> random.Random:
    """The random stream of trial ``number`` of a search with ``seed``."""
    return random.Random((seed << 40) ^ number)


class EvolutionSampler(BaseSampler):
    """Pick a parent uniformly from the population, mutate it (the space's rules), and keep the top
    ``population.size`` distinct structures by score.

    Warm-up (``grow_at``): the population starts small (its ``size``) and grows to ``full_size`` when
    trial ``grow_at`` is told. The switch depends only on trial numbers, which are told in order, so it
    is the same for any worker count and completion order.

    Contract: call :meth:`candidate` with a trial's number after ``study.ask()`` to get the structure
    it proposes; tell the trial COMPLETE with the score to let it compete for the population, or
    PRUNED when it broke a budget.
    """

    def __init__(self, *, mutator: Mutator, population: Population, seed: int = 0, number_offset: int = 0,
                 fine_from: int | None = None, grow_at: int | None = None, full_size: int | None = None) -> None:
        self.mutator = mutator
        self.fine_from = fine_from  # trial number from which mutations only change widths (None: never)
        # warm-up: from trial ``grow_at`` on, the population may hold ``full_size`` members (None: no growth)
        self.grow_at = grow_at
        self.full_size = full_size if full_size is not None else population.size
        self.population = population
        self.seed = seed
        self.number_offset = number_offset  # trials done before this study (resumed searches)
        self._pending: dict[int, Structure] = {}

    # The evolution proposes whole structures; it suggests no independent parameters.
    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        raise SpecError(
            f"EvolutionSampler proposes whole structures; suggest no parameters (got {param_name!r}) "
            "and read the candidate with sampler.candidate(trial.number)",
            field="sampler",
        )

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        number = self.number_offset + trial.number
        rng = trial_rng(self.seed, number)
        parent = self.population.pick(rng)
        fine = self.fine_from is not None and number >= self.fine_from
        self._pending[trial.number] = self.mutator.mutate(parent, rng, fine=fine)

    def candidate(self, trial_number: int) -> Structure:
        return self._pending[trial_number]

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        s = self._pending.pop(trial.number)
        if self.grow_at is not None and self.number_offset + trial.number >= self.grow_at \
                and self.population.size < self.full_size:
            self.population.resize(self.full_size)  # the warm-up ends: the population grows
        if state == TrialState.COMPLETE and values:
            self.population.insert(s, values[0])


class StructureCodec:
    """A structure of a space as Optuna parameters, for Optuna's own samplers (NSGA-II, random)."""

    def __init__(self, space: SearchSpace, *, budget_layers: int | None) -> None:
        self.space = space
        r = space.mutation
        n = len(space.start.blocks)
        self.distributions: dict[str, BaseDistribution] = {}
        step = r.channel_round
        for i, b in enumerate(space.start.blocks):
            hi = r.stem_max_out if (i == 0 and r.stem_max_out) else r.max_channels
            hi = max(step, hi - hi % step)
            self.distributions[f"b{i}_out"] = IntDistribution(step, hi, step=step)
            if i == 0:
                continue
            self.distributions[f"b{i}_kernel"] = CategoricalDistribution(list(r.kernels))
            cap = r.first_block_max_layers if i == 1 and r.first_block_max_layers else None
            if cap is None and budget_layers is not None and n > 2:
                cap = max(1, budget_layers // 3 // (n - 2))
            self.distributions[f"b{i}_layers"] = IntDistribution(1, cap or 16)
            if b.bottleneck is not None:
                self.distributions[f"b{i}_bottleneck"] = IntDistribution(step, r.max_channels, step=step)

    def decode(self, params: dict[str, Any]) -> Structure:
        blocks: list[Block] = []
        prev = self.space.start.in_channels
        for i, b in enumerate(self.space.start.blocks):
            out = int(params[f"b{i}_out"])
            if i == 0:
                blocks.append(Block(b.type, prev, out, b.stride, b.kernel, 1, None))
            else:
                btn = params.get(f"b{i}_bottleneck")
                blocks.append(Block(b.type, prev, out, b.stride, int(params[f"b{i}_kernel"]),
                                    int(params[f"b{i}_layers"]), int(btn) if btn is not None else None))
            prev = out
        return Structure(tuple(blocks))

    def encode(self, s: Structure) -> dict[str, Any]:
        p: dict[str, Any] = {}
        for i, b in enumerate(s.blocks):
            p[f"b{i}_out"] = b.out_channels
            if i:
                p[f"b{i}_kernel"] = b.kernel
                p[f"b{i}_layers"] = b.layers
                if b.bottleneck is not None:
                    p[f"b{i}_bottleneck"] = b.bottleneck
        return p


def constraints_from_attrs(trial: FrozenTrial) -> Sequence[float]:
    """NSGA-II ``constraints_func``: budget violations recorded on the trial (<= 0 is feasible)."""
    return trial.user_attrs.get("constraints", [0.0])
