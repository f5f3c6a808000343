"""A search, fully specified: what to search, under which budgets, how, and with which seed."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from zennas.cost import costs
from zennas.errors import SpaceError, SpecError, StructureError
from zennas.space.space import SearchSpace, check_structure_in_space, get_space, space_from_dict
from zennas.space.structure import Block, Structure

SAMPLERS = ("evolution", "nsga2", "random")
FORWARD_SCORES = ("entropy", "zen", "grad-norm", "synflow")
ANALYTIC_SCORES = ("entropy-analytic", "params", "flops")
NSGA2_OBJECTIVES = ("flops", "params", "latency")


@dataclass(frozen=True)
class Budgets:
    flops: float | None = None  # MACs + BN/act ops at height x width
    params: float | None = None  # parameters
    layers: int | None = None  # main-path conv layers
    latency_ms: float | None = None  # median latency (ms): measured on the worker, or predicted by latency.profile


@dataclass(frozen=True)
class LatencySpec:
    batch: int = 1  # batch size of the timed forward pass
    runs: int = 10  # timed runs; the median is the latency
    warmup: int = 2  # untimed runs first
    resource: str | None = None  # Ray custom resource the timing worker must hold (e.g. "device_cpu_x86")
    threads: int = 1  # torch threads of the timing worker
    # a device latency profile (a file path; in the service, the name of a stored profile): the latency
    # is then predicted from it for every candidate, and only the top ``verify_top_k`` are measured
    profile: str | None = None
    verify_top_k: int = 8  # predicted mode: distinct top candidates measured on the device at the end


@dataclass(frozen=True)
class SearchSpec:
    space: str = "detection-k1kxk1"  # a shipped space name, or "inline" with space_doc
    space_doc: Mapping[str, Any] | None = None  # an inline space document (same schema as the YAML)
    score: str = "entropy-analytic"  # entropy-analytic | entropy | zen | params | flops | grad-norm | synflow
    score_settings: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"resolution": 224}
    height: int = 480  # input size the budgets are counted at
    width: int = 480
    budgets: Budgets = field(default_factory=Budgets)
    population: int = 256  # population size kept by the evolution
    iterations: int = 100_000  # candidates to generate (each is one Optuna trial)
    generation: int = 16  # candidates per batch: asked together, evaluated (in parallel), told in order
    checkpoint_every: int = 4096  # checkpoint at the first generation boundary after this many trials
    sampler: str = "evolution"  # evolution | nsga2 | random
    objectives: tuple[str, ...] = ("flops",)  # nsga2: second objective(s) to minimize
    seed: int = 0
    start: Structure | None = None  # warm start instead of the space's start structure
    latency: LatencySpec = field(default_factory=LatencySpec)
    fine_phase: float = 0.0  # evolution: last fraction of iterations mutating only widths (coarse-to-fine)
    # evolution warm-up: the first ``warmup_iterations`` trials keep only the top ``warmup_population``
    # (capped at ``population``); then the population grows to ``population``. 0 turns it off.
    warmup_population: int = 16
    warmup_iterations: int = 10_000

    def __post_init__(self) -> None:
        def bad(f: str, msg: str) -> SpecError:
            return SpecError(f"{f} {msg}", field=f)

        for f in ("population", "iterations", "generation", "checkpoint_every", "warmup_population",
                  "warmup_iterations"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int):
                raise bad(f, f"must be an integer, got {v!r}")
        if self.population < 2:
            raise bad("population", f"must be >= 2, got {self.population}")
        if self.iterations < 1:
            raise bad("iterations", f"must be >= 1, got {self.iterations}")
        if self.generation < 1:
            raise bad("generation", f"must be >= 1, got {self.generation}")
        if self.checkpoint_every < 1:
            raise bad("checkpoint_every", f"must be >= 1, got {self.checkpoint_every}")
        if self.warmup_population < 2:
            raise bad("warmup_population", f"must be >= 2, got {self.warmup_population}")
        if self.warmup_iterations < 0:
            raise bad("warmup_iterations", f"must be >= 0 (0: no warm-up), got {self.warmup_iterations}")
        for f in ("height", "width"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0 or v % 32:
                raise bad(f, f"must be a positive multiple of 32, got {v!r}")
        if self.sampler not in SAMPLERS:
            raise bad("sampler", f"must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.score not in FORWARD_SCORES + ANALYTIC_SCORES:
            raise bad("score", f"must be one of {', '.join(ANALYTIC_SCORES + FORWARD_SCORES)}, got {self.score!r}")
        for o in self.objectives:
            if o not in NSGA2_OBJECTIVES:
                raise bad("objectives", f"entries must be among {', '.join(NSGA2_OBJECTIVES)}, got {o!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise bad("seed", f"must be a non-negative integer, got {self.seed!r}")
        if isinstance(self.fine_phase, bool) or not isinstance(self.fine_phase, (int, float)) \
                or not 0.0 <= self.fine_phase < 1.0:
            raise bad("fine_phase", f"must be a fraction in [0, 1), got {self.fine_phase!r}")
        b = self.budgets
        for f in ("flops", "params", "layers", "latency_ms"):
            v = getattr(b, f)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                  or not math.isfinite(v) or v <= 0):
                raise bad(f"budgets.{f}", f"must be a positive number, got {v!r}")
        lat = self.latency
        for f in ("batch", "runs", "threads"):
            if getattr(lat, f) < 1:
                raise bad(f"latency.{f}", f"must be >= 1, got {getattr(lat, f)}")
        if isinstance(lat.verify_top_k, bool) or not isinstance(lat.verify_top_k, int) or lat.verify_top_k < 1:
            raise bad("latency.verify_top_k", f"must be an integer >= 1, got {lat.verify_top_k!r}")
        if lat.profile is not None and (not isinstance(lat.profile, str) or not lat.profile.strip()):
            raise bad("latency.profile", f"must name a latency profile, got {lat.profile!r}")
        if "latency" in self.objectives and self.sampler == "nsga2" and b.latency_ms is None:
            pass  # latency is measured for the objective even without a budget

    # -- derived ---------------------------------------------------------------------------
    def resolve_space(self) -> SearchSpace:
        if self.space_doc is not None:
            try:
                return space_from_dict(self.space_doc, source="space_doc")
            except SpaceError as e:
                raise SpecError(e.message, field=f"space_doc.{e.field}" if e.field else "space_doc") from e
        return get_space(self.space)

    def effective_budgets(self, space: SearchSpace) -> Budgets:
        """The user's budgets, falling back to the space's defaults for those not given."""
        d = space.budgets
        b = self.budgets
        if any(getattr(b, f) is not None for f in ("flops", "params", "layers", "latency_ms")):
            return b
        return Budgets(flops=d.flops, params=d.params, layers=d.layers, latency_ms=d.latency_ms)

    def warmup_size(self) -> int | None:
        """The evolution's population during the warm-up, or None when there is no warm-up."""
        if self.warmup_iterations <= 0 or self.warmup_population >= self.population:
            return None
        return self.warmup_population

    def start_structure(self, space: SearchSpace) -> Structure:
        return self.start if self.start is not None else space.start

    def to_dict(self) -> dict[str, Any]:
        d = asdict(replace(self, start=None))
        d["start"] = self.start.to_dict() if self.start is not None else None
        d["objectives"] = list(self.objectives)
        d["space_doc"] = dict(self.space_doc) if self.space_doc is not None else None
        d["score_settings"] = dict(self.score_settings)
        return d

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SearchSpec:
        known = {f for f in cls.__dataclass_fields__}
        for k in raw:
            if k not in known:
                raise SpecError(f"unknown field {k!r} (known: {', '.join(sorted(known))})", field=str(k))
        kw = dict(raw)
        try:
            if isinstance(kw.get("budgets"), Mapping):
                kw["budgets"] = _sub(Budgets, kw["budgets"], "budgets")
            if isinstance(kw.get("latency"), Mapping):
                kw["latency"] = _sub(LatencySpec, kw["latency"], "latency")
            if kw.get("start") is not None and not isinstance(kw["start"], Structure):
                from zennas.space.formats import structure_from_obj

                kw["start"] = structure_from_obj(kw["start"])
            if "objectives" in kw and kw["objectives"] is not None:
                kw["objectives"] = tuple(kw["objectives"])
        except StructureError as e:
            raise SpecError(f"start: {e.message}", field=f"start.{e.field}" if e.field else "start") from e
        return cls(**kw)


def _sub(cls: type, raw: Mapping[str, Any], prefix: str) -> Any:
    known = set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    for k in raw:
        if k not in known:
            raise SpecError(f"unknown field {prefix}.{k} (known: {', '.join(sorted(known))})", field=f"{prefix}.{k}")
    return cls(**raw)


def smallest_structure(space: SearchSpace) -> Structure:
    """The cheapest structure the space can express: minimal channels, one unit, smallest kernel."""
    r = space.mutation
    base = r.channel_round
    k = min(r.kernels)
    blocks: list[Block] = []
    prev = space.start.in_channels
    for i, b in enumerate(space.start.blocks):
        kind_btn = b.bottleneck is not None
        out = base
        blocks.append(Block(b.type, prev, out, b.stride, b.kernel if i == 0 else k, 1, base if kind_btn else None))
        prev = out
    return Structure(tuple(blocks))


def check_feasible(spec: SearchSpec, space: SearchSpace | None = None) -> SearchSpace:
    """Reject at submission a budget no structure of the space can meet, and a start that breaks one."""
    space = space or spec.resolve_space()
    budgets = spec.effective_budgets(space)
    start = spec.start_structure(space)
    try:
        check_structure_in_space(space, start, "start")
    except SpaceError as e:
        raise SpecError(e.message, field=e.field) from e
    small = costs(smallest_structure(space), spec.height, spec.width)
    here = costs(start, spec.height, spec.width)
    for f, have_small, have_start in (("flops", small.flops, here.flops), ("params", small.params, here.params),
                                      ("layers", small.layers, here.layers)):
        limit = getattr(budgets, f)
        if limit is None:
            continue
        if have_small > limit:
            raise SpecError(
                f"budgets.{f} = {limit:g} cannot be met: even the smallest structure of space "
                f"{space.name!r} needs {have_small:g} at {spec.height}x{spec.width}",
                field=f"budgets.{f}",
            )
        if have_start > limit:
            raise SpecError(
                f"budgets.{f} = {limit:g} is below the start structure's {have_start:g}; "
                "give a smaller start structure (--start) or a larger budget",
                field=f"budgets.{f}",
            )
    return space
