"""A search, fully specified: what to search, under which budgets, how, and with which seed."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from zennas.admission import Limits
from zennas.cost import costs
from zennas.detector.settings import DetectorSettings
from zennas.errors import SpaceError, SpecError, StructureError
from zennas.score.base import score_kind
from zennas.space.space import SearchSpace, check_structure_in_space, get_space, space_from_dict
from zennas.space.structure import Block, Structure

SAMPLERS = ("evolution", "nsga2", "random")
NSGA2_OBJECTIVES = ("flops", "params", "latency")
# what a budget may be: a latency below 10 us cannot be measured, one above 10 minutes is no budget;
# the other bounds only keep absurd numbers (1e30 layers) out of stored specs
BUDGET_RANGES: dict[str, tuple[float, float]] = {"flops": (1.0, 1e16), "params": (1.0, 1e13),
                                                 "layers": (1, 100_000), "latency_ms": (0.01, 600_000.0)}
MAX_SEED = 2**31 - 1


BUDGET_FIELDS = ("flops", "params", "layers", "latency_ms")
# latency.verify (predicted mode): measure the top-k in rank order until the winner is known, or all k
VERIFY_MODES = ("until-met", "all")
BUDGET_SCOPES = ("backbone", "detector")


@dataclass(frozen=True)
class Budgets:
    """A budget left at None falls back to the space's default for that field alone; a field named
    in ``removed`` has no budget at all (CLI ``--budget-layers none``, REST an explicit ``null``)."""

    flops: float | None = None  # MACs + BN/act ops at height x width
    params: float | None = None  # parameters
    layers: int | None = None  # main-path conv layers
    latency_ms: float | None = None  # median latency (ms): measured on the worker, or predicted by latency.profile
    removed: tuple[str, ...] = ()  # budgets explicitly removed (no space default either)
    scope: str = "backbone"  # what flops/params budgets count: "backbone" | "detector" (+ neck + head)

    def __post_init__(self) -> None:
        if isinstance(self.removed, (str, bytes)) or not isinstance(self.removed, (tuple, list)):
            raise SpecError(f"budgets.removed must be a list of budget names, got {self.removed!r}",
                            field="budgets.removed")
        object.__setattr__(self, "removed", tuple(self.removed))
        for f in self.removed:
            if f not in BUDGET_FIELDS:
                raise SpecError(f"budgets.removed entries must be among {', '.join(BUDGET_FIELDS)}, got {f!r}",
                                field="budgets.removed")
            if getattr(self, f) is not None:
                raise SpecError(f"budgets.{f} is both given ({getattr(self, f)!r}) and removed",
                                field=f"budgets.{f}")


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
    # predicted mode: "until-met" stops measuring once a candidate meets the budget (every better-ranked
    # one measured by then: the same winner), "all" measures all verify_top_k (zennas.search.verify)
    verify: str = "until-met"
    # predicted mode: measure the top candidates while the search runs, on the otherwise idle measuring
    # worker, so that the verification at the end reuses them (zennas.search.verify.Speculator)
    speculate: bool = True
    # the checksum of the profile the search was submitted with (the service pins it): a profile
    # given to the search with another checksum is refused, so a resumed search predicts as it began
    profile_checksum: str | None = None


@dataclass(frozen=True)
class SearchSpec:
    space: str = "detection-k1kxk1"  # a shipped space name, or "inline" with space_doc
    space_doc: Mapping[str, Any] | None = None  # an inline space document (same schema as the YAML)
    score: str = "entropy-analytic"  # a registered score (zennas.score.score_names())
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
    # the evaluation limits of the service that accepted the search (None: none). Candidates whose
    # forward pass would break them are rejected before they run; recorded in the spec so that a
    # resumed search rejects the same ones (see zennas.admission).
    limits: Limits | None = None
    # the detector around the backbone (zennas.detector.DetectorSettings); with budgets.scope "detector"
    # the flops/params budgets count backbone + neck + head (default settings when not given)
    detector: DetectorSettings | None = None

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
        if not isinstance(self.score, str):
            raise bad("score", f"must be a score name, got {self.score!r}")
        score_kind(self.score)  # an unknown score names the field
        for o in self.objectives:
            if o not in NSGA2_OBJECTIVES:
                raise bad("objectives", f"entries must be among {', '.join(NSGA2_OBJECTIVES)}, got {o!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise bad("seed", f"must be an integer in [0, {MAX_SEED}], got {self.seed!r}")
        if isinstance(self.fine_phase, bool) or not isinstance(self.fine_phase, (int, float)) \
                or not 0.0 <= self.fine_phase < 1.0:
            raise bad("fine_phase", f"must be a fraction in [0, 1), got {self.fine_phase!r}")
        b = self.budgets
        for f in BUDGET_FIELDS:
            v = getattr(b, f)
            lo, hi = BUDGET_RANGES[f]
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                  or not math.isfinite(v) or v <= 0):
                raise bad(f"budgets.{f}", f"must be a positive number, got {v!r}")
            if v is not None and not lo <= v <= hi:
                raise bad(f"budgets.{f}", f"must be in [{lo:g}, {hi:g}], got {v!r}")
        if b.scope not in BUDGET_SCOPES:
            raise bad("budgets.scope", f"must be one of {', '.join(BUDGET_SCOPES)}, got {b.scope!r}")
        if self.detector is not None and not isinstance(self.detector, DetectorSettings):
            raise bad("detector", f"must be detector settings, got {type(self.detector).__name__}")
        if isinstance(self.start, Structure) and self.start.neck is not None:
            # a warm start from a co-search's structure file: the candidates are backbones (the neck is
            # chosen anew for each), so the file's neck is dropped
            object.__setattr__(self, "start", self.start.with_neck(None))
        lat = self.latency
        for f in ("batch", "runs", "threads", "warmup"):
            v = getattr(lat, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if f == "warmup" else 1):
                raise bad(f"latency.{f}", f"must be an integer >= {0 if f == 'warmup' else 1}, got {v!r}")
        if lat.resource is not None and (not isinstance(lat.resource, str) or not 0 < len(lat.resource) <= 100
                                         or not lat.resource.isprintable()):
            raise bad("latency.resource", f"must be a Ray resource name (1-100 printable characters), "
                      f"got {lat.resource!r}"[:200])
        if isinstance(lat.verify_top_k, bool) or not isinstance(lat.verify_top_k, int) or lat.verify_top_k < 1:
            raise bad("latency.verify_top_k", f"must be an integer >= 1, got {lat.verify_top_k!r}")
        if lat.verify not in VERIFY_MODES:
            raise bad("latency.verify", f"must be one of {', '.join(VERIFY_MODES)}, got {lat.verify!r}"[:200])
        if not isinstance(lat.speculate, bool):
            raise bad("latency.speculate", f"must be true or false, got {lat.speculate!r}"[:200])
        if lat.profile is not None and (not isinstance(lat.profile, str) or not lat.profile.strip()):
            raise bad("latency.profile", f"must name a latency profile, got {lat.profile!r}")
        if lat.profile_checksum is not None and (lat.profile is None or not isinstance(lat.profile_checksum, str)
                                                 or not 0 < len(lat.profile_checksum) <= 80):
            raise bad("latency.profile_checksum", "must be the checksum of latency.profile (at most 80 characters), "
                      f"got {lat.profile_checksum!r}"[:200])
        if not isinstance(self.score_settings, Mapping):
            raise bad("score_settings", f"must be a mapping of setting names to values, got {self.score_settings!r}")
        if self.limits is not None and not isinstance(self.limits, Limits):
            raise bad("limits", f"must be zennas.admission.Limits, got {type(self.limits).__name__}")
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

        def pick(f: str) -> Any:
            if f in b.removed:
                return None
            v = getattr(b, f)
            return getattr(d, f) if v is None else v

        return Budgets(**{f: pick(f) for f in BUDGET_FIELDS}, scope=b.scope)

    def detector_settings(self) -> DetectorSettings | None:
        """The detector whose neck and head the budgets also count, or None (backbone scope)."""
        if self.budgets.scope != "detector":
            return None
        return self.detector or DetectorSettings()

    def scoped_costs(self, structure: Structure, detector: DetectorSettings | None = None) -> tuple[float, float, int]:
        """(flops, params, layers) as the budgets count them: the backbone's, plus neck and head in
        detector scope (``detector`` overrides the spec's; layers always count the backbone's convs)."""
        c = costs(structure, self.height, self.width)
        det = self.detector_settings()
        if det is not None and detector is not None:
            det = detector
        if det is None:
            return c.flops, c.params, c.layers
        from zennas.detector.cost import detector_flops_params

        try:
            flops, params = detector_flops_params(structure, det, self.height, self.width)
        except SpecError as e:
            raise SpecError(f"detector: {e.message}", field="detector") from e
        return flops, params, c.layers

    def needs_backend(self, budgets: Budgets) -> bool:
        """Whether evaluation leaves the driver: a forward-pass score, or latency to measure (with a
        latency profile the latency is predicted in the driver: a backend only to verify the top
        candidates on a labelled node; without one they are measured in this process)."""
        if score_kind(self.score).forward_pass:
            return True
        if self.latency.profile is not None:
            return self.latency.resource is not None
        return budgets.latency_ms is not None or (self.sampler == "nsga2" and "latency" in self.objectives)

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
        d["limits"] = self.limits.to_dict() if self.limits is not None else None
        d["detector"] = self.detector.to_dict() if self.detector is not None else None
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
            if isinstance(kw.get("limits"), Mapping):
                kw["limits"] = Limits.from_dict(kw["limits"])
            if kw.get("start") is not None and not isinstance(kw["start"], Structure):
                from zennas.space.formats import structure_from_obj

                kw["start"] = structure_from_obj(kw["start"])
            if kw.get("detector") is not None:
                kw["detector"] = DetectorSettings.from_dict(kw["detector"])
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


def make_spec_scorer(spec: SearchSpec) -> Any:
    """The spec's scorer, configured from ``score_settings``: an unknown setting or a bad value is an
    error naming ``score_settings.<name>`` (for every score, the closed-form ones included)."""
    from zennas.score import make_scorer

    settings = dict(spec.score_settings)
    try:
        return make_scorer(spec.score, **settings)
    except SpecError as e:
        f = e.field
        if f in ("height", "width") and f not in settings and "resolution" in settings:
            f = "resolution"  # the scorer's height and width came from ``resolution``
        field = "score" if f in (None, "score") else f"score_settings.{f}"
        raise SpecError(f"score {spec.score!r}: {e.message}", field=field) from e


def check_feasible(spec: SearchSpec, space: SearchSpace | None = None) -> SearchSpace:
    """Reject at submission a budget no structure of the space can meet, a start that breaks one, and
    score settings the score does not have or cannot use.

    Returns the space the search runs in: the spec's space with the actual start (a warm start's
    block count and strides are what every candidate keeps, so the mutator, the NSGA-II codec and
    the cost tables all take their block layout from it)."""
    make_spec_scorer(spec)
    space = space or spec.resolve_space()
    budgets = spec.effective_budgets(space)
    start = spec.start_structure(space)
    try:
        check_structure_in_space(space, start, "start")
    except SpaceError as e:
        raise SpecError(e.message, field=e.field) from e
    if start is not space.start:
        space = replace(space, start=start)
    cheapest = None  # a neck co-search: the smallest GFPN of the space's choices must fit
    if spec.score == "neck-entropy-analytic" and space.neck is not None and spec.budgets.scope == "detector":
        base = spec.detector or DetectorSettings()
        cheapest = replace(base, gfpn_depth=min(space.neck.depths), gfpn_width=float(min(space.neck.widths)))
    small = spec.scoped_costs(smallest_structure(space), cheapest)
    here = spec.scoped_costs(start, cheapest)
    for f, have_small, have_start in (("flops", small[0], here[0]), ("params", small[1], here[1]),
                                      ("layers", small[2], here[2])):
        limit = getattr(budgets, f)
        if limit is None:
            continue
        if have_small > limit:
            raise SpecError(
                f"budgets.{f} = {limit:g} cannot be met: even the smallest structure of space "
                f"{space.name!r} needs {have_small:g} at {spec.height}x{spec.width}"
                + (" with the detector's neck and head" if budgets.scope == "detector" else ""),
                field=f"budgets.{f}",
            )
        if have_start > limit:
            raise SpecError(
                f"budgets.{f} = {limit:g} is below the start structure's {have_start:g}; "
                "give a smaller start structure (--start) or a larger budget",
                field=f"budgets.{f}",
            )
    return space
