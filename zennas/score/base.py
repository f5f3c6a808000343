"""What every score returns, the stage weighting they share, and the score registry."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from zennas.errors import ScoreError, SpecError
from zennas.space.structure import Structure

DETECTION_WEIGHTS: tuple[float, ...] = (0.0, 0.0, 1.0, 1.0, 6.0)  # C1..C5: MAE-DET's detection prior


@dataclass(frozen=True, slots=True)
class ScoreResult:
    name: str  # score type ("entropy", "entropy-analytic", "zen", ...)
    score: float  # the scalar the search maximizes
    stage_scores: tuple[float, ...] = ()  # per-stage values before weighting (C1..Cn)
    stage_scores_weighted: tuple[float, ...] = ()  # the same after the stage weights
    per_repeat: tuple[float, ...] = ()  # the score of each repeat, for forward-pass scores
    resolution: tuple[int, int] | None = None  # (H, W) a forward-pass score ran at
    settings: dict[str, Any] = field(default_factory=dict)  # everything needed to reproduce it
    seconds: float = 0.0  # wall time of the evaluation

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stage_scores"] = list(self.stage_scores)
        d["stage_scores_weighted"] = list(self.stage_scores_weighted)
        d["per_repeat"] = list(self.per_repeat)
        d["resolution"] = list(self.resolution) if self.resolution else None
        return d


class Scorer(Protocol):
    """A configured score. ``forward_pass`` says whether it runs a model (routed to Ray actors)."""

    @property
    def name(self) -> str: ...

    @property
    def forward_pass(self) -> bool: ...

    def __call__(self, structure: Structure) -> ScoreResult: ...

    def settings(self) -> dict[str, Any]: ...


def check_counts(obj: Any, *names: str) -> None:
    """Each named attribute must be an integer >= 1 (batch sizes, repeats)."""
    for f in names:
        v = getattr(obj, f)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise SpecError(f"{f} must be an integer >= 1, got {v!r}", field=f)


MAX_SEED = 2**31 - 1
MAX_THREADS = 1024  # a sanity bound; a service sets its own, lower one (zennas.admission.Limits)


def check_seed(obj: Any) -> None:
    v = obj.seed
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_SEED:
        raise SpecError(f"seed must be an integer in [0, {MAX_SEED}], got {v!r}", field="seed")


def check_threads(obj: Any) -> None:
    v = obj.threads
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_THREADS):
        raise SpecError(f"threads must be an integer in [1, {MAX_THREADS}] (or left unset), got {v!r}",
                        field="threads")


def check_positive(obj: Any, *names: str) -> None:
    """Each named attribute must be a finite number > 0 (init_std, gamma, bn_eps)."""
    for f in names:
        v = getattr(obj, f)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise SpecError(f"{f} must be a finite number > 0, got {v!r}", field=f)


def check_weights(weights: Sequence[float]) -> tuple[float, ...]:
    bad = SpecError(f"stage_weights must be a non-empty list of finite numbers, got {weights!r}"[:300],
                    field="stage_weights")
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) or len(weights) > 64:
        raise bad
    if any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in weights):
        raise bad
    w = tuple(float(x) for x in weights)
    if not w or any(not math.isfinite(x) for x in w):
        raise bad
    return w


def weigh(stage_values: Sequence[float], weights: Sequence[float], structure_stages: int) -> tuple[float, ...]:
    if structure_stages != len(weights):
        raise ScoreError(
            f"the structure has {structure_stages} stages (stride-2 blocks) but stage_weights has "
            f"{len(weights)} entries; give one weight per stage",
            field="stage_weights",
        )
    return tuple(v * w if w != 0 else 0.0 for v, w in zip(stage_values, weights, strict=True))


@dataclass(frozen=True)
class ScoreKind:
    """A registered score and what it can do, as data: the search, the service and the CLI read these
    instead of lists of names, so a score added with :func:`register_score` is searched, served and
    listed like the built-in ones."""

    name: str  # the name scores are asked for by ("entropy", ...)
    factory: Callable[..., Scorer] | str  # the factory, or "module:attribute" imported on first use
    forward_pass: bool  # runs a model: searches send it to the evaluation backend (Ray actors)
    sized_by_input: bool = False  # takes the budgets' input size (height, width) as its own
    description: str = ""

    def _factory(self) -> Callable[..., Scorer]:
        if callable(self.factory):
            return self.factory
        import importlib

        module, attr = self.factory.split(":")
        f: Callable[..., Scorer] = getattr(importlib.import_module(module), attr)
        return f

    def settings(self) -> tuple[str, ...]:
        """The keyword settings the factory accepts (from its signature)."""

        params = inspect.signature(self._factory()).parameters.values()
        return tuple(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))

    def build(self, **settings: Any) -> Scorer:
        known = self.settings()
        for k in settings:
            if k not in known:
                raise SpecError(f"score {self.name!r} has no setting {k!r} (its settings: {', '.join(known) or 'none'})",
                                field=str(k))
        try:
            return self._factory()(**settings)
        except TypeError as e:
            raise SpecError(f"score {self.name!r}: {e}", field="score") from e

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "forward_pass": self.forward_pass, "sized_by_input": self.sized_by_input,
                "settings": list(self.settings()), "description": self.description}


# the built-in scores: factories named, not imported, so looking a score up never imports torch
_KINDS: dict[str, ScoreKind] = {k.name: k for k in (
    ScoreKind("entropy-analytic", "zennas.score.analytic:_make", forward_pass=False,
              description="MAE-DET multi-scale entropy in closed form (no forward pass)"),
    ScoreKind("entropy", "zennas.score.entropy:_make", forward_pass=True,
              description="MAE-DET multi-scale entropy from a forward pass at Gaussian init"),
    ScoreKind("zen", "zennas.score.zen:_make", forward_pass=True, description="Zen-NAS's Zen-score"),
    ScoreKind("params", "zennas.score.baselines:_params", forward_pass=False, sized_by_input=True,
              description="baseline: log of the parameter count"),
    ScoreKind("flops", "zennas.score.baselines:_flops", forward_pass=False, sized_by_input=True,
              description="baseline: log of the FLOPs at the input size"),
    ScoreKind("grad-norm", "zennas.score.baselines:_grad_norm", forward_pass=True,
              description="baseline: gradient norm at init"),
    ScoreKind("synflow", "zennas.score.baselines:_synflow", forward_pass=True, description="baseline: SynFlow"),
    ScoreKind("neck-entropy-analytic", "zennas.score.neck:_make", forward_pass=False,
              description="zennas's neck entropy in closed form; a search co-searches the GFPN neck (detector scope)"),
)}


def register_score(name: str, *, forward_pass: bool, sized_by_input: bool = False,
                   description: str = "") -> Callable[[Callable[..., Scorer]], Callable[..., Scorer]]:
    """Register a score factory (a decorator) with its capabilities; a duplicate name is an error."""
    def deco(factory: Callable[..., Scorer]) -> Callable[..., Scorer]:
        if name in _KINDS:
            owner = _KINDS[name].factory
            where = owner if isinstance(owner, str) else owner.__module__
            raise KeyError(f"score {name!r} is already registered by {where}")
        _KINDS[name] = ScoreKind(name, factory, forward_pass, sized_by_input, description)
        return factory

    return deco


def score_names() -> list[str]:
    return sorted(_KINDS)


def score_kind(name: str) -> ScoreKind:
    """The registered score ``name``; an unknown name is a :class:`SpecError` naming the field."""
    kind = _KINDS.get(name)
    if kind is None:
        raise SpecError(f"unknown score {name!r} (known: {', '.join(sorted(_KINDS))})", field="score")
    return kind


def make_scorer(name: str, **settings: Any) -> Scorer:
    """Build a configured scorer by name; unknown names and settings name the field at fault."""
    return score_kind(name).build(**settings)
