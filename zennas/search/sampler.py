"""How candidates are proposed: the evolution, uniform random structures, and Optuna adapters.

:class:`Evolution` is the ZenDet / TinyNAS evolution the search runs: candidates are whole
structures, mutated from a parent picked from the population, which is kept incrementally (heap +
index). A generation's randomness comes from ``trial_rng(seed, its first trial number)``, so a
candidate depends only on the seed, the trial number and the population at the start of its
generation, not on evaluation order or cluster size. :class:`EvolutionSampler` wraps it as an Optuna sampler.

For NSGA-II and random search, :class:`StructureCodec` expresses a structure as Optuna parameters
(per block: out, kernel, layers, bottleneck); NSGA-II is Optuna's own sampler over them, and
:class:`RandomStructures` draws them uniformly.
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


class Evolution:
    """Pick a parent uniformly from the population, mutate it (the space's rules), and keep the top
    ``population.size`` distinct structures by score. This is what the search runs.

    A generation's candidates are drawn from ``trial_rng(seed, its first trial number)`` and the
    population as it stood when the generation began (:meth:`propose` a generation, then :meth:`tell`
    its trials in number order), so they do not depend on evaluation order or cluster size.

    Warm-up (``grow_at``): the population starts small (its ``size``) and grows to ``full_size`` when
    trial ``grow_at`` is told. ``fine_from``: trial number from which mutations only change widths.
    """

    def __init__(self, *, mutator: Mutator, population: Population, seed: int = 0, fine_from: int | None = None,
                 grow_at: int | None = None, full_size: int | None = None) -> None:
        self.mutator = mutator
        self.population = population
        self.seed = seed
        self.fine_from = fine_from
        self.grow_at = grow_at
        self.full_size = full_size if full_size is not None else population.size

    def propose(self, numbers: range) -> list[Structure]:
        """The candidates of one generation (consecutive trial numbers), drawn in number order from
        one stream, ``trial_rng(seed, first number)``: seeding a Mersenne Twister costs as much as a
        mutation, so it is done once per generation, not per trial. Generations are cut at fixed
        numbers (multiples of the spec's generation size), so a trial's candidate is still a function
        of the seed, its number and the population when its generation began."""
        pick, mutate, fine_from = self.population.pick, self.mutator.mutate, self.fine_from
        rng = trial_rng(self.seed, numbers.start)
        return [mutate(pick(rng), rng, fine=fine_from is not None and n >= fine_from) for n in numbers]

    def tell(self, number: int, structure: Structure, score: float | None) -> None:
        """Trial ``number`` ended: with a score it competes for the population (None: rejected/failed)."""
        if self.grow_at is not None and number >= self.grow_at and self.population.size < self.full_size:
            self.population.resize(self.full_size)  # the warm-up ends: the population grows
        if score is not None:
            self.population.insert(structure, score)


class EvolutionSampler(BaseSampler):
    """:class:`Evolution` as an Optuna sampler, for driving it from your own Optuna study: every
    candidate is one trial. It proposes a structure when a trial starts (``before_trial``) and learns
    from it when the trial ends (``after_trial``); it suggests no Optuna parameters.

    Contract: call :meth:`candidate` with a trial's number after ``study.ask()`` to get the structure
    it proposes; tell the trial COMPLETE with the score to let it compete for the population, or
    PRUNED when it broke a budget. (``zennas.search.Search`` runs :class:`Evolution` directly and
    records every trial in its store, which exports as an Optuna study.)
    """

    def __init__(self, *, mutator: Mutator, population: Population, seed: int = 0, number_offset: int = 0,
                 fine_from: int | None = None, grow_at: int | None = None, full_size: int | None = None) -> None:
        self.evolution = Evolution(mutator=mutator, population=population, seed=seed, fine_from=fine_from,
                                   grow_at=grow_at, full_size=full_size)
        self.population = population
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
        n = self.number_offset + trial.number
        self._pending[trial.number] = self.evolution.propose(range(n, n + 1))[0]

    def candidate(self, trial_number: int) -> Structure:
        return self._pending[trial_number]

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        s = self._pending.pop(trial.number)
        ok = state == TrialState.COMPLETE and values
        self.evolution.tell(self.number_offset + trial.number, s, values[0] if ok else None)  # type: ignore[index]


class RandomStructures:
    """Uniform random structures of the codec's parameter space; trial n's draws come from
    ``trial_rng(seed, n)``, one per parameter in the codec's order, so resume replays exactly."""

    def __init__(self, codec: StructureCodec, *, seed: int) -> None:
        self.codec, self.seed = codec, seed

    def propose(self, numbers: range) -> list[Structure]:
        return [self.codec.decode({name: _draw(rng, d) for name, d in self.codec.distributions.items()})
                for rng in (trial_rng(self.seed, n) for n in numbers)]

    def tell(self, number: int, structure: Structure, score: float | None) -> None:
        pass


def _draw(rng: random.Random, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return rng.choice(dist.choices)
    assert isinstance(dist, IntDistribution)
    step = dist.step or 1
    return dist.low + step * rng.randrange((dist.high - dist.low) // step + 1)


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
