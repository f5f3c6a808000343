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


_SCORERS: dict[str, Callable[..., Scorer]] = {}


def register_score(name: str) -> Callable[[Callable[..., Scorer]], Callable[..., Scorer]]:
    def deco(factory: Callable[..., Scorer]) -> Callable[..., Scorer]:
        if name in _SCORERS:
            raise KeyError(f"score {name!r} is already registered by {_SCORERS[name].__module__}")
        _SCORERS[name] = factory
        return factory

    return deco


def _load_all() -> None:
    from zennas.score import analytic, baselines, entropy, zen  # noqa: F401


def score_names() -> list[str]:
    _load_all()
    return sorted(_SCORERS)


def make_scorer(name: str, **settings: Any) -> Scorer:
    """Build a configured scorer by name; unknown names and settings name the field at fault."""
    _load_all()
    if name not in _SCORERS:
        raise SpecError(f"unknown score {name!r} (known: {', '.join(sorted(_SCORERS))})", field="score")
    factory = _SCORERS[name]
    known = [p.name for p in inspect.signature(factory).parameters.values() if p.kind is p.KEYWORD_ONLY]
    for k in settings:
        if k not in known:
            raise SpecError(f"score {name!r} has no setting {k!r} (its settings: {', '.join(known) or 'none'})",
                            field=str(k))
    try:
        return factory(**settings)
    except TypeError as e:
        raise SpecError(f"score {name!r}: {e}", field="score") from e
