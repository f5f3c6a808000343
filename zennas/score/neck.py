"""Neck entropy: MAE-DET's multi-scale entropy carried through the GFPN graph (a zennas extension).

MAE-DET (ZenDet, arXiv 2111.13336) scores a backbone by the log-std of its C1..C5 features at
Gaussian init, BN, activations and residuals removed; :mod:`zennas.score.analytic` is its closed
form for a chain of convs. This module extends the same principle to the neck's graph, and scores the
neck's output levels. **It is zennas's extension of MAE-DET's principle, not MAE-DET's method**, and
there is no trained-accuracy evidence for it yet.

Closed form (same regime: N(0, 1) weights, norms and activations skipped): a conv with kernel ``k``
over the concatenation of inputs ``j`` with ``C_j`` channels and per-element second moments ``V_j``
outputs, in expectation over the weights, ``V = k^2 * sum_j C_j V_j`` (cross terms vanish because the
weights are independent and zero-mean, whatever the correlation of the inputs). In log-stds
``s = log sqrt(V)``::

    s_out = 1/2 * logsumexp_j(log C_j + 2 s_j) + 1/2 * log k^2

so log-stds propagate through the graph by log-sum-exp. Nearest up-sampling keeps the moment; max-pool
down-sampling is treated as sub-sampling (as MAE-DET treats ReLU: skipped), which keeps it too. With
one input this is ``s + log sqrt(C k^2)``, the conv chain's formula: for a chain the neck score reduces
exactly to ``entropy-analytic``.

Scores: level ``l`` of the neck's output scores ``S_l = s_l + log C_out`` (MAE-DET's stage score);
the total is ``sum_l w_l S_l`` with ``w = 1`` for every output level by default (every level feeds
the head). The backbone's maps enter with their closed-form log-stds, so the neck score includes the
backbone's.

The forward pass (:func:`neck_entropy_forward`) runs the built :class:`zennas.mmdet.gfpn.GiraffeNeck`'s
convolutions with N(0, 1) weights on N(0, 1) maps that carry the backbone's log-stds, each tensor kept
as (unit-RMS tensor, log-scale) so deep graphs cannot overflow; circular padding gives every output
its full fan-in (as the ``entropy`` score does).
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from zennas.detector.graph import gfpn_graph
from zennas.detector.settings import DetectorSettings
from zennas.errors import ScoreError
from zennas.score.analytic import _block_log_std
from zennas.score.base import ScoreResult
from zennas.space.structure import Structure


@dataclass(frozen=True, slots=True)
class Node:
    key: Hashable  # this node's name
    inputs: tuple[Hashable, ...]  # concatenated, in this order
    convs: tuple[tuple[int, int], ...]  # (kernel, out channels) of the convs applied after the concat, in order


@dataclass(frozen=True, slots=True)
class NeckScore:
    level_scores: tuple[float, ...]  # S_l = s_l + log C_out per output level, fine to coarse
    weights: tuple[float, ...]
    score: float  # sum_l w_l S_l
    method: str  # "closed-form" | "forward"


def _conv(s: float, c: int, k: int) -> float:
    return s + 0.5 * math.log(c * k * k)


def propagate(sources: Mapping[Hashable, tuple[int, float]], nodes: Sequence[Node]) -> dict[Hashable, tuple[int, float]]:
    """(channels, log-std) of every node, from the sources' (channels, log-std), in the closed form.
    A node without convs passes its (single) input through."""
    vals = dict(sources)
    for n in nodes:
        ins = [vals[k] for k in n.inputs]
        if not n.convs:  # pooling treated as sub-sampling, or an identity output: nothing changes
            vals[n.key] = ins[0]
            continue
        (k0, c_out) = n.convs[0]
        if len(ins) == 1:  # a chain: s + log sqrt(C k^2), the conv chain's formula exactly
            c, s = ins[0]
            s = _conv(s, c, k0)
        else:
            x = [math.log(c) + 2 * s for c, s in ins]
            m = max(x)
            s = 0.5 * (m + math.log(math.fsum(math.exp(v - m) for v in x))) + 0.5 * math.log(k0 * k0)
        c = c_out
        for k, c_next in n.convs[1:]:
            s = _conv(s, c, k)
            c = c_next
        vals[n.key] = (c, s)
    return vals


def backbone_level_log_stds(structure: Structure, levels: Sequence[int]) -> dict[int, tuple[int, float]]:
    """(channels, closed-form log-std) of the backbone's map at stride ``2^l`` for each level."""
    at: dict[int, tuple[int, float]] = {}
    stride, acc = 1, 0.0
    for b in structure.blocks:
        acc += _block_log_std(b)
        stride *= b.stride
        at[stride] = (b.out_channels, acc)
    missing = [lvl for lvl in levels if 2**lvl not in at]
    if missing:
        raise ScoreError(f"the neck needs backbone maps of stride {[2**lv for lv in levels]}, the structure has "
                         f"strides {sorted(at)}", field="structure")
    return {lvl: at[2**lvl] for lvl in levels}


def gfpn_nodes(settings: DetectorSettings) -> list[Node]:
    """The GFPN as closed-form nodes: the pooled extra levels, every fusion node (1x1 reduce, 3x3), and
    the output nodes (1x1 to the neck channels, or the identity)."""
    lv_in, lv_out = settings.in_levels, settings.out_levels
    inner, out = settings.gfpn_inner, settings.neck_channels
    nodes: list[Node] = []
    for lvl in lv_out:
        if lvl > lv_in[-1]:  # max pooling treated as sub-sampling: an identity node
            nodes.append(Node((-1, lvl), ((-1, lvl - 1),), ()))
    for g in gfpn_graph(settings.gfpn_depth, lv_out):
        tag, lvl = g.node
        if tag == "out":
            nodes.append(Node(("out", lvl), g.inputs, ((1, out),) if inner != out else ()))
        else:
            nodes.append(Node(g.node, g.inputs, ((1, inner), (3, inner))))
    return nodes


def _weights(weights: Sequence[float] | None, n: int) -> tuple[float, ...]:
    w = tuple(float(v) for v in weights) if weights is not None else (1.0,) * n
    if len(w) != n:
        raise ScoreError(f"neck weights must have {n} entries (one per output level), got {len(w)}", field="weights")
    return w


def level_scores(settings: DetectorSettings, nodes: Sequence[Node],
                 backbone: Mapping[int, tuple[int, float]]) -> tuple[float, ...]:
    """S_l per output level of the neck ``nodes`` (from :func:`gfpn_nodes`) on backbone maps
    ``{level: (channels, log-std)}``: the closed form, without any per-structure work."""
    vals = propagate({(-1, lvl): v for lvl, v in backbone.items()}, nodes)
    return tuple(vals[("out", lvl)][1] + math.log(vals[("out", lvl)][0]) for lvl in settings.out_levels)


def neck_entropy_analytic(structure: Structure, settings: DetectorSettings,
                          weights: Sequence[float] | None = None) -> NeckScore:
    """The closed-form neck entropy of ``structure``'s GFPN (``settings.neck`` must be ``gfpn``)."""
    if settings.neck != "gfpn":
        raise ScoreError("the neck entropy is defined for the GFPN neck", field="neck")
    backbone = backbone_level_log_stds(structure, settings.in_levels)
    scores = level_scores(settings, gfpn_nodes(settings), backbone)
    w = _weights(weights, len(scores))
    return NeckScore(scores, w, math.fsum(a * b for a, b in zip(w, scores, strict=True)), "closed-form")


def neck_entropy_forward(structure: Structure, settings: DetectorSettings, *, resolution: int = 256,
                         batch: int = 2, seed: int = 0, weights: Sequence[float] | None = None) -> NeckScore:
    """The same by a forward pass through the built GiraffeNeck (see the module docstring)."""
    import torch
    import torch.nn.functional as F

    from zennas.mmdet.gfpn import GiraffeNeck

    if settings.neck != "gfpn":
        raise ScoreError("the neck entropy is defined for the GFPN neck", field="neck")
    top = 2 ** settings.out_levels[-1]
    if resolution % top:
        raise ScoreError(f"resolution must be a multiple of {top} (the coarsest level's stride)", field="resolution")
    lv_in, lv_out = settings.in_levels, settings.out_levels
    src = backbone_level_log_stds(structure, lv_in)
    neck = GiraffeNeck(in_channels=[src[lv][0] for lv in lv_in], out_channels=settings.neck_channels,
                       depth=settings.gfpn_depth, width=settings.gfpn_width, levels=lv_out, in_levels=lv_in)
    gen = torch.Generator().manual_seed(seed)

    def gauss(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    def conv(x: torch.Tensor, layer: Any) -> tuple[torch.Tensor, float]:
        weight_shape = layer.weight.shape  # the built layer's shape; fresh N(0, 1) weights, as MAE-DET's
        w = gauss(*weight_shape)
        k = weight_shape[-1]
        if k > 1:
            x = F.pad(x, (k // 2,) * 4, mode="circular")  # full fan-in at every output
        y = F.conv2d(x, w)
        rms = float(y.square().mean().sqrt())
        return y / rms, math.log(rms)

    feats: dict[Any, tuple[torch.Tensor, float]] = {}
    for lvl in lv_in:
        c, s = src[lvl]
        side = resolution // 2**lvl
        feats[(-1, lvl)] = (gauss(batch, c, side, side), s)  # unit RMS, carrying the backbone's log-std
    for lvl in lv_out:
        if lvl > lv_in[-1]:
            x, s = feats[(-1, lvl - 1)]
            feats[(-1, lvl)] = (x[..., ::2, ::2], s)  # max pooling as sub-sampling
    with torch.no_grad():
        for g in neck.graph:
            tag, lvl = g.node
            if tag == "out":
                x, s = feats[g.inputs[0]]
                mod = neck.outputs[str(lvl)]
                if isinstance(mod, torch.nn.Sequential):
                    x, ds = conv(x, mod[0])
                    s += ds
                feats[("out", lvl)] = (x, s)
                continue
            side = resolution // 2**lvl
            parts = []
            for key in g.inputs:
                x, s = feats[key]
                while x.shape[-1] > side:
                    x = x[..., ::2, ::2]  # finer: sub-sample
                if x.shape[-1] < side:
                    x = F.interpolate(x, size=(side, side), mode="nearest")  # coarser: nearest
                parts.append((x, s))
            m = max(s for _, s in parts)
            x = torch.cat([t * math.exp(s - m) for t, s in parts], dim=1)  # on the common scale exp(m)
            node: Any = neck.fusions[f"{tag}_{lvl}"]
            x, d1 = conv(x, node.reduce)
            x, d2 = conv(x, node.conv)
            feats[g.node] = (x, m + d1 + d2)
    scores = tuple(feats[("out", lvl)][1] + math.log(settings.neck_channels) for lvl in lv_out)
    w = _weights(weights, len(lv_out))
    return NeckScore(scores, w, math.fsum(a * b for a, b in zip(w, scores, strict=True)), "forward")


__all__ = ["NeckScore", "Node", "backbone_level_log_stds", "gfpn_nodes", "level_scores", "neck_entropy_analytic",
           "neck_entropy_forward", "propagate"]


@dataclass(frozen=True)
class NeckEntropyAnalytic:
    """The registered ``neck-entropy-analytic`` score of one structure: the closed-form neck entropy
    of the detector ``settings`` describe (zennas's defaults: GFL + GFPN); the search's co-search
    (zennas.search.neck) scores each candidate with the best neck that fits instead."""

    settings: DetectorSettings = field(default_factory=DetectorSettings)
    weights: tuple[float, ...] | None = None  # per output level; None: all 1
    forward_pass = False

    def __call__(self, structure: Structure) -> ScoreResult:
        t0 = time.perf_counter()
        r = neck_entropy_analytic(structure, self.settings, self.weights)
        return ScoreResult("neck-entropy-analytic", r.score, tuple(r.level_scores),
                           tuple(a * b for a, b in zip(r.weights, r.level_scores, strict=True)),
                           settings={"detector": self.settings.to_dict()}, seconds=time.perf_counter() - t0)


def _make(*, weights: Sequence[float] | None = None) -> NeckEntropyAnalytic:
    return NeckEntropyAnalytic(weights=tuple(float(w) for w in weights) if weights is not None else None)
