"""Neck co-search: for each candidate backbone, the GFPN size (depth, width) with the highest neck
entropy among those whose whole detector fits the budgets (score ``neck-entropy-analytic``).

The space declares the choices (``neck: {depths, widths}``, e.g. ``giraffe-s2d-gfpn``). Rather than
mutating the neck like a block, the search maximizes over this small set exactly for every backbone
it scores: each choice's neck + head cost depends only on the backbone's channels per level (cached),
and its score is the closed form of :mod:`zennas.score.neck`, a few hundred microseconds. An exact
inner maximum is never worse than a random mutation of the same choice, keeps the evolution's
candidate a plain backbone structure (so mutation, checkpoints and resume are unchanged), and makes
the chosen neck a function of the backbone, recomputed for the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from zennas.detector.cost import neck_head_cost
from zennas.detector.graph import gfpn_graph
from zennas.detector.settings import DetectorSettings
from zennas.errors import SpecError
from zennas.score.analytic import _block_log_std
from zennas.search.evaluate import SCORE_AT, WholeTerm
from zennas.space.structure import Structure

if TYPE_CHECKING:
    from zennas.search.spec import Budgets, SearchSpec
    from zennas.space.space import SearchSpace

NECK_SCORE = "neck-entropy-analytic"


@dataclass(frozen=True, slots=True)
class NeckChoice:
    settings: DetectorSettings  # the detector with the chosen GFPN depth and width
    score: float  # neck entropy (closed form), sum over the output levels
    flops: float  # neck + head FLOPs (MACs + norm/act ops)
    params: float  # neck + head params
    feasible: bool  # the whole detector fits the budgets


class NeckChooser:
    """Chooses the neck of each candidate backbone (see the module docstring).

    Speed: GFPN depth ``d`` is the first ``2d - 1`` layers of any deeper GFPN (a node's inputs depend
    only on its layer and level), so one closed-form propagation per width, through the deepest
    feasible depth, scores every depth of that width; nodes are integer-indexed for the hot path.
    The result equals :func:`zennas.score.neck.neck_entropy_analytic` of the chosen settings (tested)."""

    def __init__(self, options: list[DetectorSettings], start: Structure, height: int, width: int,
                 limits: tuple[float, float], scoped: bool) -> None:
        self.options = options
        self.height, self.width = height, width
        self.limits = limits  # (flops, params) budgets of the whole detector (inf: none)
        self.scoped = scoped  # the budgets count neck + head (detector scope)
        base = options[0]
        self.in_levels, self.out_levels = base.in_levels, base.out_levels
        self.out_channels = base.neck_channels
        at: dict[int, int] = {}
        stride = 1
        for i, b in enumerate(start.blocks):
            stride *= b.stride
            at[stride] = i
        missing = [lv for lv in self.in_levels if 2**lv not in at]
        if missing:
            raise SpecError(f"detector: the neck needs backbone maps of stride {[2**lv for lv in self.in_levels]}, "
                            f"the start structure has strides {sorted(at)}", field="detector")
        self.positions = tuple(at[2**lv] for lv in self.in_levels)
        # the deepest graph, integer-indexed: slots 0..L-1 are the backbone maps of every output level
        # (levels above the last backbone map are its sub-sampled copies), then the fusion nodes in order
        depth = max(o.gfpn_depth for o in options)
        levels = self.out_levels
        slot: dict[tuple[int, int], int] = {(-1, lv): i for i, lv in enumerate(levels)}
        self._program: list[tuple[int, tuple[int, ...]]] = []  # (layer, input slots) per fusion node
        for g in gfpn_graph(depth, levels):
            tag, lvl = g.node
            if tag == "out":
                continue
            self._program.append((int(tag), tuple(slot[k] for k in g.inputs)))
            slot[(int(tag), lvl)] = len(slot)
        self._slot = slot
        self._by_width: dict[float, list[DetectorSettings]] = {}
        for o in options:
            self._by_width.setdefault(o.gfpn_width, []).append(o)

    def _scores(self, width: float, depths: list[int], src: list[tuple[float, float]]) -> dict[int, float]:
        """Neck score per depth for one width; ``src``: (log C, log-std) of slots 0..L-1."""
        log, exp = math.log, math.exp
        inner = int(256 * width)
        log_inner = math.log(inner)
        k3 = 0.5 * math.log(9 * inner)  # the 3x3 conv's log sqrt(fan-in)
        # u = log C + 2 s of every slot (the log of channels x second moment), then propagate
        u = [lc + 2 * s for lc, s in src]
        last_layer = 2 * max(depths) - 2
        for layer, ins in self._program:
            if layer > last_layer:
                break
            if len(ins) == 1:
                s = 0.5 * u[ins[0]]
            else:
                vals = [u[i] for i in ins]
                m = max(vals)
                s = 0.5 * (m + log(sum([exp(v - m) for v in vals])))
            u.append(log_inner + 2 * (s + k3))
        out_conv = 0.5 * log_inner if inner != self.out_channels else 0.0  # 1x1 to the neck channels
        log_out = math.log(self.out_channels)
        scores = {}
        for d in depths:
            layer = 2 * d - 2
            total = 0.0
            for lv in self.out_levels:
                s = 0.5 * (u[self._slot[(layer, lv)]] - log_inner)
                total += s + out_conv + log_out
            scores[d] = total
        return scores

    def choose(self, s: Structure, backbone_flops: float, backbone_params: float) -> NeckChoice:
        """The best-scoring feasible choice, or (none feasible) the cheapest one, marked infeasible."""
        acc = 0.0
        logstd: list[float] = []
        for b in s.blocks:
            acc += _block_log_std(b)
            logstd.append(acc)
        channels = tuple(s.blocks[i].out_channels for i in self.positions)
        src_by_level = {lv: (math.log(c), logstd[i]) for lv, c, i in zip(self.in_levels, channels, self.positions,
                                                                             strict=True)}
        last = self.in_levels[-1]
        src = [src_by_level[min(lv, last)] for lv in self.out_levels]  # P6, P7: sub-sampled C5
        lim_f, lim_p = self.limits
        best: NeckChoice | None = None
        cheapest: NeckChoice | None = None
        for width, opts in self._by_width.items():
            fits: dict[int, tuple[DetectorSettings, float, float]] = {}
            for opt in opts:
                neck, head = neck_head_cost(opt, channels, self.height, self.width)
                f, p = neck.flops + head.flops, neck.params + head.params
                if not self.scoped or (backbone_flops + f <= lim_f and backbone_params + p <= lim_p):
                    fits[opt.gfpn_depth] = (opt, f, p)
                elif cheapest is None or f < cheapest.flops:
                    cheapest = NeckChoice(opt, -math.inf, f, p, False)
            if not fits:
                continue
            for d, score in self._scores(width, sorted(fits), src).items():
                if best is None or score > best.score:
                    opt, f, p = fits[d]
                    best = NeckChoice(opt, score, f, p, True)
        if best is not None:
            return best
        assert cheapest is not None
        return cheapest


class NeckCoSearch(WholeTerm):
    """The neck co-search in the search's evaluator: the chosen neck's score is the candidate's score
    (the evaluator's placeholder score term), and in detector scope its neck + head FLOPs and params
    are added to the backbone's before the budgets are checked (an infeasible choice breaks them)."""

    def __init__(self, chooser: NeckChooser) -> None:
        self.chooser = chooser

    def choice(self, s: Structure, totals: tuple[float, ...]) -> NeckChoice:
        """The neck chosen for ``s`` (``totals``: the backbone's, the evaluator's block totals)."""
        return self.chooser.choose(s, totals[0], totals[1])

    def adjust(self, s: Structure, totals: tuple[float, ...]) -> tuple[float, ...]:
        ch = self.chooser.choose(s, totals[0], totals[1])
        out = list(totals)
        if self.chooser.scoped:
            out[0] += ch.flops
            out[1] += ch.params
        out[SCORE_AT] = ch.score
        return tuple(out)


def make_neck_chooser(spec: SearchSpec, space: SearchSpace, start: Structure, budgets: Budgets) -> NeckChooser:
    base = spec.detector or DetectorSettings()
    if base.neck != "gfpn":
        raise SpecError(f"score {NECK_SCORE} scores a GFPN neck, but detector.neck is {base.neck!r}",
                        field="detector.neck")
    if space.neck is not None:
        if budgets.scope != "detector":
            raise SpecError(f"space {space.name!r} co-searches the neck: its budgets count the whole detector, "
                            "so set budgets.scope to 'detector' (--budget-scope detector)", field="budgets.scope")
        options = [replace(base, gfpn_depth=d, gfpn_width=float(w)) for d in space.neck.depths
                   for w in space.neck.widths]
    else:
        options = [base]
    limits = (math.inf if budgets.flops is None else budgets.flops,
              math.inf if budgets.params is None else budgets.params)
    return NeckChooser(options, start, spec.height, spec.width, limits, budgets.scope == "detector")


__all__ = ["NECK_SCORE", "NeckChoice", "NeckChooser", "NeckCoSearch", "make_neck_chooser"]
