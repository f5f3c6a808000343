"""How the search evaluates a candidate: every cost term and the closed-form score in one pass.

Each figure the search needs (FLOPs, params, layers, a closed-form score, and any term added later:
predicted latency, the whole detector's cost) is a :class:`Term`: a sum over the structure's blocks
of a per-block share that depends only on the block and its position (the position's input size and
stage). A mutation never changes a stride or a block type, so every candidate of a search has the
same positions, and a block's share at a position is computed once, from the block kind's cost
function (:func:`zennas.cost.block_cost`), and cached. A candidate then costs one cache lookup per
block and one sum per term.

The closed-form entropy is such a sum too: with stage ends e_1 < ... < e_m and weights w_j,
``score = sum_j w_j (sum_{i <= e_j} logstd_i + log C_{e_j})``, so block i in stage k contributes
``logstd_i * sum_{j >= k} w_j``, and a stage's last block adds ``w_k log C``.

To add a term: subclass :class:`Term` (``name`` and ``share``) and pass it in ``Evaluator(terms=...)``
(:func:`search_evaluator` builds a search's terms); give it a limit to make it a budget.

A figure that is not a sum of block shares is a :class:`WholeTerm`: the whole detector's neck and
head (:class:`DetectorScope`) cost what the channels of the blocks that end each stride jointly
decide, and the neck co-search (:mod:`zennas.search.neck`) chooses the neck of the whole backbone.
A whole term adjusts the block terms' totals (adds the neck and head to FLOPs and params, sets the
score) before the budget limits are checked, so every budget check counts what the scope says.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from zennas.cost import BlockCost, block_cost
from zennas.detector.cost import DetectorTerm
from zennas.errors import SpecError
from zennas.score.base import check_weights
from zennas.space.structure import Block, Structure

# the uncached cost function: the evaluator keeps its own bounded cache, keyed by position as well
_block_cost = getattr(block_cost, "__wrapped__", block_cost)

SCORE_AT = 3  # the index of the closed-form score's total (after FLOPs, params, layers)
CACHE_LIMIT = 1 << 13  # cached blocks per position; a full cache is cleared (bounded memory in long searches)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a block stands: everything its share of a term may depend on."""

    index: int  # block index in the structure
    height: float  # input feature-map height (divided by the strides before it, as floats)
    width: float  # input feature-map width
    stage: int  # index of the stage the block belongs to (0-based)
    stage_end: bool  # whether the block is its stage's last

    @property
    def area(self) -> float:
        return self.height * self.width


def positions(start: Structure, height: int, width: int) -> tuple[Position, ...]:
    """The block positions of every structure that shares ``start``'s strides, with the stages of
    :meth:`Structure.stages` (MAE-DET's C1..C5 rule)."""
    ends = set(start.stage_ends())  # the one stage rule (Structure.stages)
    out: list[Position] = []
    h, w = float(height), float(width)
    stage = 0
    for i, b in enumerate(start.blocks):
        end = i in ends
        out.append(Position(i, h, w, stage, end))
        h /= b.stride
        w /= b.stride
        stage += end
    return tuple(out)


class Term(ABC):
    """A figure of a candidate that is the sum of its blocks' shares. Contract: ``share`` is a pure
    function of its arguments (it is cached per position and block)."""

    name: str

    @abstractmethod
    def share(self, block: Block, cost: BlockCost, at: Position) -> float:
        """This block's share of the figure at position ``at`` (``cost``: the kind's cost of the block)."""


class Flops(Term):
    """FLOPs (MACs + BN/activation ops) at the search's input size; ``scale`` re-counts them at
    another input size (the ``flops`` score's resolution)."""

    def __init__(self, scale: float = 1.0, name: str = "flops") -> None:
        self.scale, self.name = scale, name

    def share(self, block: Block, cost: BlockCost, at: Position) -> float:
        area = at.area if self.scale == 1.0 else at.area * self.scale
        return cost.flops_per_pixel * area


class Params(Term):
    name = "params"

    def share(self, block: Block, cost: BlockCost, at: Position) -> float:
        return cost.params


class Layers(Term):
    name = "layers"

    def share(self, block: Block, cost: BlockCost, at: Position) -> int:  # type: ignore[override]
        return cost.layers


class EntropyAnalytic(Term):
    """``entropy-analytic`` (zennas.score.analytic) as a sum over blocks (see the module docstring)."""

    name = "score"

    def __init__(self, weights: Sequence[float]) -> None:
        self.weights = check_weights(weights)
        # a block in stage k adds its log-std to the value of every stage j >= k
        self.suffix = tuple(math.fsum(self.weights[k:]) for k in range(len(self.weights)))

    def share(self, block: Block, cost: BlockCost, at: Position) -> float:
        v = self.suffix[at.stage] * math.fsum(cost.log_std)
        w = self.weights[at.stage]
        if at.stage_end and w:
            v += w * math.log(block.out_channels)
        return v


class Placeholder(Term):
    """A term with no block shares: a :class:`WholeTerm` sets its total (the neck co-search's score)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def share(self, block: Block, cost: BlockCost, at: Position) -> float:
        return 0.0


class WholeTerm(ABC):
    """Figures of a candidate that are not sums of block shares (see the module docstring).
    Contract: ``adjust`` is a pure function of the candidate and the block terms' totals."""

    @abstractmethod
    def adjust(self, s: Structure, totals: tuple[float, ...]) -> tuple[float, ...]:
        """The totals (in the evaluator's term order) with this term's part added or set."""


class DetectorScope(WholeTerm):
    """Budgets in detector scope: the neck and head's FLOPs and params added to the backbone's
    (:class:`zennas.detector.cost.DetectorTerm`, cached per channel tuple of the neck's input levels)."""

    def __init__(self, term: DetectorTerm) -> None:
        self.term = term

    def adjust(self, s: Structure, totals: tuple[float, ...]) -> tuple[float, ...]:
        f, p = self.term.of(s)
        return (totals[0] + f, totals[1] + p, *totals[2:])


class Evaluation(NamedTuple):
    """A candidate's figures. ``totals``: each term's sum, in the evaluator's term order (the first
    three are always FLOPs, params and layers, then the closed-form score if any, then added terms)."""

    totals: tuple[float, ...]
    reason: str | None  # the first budget the candidate breaks (layers, flops, params, then added ones)

    @property
    def flops(self) -> float:
        return self.totals[0]

    @property
    def params(self) -> float:
        return self.totals[1]

    @property
    def layers(self) -> int:
        return int(self.totals[2])


class Evaluator:
    """Evaluates candidates that share the strides of ``start``: the terms' totals and the first
    budget broken. ``limits``: term name -> upper bound (checked in the order given); ``whole``:
    terms of the whole candidate, applied in order to the block terms' totals before the limits."""

    def __init__(self, start: Structure, height: int, width: int, terms: Sequence[Term],
                 limits: dict[str, float] | None = None, score: str | None = None,
                 score_transform: Callable[[float], float] | None = None,
                 whole: Sequence[WholeTerm] = ()) -> None:
        self.positions = positions(start, height, width)
        self.terms = tuple(terms)
        self.names = tuple(t.name for t in self.terms)
        if self.names[:3] != ("flops", "params", "layers"):
            raise ValueError(f"the first terms must be flops, params, layers, got {self.names[:3]}")
        index = {name: j for j, name in enumerate(self.names)}
        self.limits = tuple((index[name], name, float(limit)) for name, limit in (limits or {}).items())
        self.score_index = index[score] if score is not None else None  # the term the score is made of
        self.score_transform = score_transform  # score = transform(that term's total); None: the total
        self.whole = tuple(whole)
        self._caches: tuple[dict[Block, tuple[float, ...]], ...] = tuple({} for _ in self.positions)

    def _shares(self, at: Position, b: Block) -> tuple[float, ...]:
        cache = self._caches[at.index]
        if len(cache) >= CACHE_LIMIT:
            cache.clear()
        cost = _block_cost(b)
        v = cache[b] = tuple([t.share(b, cost, at) for t in self.terms])
        return v

    def block_totals(self, s: Structure) -> tuple[float, ...]:
        """The terms' totals over the blocks alone (summed in block order), before the whole terms."""
        shares = list(map(dict.get, self._caches, s.blocks))  # one cache per position
        if None in shares:
            shares = [v if v is not None else self._shares(at, b)
                      for v, b, at in zip(shares, s.blocks, self.positions, strict=True)]
        return tuple(map(sum, zip(*shares, strict=True)))  # per term, summed in block order

    def __call__(self, s: Structure) -> Evaluation:
        """The terms' totals (the blocks', then the whole terms applied) and the first budget broken."""
        totals = self.block_totals(s)
        for w in self.whole:
            totals = w.adjust(s, totals)
        for j, name, limit in self.limits:
            if totals[j] > limit:
                return Evaluation(totals, name)
        return Evaluation(totals, None)

    def score(self, e: Evaluation) -> float:
        """The closed-form score of an evaluated candidate (the evaluator must have a score term)."""
        assert self.score_index is not None
        v = e.totals[self.score_index]
        return v if self.score_transform is None else self.score_transform(v)

    def total(self, e: Evaluation, name: str) -> float:
        return e.totals[self.names.index(name)]


def score_term(score: str, settings: dict[str, object], height: int, width: int,
               stage_weights: Sequence[float]) -> Term | None:
    """The term of a closed-form score (None for a forward-pass score). The ``params`` and
    ``flops`` scores are the log of their term (zennas.score.baselines); the neck co-search's score
    is set by its whole term (zennas.search.neck)."""
    if score == "neck-entropy-analytic":
        return Placeholder("score")
    if score == "entropy-analytic":
        return EntropyAnalytic(settings.get("stage_weights", stage_weights))  # type: ignore[arg-type]
    if score in ("params", "flops"):
        res = settings.get("resolution")
        h = int(settings.get("height") or res or 480)  # type: ignore[call-overload]
        w = int(settings.get("width") or res or 480)  # type: ignore[call-overload]
        return Params() if score == "params" else Flops(scale=(h * w) / (height * width), name="flops-score")
    return None


def search_evaluator(start: Structure, height: int, width: int, *, score: str, settings: dict[str, object],
                     stage_weights: Sequence[float], flops: float | None = None, params: float | None = None,
                     layers: int | None = None, whole: Sequence[WholeTerm] = (), latency: Term | None = None,
                     latency_ms: float | None = None) -> Evaluator:
    """The evaluator of one search: FLOPs, params, layers, the closed-form score if any, the
    predicted latency if ``latency`` (a profile's :class:`zennas.latency.predict.LatencyTerm`); the
    given budgets as limits (checked layers, FLOPs, params, then the predicted latency: the first
    broken names the rejection); ``whole``: the terms of the whole candidate (the detector's neck and
    head in detector scope)."""
    terms: list[Term] = [Flops(), Params(), Layers()]
    st = score_term(score, settings, height, width, stage_weights)
    score_name = None
    transform = math.log if score in ("params", "flops") else None
    if st is not None:
        if isinstance(st, EntropyAnalytic):
            n_stages = sum(p.stage_end for p in positions(start, height, width))
            if len(st.weights) != n_stages:
                raise SpecError(f"stage_weights has {len(st.weights)} entries but the structures have "
                                f"{n_stages} stages", field="stage_weights")
        if st.name == "params":
            score_name = "params"
        else:
            terms.append(st)
            score_name = st.name
    limits = {name: v for name, v in (("layers", layers), ("flops", flops), ("params", params)) if v is not None}
    if latency is not None:
        terms.append(latency)
        if latency_ms is not None:
            limits[latency.name] = latency_ms
    return Evaluator(start, height, width, terms, limits, score_name, transform, whole)
