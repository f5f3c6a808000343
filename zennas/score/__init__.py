"""Zero-shot scores: ``entropy`` (forward pass), ``entropy-analytic`` (closed form), ``zen`` and
baselines (``params``, ``flops``, ``grad-norm``, ``synflow``). Build one with :func:`make_scorer`."""

from zennas.score.base import (
    DETECTION_WEIGHTS,
    ScoreKind,
    Scorer,
    ScoreResult,
    make_scorer,
    register_score,
    score_kind,
    score_names,
)

__all__ = ["DETECTION_WEIGHTS", "ScoreKind", "ScoreResult", "Scorer", "make_scorer", "register_score", "score_kind",
           "score_names"]
