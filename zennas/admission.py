"""Admission control: estimate what a forward-pass evaluation needs *before* it runs, and refuse it
when it is over the limits.

Every forward pass zennas runs on request (a forward-pass score: ``entropy``, ``zen``, ``grad-norm``,
``synflow``; a latency measurement) has its peak memory and its compute estimated from the structure
and the settings alone, from the analytic per-block shapes: no model is built, nothing is allocated.
An evaluation over :class:`Limits` is refused with an :class:`AdmissionError` naming the field to
change (a block of the structure, or the setting that makes it big), so a request that would need
16 GB is answered in microseconds instead of being tried.

What is counted (bytes of float32, float64 for synflow; each figure an upper bound of what the
scorer keeps alive at its peak, checked against measured peaks in ``tests/core/test_admission.py``):

- weights: every conv weight the evaluation allocates (the main path for ``entropy``, whose weights
  are views of the per-seed Gaussian stream: then the stream's chunks this evaluation touches), plus
  BN parameters and buffers for the scores that build the whole model;
- activations: the working set of the largest op (its input, its output, the normalisation's output,
  a padded copy of the input for circular padding, a layout copy), times the batch; for the scores
  that backpropagate, every activation autograd saves;
- compute: multiply-accumulates of every conv the evaluation runs, times batch, repeats and passes
  (forward and backward count 1 + 2). A latency measurement is counted per timed run (the number of
  runs is bounded on its own by :attr:`Limits.latency_runs`).

The limits are the service's (``ZENNAS_MAX_SCORE_MEMORY``, ``ZENNAS_MAX_SCORE_GMACS`` and the size
bounds; see ``api/settings.py``); the library's defaults are the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

from zennas.errors import SpecError, ZenNASError
from zennas.space.kinds import BLOCK_KINDS, on_kinds_change
from zennas.space.layout import Conv, Pool
from zennas.space.layout import Op as LayoutOp
from zennas.space.structure import Block, Structure

GiB = 1 << 30
FLOAT = 4  # bytes of a float32
# What an evaluation allocates besides its tensors: allocator arenas, oneDNN's scratch and primitive
# caches, the built modules. Measured 15-30 MiB on the fixtures (tests/core/test_admission.py); the
# interpreter and torch themselves (what the process holds before the evaluation) are not counted.
OVERHEAD = 64 << 20
# Freed activations are not all returned to the system at once (glibc keeps freed heap blocks below
# its mmap threshold, up to 32 MiB each, for reuse), so the peak RSS of a chain of convs exceeds its
# largest live working set: by up to 1.4x in the measurements; the activations are counted 1.5x.
ALLOC_SLACK = 1.5


class AdmissionError(ZenNASError):
    """An evaluation (or a search that would run them) is over the service's limits."""


@dataclass(frozen=True)
class Limits:
    """What one evaluation may use, and the sizes a request may ask for."""

    memory_bytes: int = 2 * GiB  # peak memory of one forward-pass evaluation
    gmacs: float = 200.0  # compute of one evaluation, in 1e9 multiply-accumulates
    blocks: int = 64  # blocks in a structure
    units: int = 512  # repeated units in a structure (sum of ``layers``)
    channels: int = 4096  # any in / out / bottleneck width
    kernel: int = 15  # kernel size
    resolution: int = 2048  # side of a forward pass's input
    batch: int = 64  # batch of a forward-pass score or of a latency run
    repeat: int = 16  # independent inits a score averages
    threads: int = 16  # torch threads an evaluation may ask for
    latency_runs: int = 100  # timed runs of a latency measurement
    latency_warmup: int = 20  # untimed runs before them
    mutation_rounds: int = 16  # mutation rounds per candidate (space_doc.mutation.rounds)
    layer_delta: int = 16  # largest |layer change| of one mutation (space_doc.mutation.layer_deltas)
    # what a search's sampler may hold in memory for its trial history: NSGA-II is Optuna's sampler
    # over Optuna's in-memory study, which keeps every trial (the evolution and random search keep none)
    history_bytes: int = 1 * GiB

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or not math.isfinite(v):
                raise AdmissionError(f"limit {f.name} must be a positive number, got {v!r}", field=f.name)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Limits:
        known = {f.name for f in fields(cls)}
        for k in raw:
            if k not in known:
                raise AdmissionError(f"unknown limit {k!r} (known: {', '.join(sorted(known))})", field=f"limits.{k}")
        return cls(**raw)


@dataclass(frozen=True, slots=True)
class Estimate:
    """Peak memory and compute of one evaluation, with what they are made of."""

    what: str  # "entropy", "zen", "grad-norm", "synflow", "latency"
    memory_bytes: int  # peak: weights + activations
    weight_bytes: int  # parameters, buffers, gradients, the Gaussian stream
    activation_bytes: int  # the activations' peak working set (or what autograd saves, plus backward)
    gmacs: float  # compute, 1e9 multiply-accumulates
    weight_block: int  # the block with the most weights
    activation_block: int  # the block where the activations peak
    macs_block: int  # the block with the most compute


# -- the analytic shapes ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Op:
    """One op of the built backbone at a given input size (per image)."""

    block: int  # index of the block it belongs to
    kind: str  # "conv", "pool" (the shortcut's 2x2 average pool), "s2d" (space-to-depth reshape)
    main: bool  # on the main path (what entropy and zen run) or in a shortcut
    cin: int
    cout: int
    kernel: int
    stride: int
    groups: int
    h: int  # input height
    w: int  # input width
    ho: int  # output height
    wo: int  # output width
    count: int = 1  # identical ops in a row (units after a block's first are identical)

    @property
    def in_elems(self) -> int:
        return self.cin * self.h * self.w

    @property
    def out_elems(self) -> int:
        return self.cout * self.ho * self.wo

    @property
    def weights(self) -> int:
        return self.cout * (self.cin // self.groups) * self.kernel**2 if self.kind == "conv" else 0

    @property
    def macs(self) -> int:
        return self.out_elems * (self.cin // self.groups) * self.kernel**2 if self.kind == "conv" else 0

    @property
    def norm_params(self) -> int:
        return 4 * self.cout if self.kind == "conv" else 0  # BN gamma, beta, running mean, running var


def _conv_out(n: int, k: int, s: int) -> int:
    return (n + 2 * (k // 2) - k) // s + 1  # padding k // 2, as ConvNormAct


def _conv(block: int, main: bool, cin: int, cout: int, k: int, s: int, h: int, w: int, *, groups: int = 1,
          count: int = 1) -> Op:
    return Op(block, "conv", main, cin, cout, k, s, groups, h, w, _conv_out(h, k, s), _conv_out(w, k, s), count)


def block_ops(structure: Structure, height: int, width: int) -> Iterator[Op]:
    """The ops of the built backbone in forward order, per image, with their input and output sizes.

    Derived from each block kind's layout (:mod:`zennas.space.layout`), which the torch modules of
    :mod:`zennas.blocks` build: per unit its main path, then its shortcut on the unit's input (convs
    with ``'same'`` padding, the 2x2 average pool in ceil mode, space-to-depth halving the size).
    Identical stride-1 units in a row are yielded once with their ``count``."""
    h, w = height, width
    for i, b in enumerate(structure.blocks):
        ops, (h, w) = _block_ops(b, i, h, w)
        yield from ops


def _path_ops(ops: tuple[LayoutOp, ...], i: int, main: bool, h: int, w: int, n: int) -> tuple[list[Op], int, int]:
    out: list[Op] = []
    for op in ops:
        if isinstance(op, Conv):
            o = _conv(i, main, op.cin, op.cout, op.kernel, op.stride, h, w, groups=op.groups, count=n)
        elif isinstance(op, Pool):
            o = Op(i, "pool", main, op.channels, op.channels, 2, 2, 1, h, w, -(-h // 2), -(-w // 2), n)
        else:  # SpaceToDepth
            o = Op(i, "s2d", main, op.channels, 4 * op.channels, 2, 2, 1, h, w, h // 2, w // 2, n)
        out.append(o)
        h, w = o.ho, o.wo
    return out, h, w


@lru_cache(maxsize=1 << 14)  # a mutation changes one or two blocks: the others' ops are reused
def _block_ops(b: Block, i: int, h: int, w: int) -> tuple[tuple[Op, ...], tuple[int, int]]:
    kind = BLOCK_KINDS.get(b.type)
    if kind is None:
        raise SpecError(f"no layout for block type {b.type!r} (known: {', '.join(BLOCK_KINDS)})", field="type")
    ops: list[Op] = []
    for u in kind.units(b):
        runs = [(u.repeat, 1)] if u.stride == 1 else [(1, u.repeat)]  # (count, times yielded)
        for n, times in runs:
            for _ in range(times):
                main, ho, wo = _path_ops(u.main, i, True, h, w, n)
                ops += main
                if u.shortcut:
                    ops += _path_ops(u.shortcut, i, False, h, w, n)[0]
                h, w = ho, wo
    return tuple(ops), (h, w)


on_kinds_change(_block_ops.cache_clear)


# -- the estimates ------------------------------------------------------------------------------------
def _padded_elems(op: Op) -> int:
    """Elements of the circularly padded input (entropy's ``circular_pad``: tiles when the padding
    exceeds the map)."""
    p = op.kernel // 2
    if p == 0:
        return 0
    if p <= op.h and p <= op.w:
        return op.cin * (op.h + 2 * p) * (op.w + 2 * p)
    th, tw = -(-p // op.h), -(-p // op.w)
    return op.cin * (2 * th + 1) * op.h * (2 * tw + 1) * op.w


class _Acc:
    """Running maxima and sums over ops, remembering which block each maximum came from."""

    def __init__(self) -> None:
        self.best: dict[str, tuple[float, int]] = {}
        self.sums: dict[str, float] = {}
        self.per_block: dict[tuple[str, int], float] = {}

    def peak(self, key: str, value: float, block: int) -> None:
        if value > self.best.get(key, (-1.0, 0))[0]:
            self.best[key] = (value, block)

    def add(self, key: str, value: float, block: int) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + value
        self.per_block[key, block] = self.per_block.get((key, block), 0.0) + value

    def top_block(self, key: str) -> int:
        best, idx = -1.0, 0
        for (name, b), v in self.per_block.items():
            if name == key and v > best:
                best, idx = v, b
        return idx

    def value(self, key: str) -> float:
        return self.best.get(key, (0.0, 0))[0]

    def where(self, key: str) -> int:
        return self.best.get(key, (0.0, 0))[1]


def estimate(structure: Structure, what: str, *, height: int, width: int, batch: int = 1, repeat: int = 1,
             seed: int = 0, padding: str = "zeros") -> Estimate:
    """Peak memory and compute of one evaluation ``what`` of ``structure`` at ``height x width``.

    ``what``: ``entropy`` (main path only, weights from the Gaussian stream, inference mode),
    ``zen`` (main path, residuals removed, BN in train mode, two passes; the whole model is allocated),
    ``grad-norm`` / ``synflow`` (the whole model, forward and backward; synflow in float64, batch 1),
    ``latency`` (the whole model in inference mode, one timed run)."""
    main_only = what in ("entropy", "zen")
    dtype = 8 if what == "synflow" else FLOAT
    acc = _Acc()
    sizes: list[int] = []  # entropy: the main-path conv weights, in order (the stream's layout)
    in_ch = structure.in_channels
    input_elems = in_ch * height * width
    for op in block_ops(structure, height, width):
        if main_only and not op.main:
            continue
        n = op.count
        acc.add("weights", op.weights * n, op.block)
        acc.add("params", (op.weights + op.norm_params) * n, op.block)
        acc.add("macs", op.macs * n, op.block)
        if what == "entropy" and op.kind == "conv":
            sizes.extend([op.weights] * n)
        acc.peak("wcopy", op.weights, op.block)  # a reordered copy of the weight, during the conv
        # the working set of one op, per image
        if what == "entropy":
            # input, its padded copy, the output (normalised in place), a reordered copy of the input
            pad = _padded_elems(op) if padding == "circular" and op.kind == "conv" else 0
            work = 2 * op.in_elems + pad + op.out_elems
            acc.peak("act", work, op.block)
        elif what == "zen":
            # input (and a reordered copy), conv output, BN output (ReLU in place)
            acc.peak("act", 2 * op.in_elems + 2 * op.out_elems, op.block)
        elif what == "latency":
            # the unit's input (kept for the residual) or the op's, conv and BN outputs (ReLU in place)
            acc.peak("act", 2 * op.in_elems + 2 * op.out_elems, op.block)
        else:  # grad-norm, synflow: autograd keeps conv output and BN output of every op for backward
            acc.add("saved", (2 * op.out_elems + (op.in_elems if op.kind == "pool" else 0)) * n, op.block)
            acc.peak("act", 3 * op.in_elems + 3 * op.out_elems, op.block)
    macs_per_image = acc.sums.get("macs", 0.0)
    weights = int(acc.sums.get("weights", 0.0))
    params = int(acc.sums.get("params", 0.0))
    if what == "entropy":
        from zennas.score.entropy import stream_floats

        weight_bytes = FLOAT * (stream_floats(seed, repeat, sizes) + int(acc.value("wcopy")))
        act = FLOAT * batch * int(max(acc.value("act"), 2 * input_elems))
        gmacs = macs_per_image * batch * repeat / 1e9
    elif what == "zen":
        weight_bytes = FLOAT * (params + int(acc.value("wcopy")))
        # x, e and x + gamma*e, the clean output kept while the perturbed pass runs
        act = FLOAT * batch * int(acc.value("act") + 3 * input_elems + _last_out(structure, height, width))
        gmacs = macs_per_image * batch * repeat * 2 / 1e9
    elif what == "latency":
        weight_bytes = FLOAT * (params + int(acc.value("wcopy")))
        act = FLOAT * batch * int(acc.value("act") + input_elems)
        gmacs = macs_per_image * batch / 1e9
    elif what in ("grad-norm", "synflow"):
        # parameters and their gradients (and synflow's |theta|, in place); saved activations + backward
        weight_bytes = dtype * (2 * params + int(acc.value("wcopy")))
        act = dtype * batch * int(acc.sums.get("saved", 0.0) + acc.value("act") + input_elems)
        gmacs = 3 * macs_per_image * batch / 1e9
    else:
        raise AdmissionError(f"no estimate for {what!r}", field="score")
    del weights
    act = int(act * ALLOC_SLACK)
    return Estimate(what, weight_bytes + act + OVERHEAD, weight_bytes, act, gmacs, acc.top_block("weights"), acc.where("act"),
                    acc.top_block("macs"))


def _last_out(structure: Structure, height: int, width: int) -> int:
    h, w = height, width
    for op in block_ops(structure, height, width):
        if op.main:
            h, w = op.ho, op.wo
    return structure.out_channels * h * w


def estimate_scorer(scorer: Any, structure: Structure) -> Estimate | None:
    """The estimate of one evaluation of a configured scorer (None for the closed-form scores)."""
    if not getattr(scorer, "forward_pass", False):
        return None
    name = scorer.name
    return estimate(structure, name, height=scorer.height, width=scorer.width,
                    batch=getattr(scorer, "batch", 1), repeat=getattr(scorer, "repeat", 1),
                    seed=getattr(scorer, "seed", 0), padding=getattr(scorer, "padding", "zeros"))


# -- the checks --------------------------------------------------------------------------------------
def _fmt_bytes(n: float) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB / 10 else f"{n / (1 << 20):.1f} MiB"


def check_structure(structure: Structure, limits: Limits, where: str = "structure") -> None:
    """Size bounds on a structure: blocks, units, channels, kernels."""
    blocks = structure.blocks
    if len(blocks) > limits.blocks:
        raise AdmissionError(f"{where} has {len(blocks)} blocks; this service accepts at most {limits.blocks}",
                             field=f"{where}.blocks")
    units = 0
    for i, b in enumerate(blocks):
        at = f"{where}.blocks[{i}]"
        for name, v in (("in", b.in_channels), ("out", b.out_channels), ("bottleneck", b.bottleneck)):
            if v is not None and v > limits.channels:
                raise AdmissionError(f"{at}.{name} = {v} is above this service's limit of {limits.channels} channels",
                                     field=f"{at}.{name}")
        if b.kernel > limits.kernel:
            raise AdmissionError(f"{at}.kernel = {b.kernel} is above this service's limit of {limits.kernel}",
                                 field=f"{at}.kernel")
        units += b.layers
        if units > limits.units:
            raise AdmissionError(f"{where} has more than {limits.units} units (sum of layers) at block {i}; "
                                 f"this service accepts at most {limits.units}", field=f"{at}.layers")


def _bound(value: Any, limit: float, field: str, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise AdmissionError(f"{field} must be an integer >= 1, got {value!r}", field=field)
    if value > limit:
        raise AdmissionError(f"{field} = {value} is above this service's limit of {limit:g} {what}", field=field)


def over(est: Estimate, limits: Limits) -> str | None:
    """Which limit an estimate breaks ("memory", "compute"), or None: the search driver's check."""
    if est.memory_bytes > limits.memory_bytes:
        return "memory"
    if est.gmacs > limits.gmacs:
        return "compute"
    return None


def admit(est: Estimate, limits: Limits, *, block_field: Callable[[int], str],
          setting_field: Callable[[str], str | None], batch: int, repeat: int, scaled: bool) -> None:
    """Raise :class:`AdmissionError` if ``est`` is over ``limits``, naming the field to change: the
    batch or the repeat count when they are above 1, the resolution when it was raised above the
    score's default (``scaled``), else the block that weighs the most."""
    reason = over(est, limits)
    if reason is None:
        return
    if reason == "memory":
        weights_dominate = est.weight_bytes >= est.activation_bytes
        detail = (f"the estimated peak memory of this {est.what} evaluation is {_fmt_bytes(est.memory_bytes)} "
                  f"(weights {_fmt_bytes(est.weight_bytes)}, activations {_fmt_bytes(est.activation_bytes)}); "
                  f"this service's limit is {_fmt_bytes(limits.memory_bytes)} (ZENNAS_MAX_SCORE_MEMORY)")
        block = est.weight_block if weights_dominate else est.activation_block
        candidates = [] if weights_dominate else [("batch", batch), ("resolution", 2 if scaled else 1)]
    else:
        detail = (f"this {est.what} evaluation needs an estimated {est.gmacs:.1f} GMACs; this service's limit "
                  f"is {limits.gmacs:g} GMACs (ZENNAS_MAX_SCORE_GMACS)")
        block = est.macs_block
        candidates = [("batch", batch), ("repeat", repeat), ("resolution", 2 if scaled else 1)]
    for name, v in candidates:
        f = setting_field(name)
        if v > 1 and f is not None:
            raise AdmissionError(f"{detail}: lower {f}", field=f)
    f = block_field(block)
    raise AdmissionError(f"{detail}: make {f} (or the structure) smaller", field=f)


def admit_scorer(scorer: Any, structure: Structure, limits: Limits, *, structure_field: str = "structure",
                 setting_field: Callable[[str], str | None] = lambda n: f"score_settings.{n}",
                 scaled: bool = False) -> Estimate | None:
    """Check a configured scorer's settings and one evaluation of ``structure`` against ``limits``.

    ``setting_field`` names the request's field for a scorer setting (``batch``, ``repeat``,
    ``threads``, ``resolution``), or None where the request did not set it; ``scaled``: the request
    set the resolution (so it may be named as what to lower)."""
    if not getattr(scorer, "forward_pass", False):
        return None
    for name, limit, what in (("batch", limits.batch, ""), ("repeat", limits.repeat, "repeats"),
                              ("threads", limits.threads, "threads")):
        f = setting_field(name) or name
        _bound(getattr(scorer, name, None), limit, f, what)
    for name in ("height", "width"):
        v = getattr(scorer, name)
        if v > limits.resolution:
            f = setting_field(name) or setting_field("resolution") or "resolution"
            raise AdmissionError(f"{f} = {v} is above this service's limit of {limits.resolution}", field=f)
    est = estimate_scorer(scorer, structure)
    assert est is not None
    admit(est, limits, block_field=lambda i: f"{structure_field}.blocks[{i}]", setting_field=setting_field,
          batch=getattr(scorer, "batch", 1), repeat=getattr(scorer, "repeat", 1), scaled=scaled)
    return est


def check_latency_settings(latency: Any, limits: Limits, prefix: str = "latency") -> None:
    """Bounds on a latency measurement's settings: ``batch``, ``runs``, ``threads``, ``warmup``."""
    for name, limit, what in (("batch", limits.batch, ""), ("runs", limits.latency_runs, "runs"),
                              ("threads", limits.threads, "threads")):
        _bound(getattr(latency, name), limit, f"{prefix}.{name}", what)
    warmup = latency.warmup
    if isinstance(warmup, bool) or not isinstance(warmup, int) or not 0 <= warmup <= limits.latency_warmup:
        raise AdmissionError(f"{prefix}.warmup must be an integer in [0, {limits.latency_warmup}], got {warmup!r}",
                             field=f"{prefix}.warmup")


def admit_latency(structure: Structure, latency: Any, height: int, width: int, limits: Limits, *,
                  structure_field: str = "start", prefix: str = "latency") -> Estimate:
    """Check a latency measurement's settings and one timed run of ``structure`` at ``height x width``."""
    check_latency_settings(latency, limits, prefix)
    est = estimate(structure, "latency", height=height, width=width, batch=latency.batch)
    admit(est, limits, block_field=lambda i: f"{structure_field}.blocks[{i}]",
          setting_field=lambda n: f"{prefix}.batch" if n == "batch" else ("height" if n == "resolution" else None),
          batch=latency.batch, repeat=1, scaled=True)
    return est


def check_space(space: Any, limits: Limits, where: str) -> None:
    """Bounds on an inline space document's mutation rules (what its candidates can grow to)."""
    m = space.mutation
    f = f"{where}.mutation"
    for name, v, limit in (("max_channels", m.max_channels, limits.channels),
                           ("stem_max_out", m.stem_max_out, limits.channels),
                           ("channel_round", m.channel_round, limits.channels),
                           ("rounds", m.rounds, limits.mutation_rounds)):
        if v is not None and v > limit:
            raise AdmissionError(f"{f}.{name} = {v} is above this service's limit of {limit}", field=f"{f}.{name}")
    for k in m.kernels:
        if k > limits.kernel:
            raise AdmissionError(f"{f}.kernels has {k}, above this service's limit of {limits.kernel}",
                                 field=f"{f}.kernels")
    for d in m.layer_deltas:
        if abs(d) > limits.layer_delta:
            raise AdmissionError(f"{f}.layer_deltas has {d}, above this service's limit of +-{limits.layer_delta}",
                                 field=f"{f}.layer_deltas")
    for name, v in (("channel_multipliers", max(m.channel_multipliers)),):
        if v > 16:
            raise AdmissionError(f"{f}.{name} has {v:g}, above this service's limit of 16", field=f"{f}.{name}")
    check_structure(space.start, limits, f"{where}.start")


# bytes of memory one NSGA-II trial holds in Optuna's in-memory study: measured with Optuna 5.1 on the
# MAE-DET space (population 64, 2,000 vs 8,000 trials in one process each): max RSS grew 41 MB for
# 6,000 trials (6.8 KB each; tracemalloc saw 2.7 KB of Python objects), rounded up
NSGA2_TRIAL_BYTES = 8 * 1024


def admit_history(spec: Any, limits: Limits) -> None:
    """A sampler that keeps every trial in memory (NSGA-II) is refused, naming ``iterations``, when
    its history would exceed ``limits.history_bytes``."""
    if spec.sampler != "nsga2":
        return
    need = spec.iterations * NSGA2_TRIAL_BYTES
    if need > limits.history_bytes:
        most = limits.history_bytes // NSGA2_TRIAL_BYTES
        raise AdmissionError(
            f"NSGA-II keeps every trial in Optuna's in-memory study (~{NSGA2_TRIAL_BYTES // 1024} KiB each): "
            f"{spec.iterations} iterations would hold ~{_fmt_bytes(need)}, over this service's "
            f"{_fmt_bytes(limits.history_bytes)} for a search's history; use at most {most} iterations, or the "
            "evolution sampler, whose memory does not grow with the iterations", field="iterations")


def admit_spec(spec: Any, limits: Limits) -> None:
    """Check a search before it is accepted: its score settings (every score, the closed-form ones
    included), an inline space's mutation bounds, the start structure's size, and one forward-pass
    score and one latency run of the start structure against ``limits``. (Candidates the search
    mutates later are checked one by one in the driver, with ``spec.limits``.)"""
    from zennas.search.spec import make_spec_scorer

    admit_history(spec, limits)
    scorer = make_spec_scorer(spec)
    space = spec.resolve_space()
    if spec.space_doc is not None:
        check_space(space, limits, "space_doc")
    start = spec.start_structure(space)
    where = "start" if spec.start is not None else ("space_doc.start" if spec.space_doc is not None else "space")
    check_structure(start, limits, where)
    settings = dict(spec.score_settings)

    def setting_field(name: str) -> str | None:
        if name in ("height", "width", "resolution"):
            for k in (name, "resolution", "height", "width"):
                if k in settings:
                    return f"score_settings.{k}"
            return None
        if name in settings:
            return f"score_settings.{name}"
        return "score_settings.reference" if settings.get("reference") else None

    admit_scorer(scorer, start, limits, structure_field=where, setting_field=setting_field,
                 scaled=any(k in settings for k in ("resolution", "height", "width", "reference")))
    check_latency_settings(spec.latency, limits)  # bounded whether or not this search measures latency
    budgets = spec.effective_budgets(space)
    if budgets.latency_ms is not None or (spec.sampler == "nsga2" and "latency" in spec.objectives):
        admit_latency(start, spec.latency, spec.height, spec.width, limits, structure_field=where)


# -- the whole detector's export (the service bundle's ONNX option) ----------------------------------
@dataclass(frozen=True, slots=True)
class ExportEstimate:
    """What exporting a whole detector to ONNX and checking it in ONNX Runtime needs, before it runs."""

    memory_bytes: int  # peak: weights + activations + OVERHEAD
    weight_bytes: int  # the parameters, held 4 times at most (module, exported proto, re-loaded proto, session)
    activation_bytes: int  # every activation of one forward pass alive at once (the tracer's bound)
    gmacs: float  # conv MACs of one forward pass (the export and the check run a few, as a latency run)
    file_bytes: int  # the ONNX file: float32 weights + the graph


def estimate_detector_export(structure: Structure, settings: Any, height: int, width: int) -> ExportEstimate:
    """Upper bounds for ``zennas.mmdet.detector_export`` of the detector ``settings`` (a
    :class:`zennas.detector.DetectorSettings`) around ``structure`` at ``height x width``: analytic,
    from the backbone's op shapes and the neck graph (no model is built)."""
    from zennas.detector import detector_costs
    from zennas.detector.cost import level_channels
    from zennas.detector.graph import gfpn_graph

    c = detector_costs(structure, settings, height, width)
    params = int(c.total.params)
    # backbone: every op's output alive at once (tracing keeps the graph's values), and the input
    elems = float(structure.in_channels * height * width)
    for op in block_ops(structure, height, width):
        elems += 2 * op.out_elems * op.count  # the conv's output and its norm's (activations in place)
    areas = {lv: math.ceil(height / 2**lv) * math.ceil(width / 2**lv) for lv in settings.out_levels}
    ch = settings.neck_channels
    if settings.neck == "gfpn":
        inner = settings.gfpn_inner
        widest = max(inner, *level_channels(structure, settings.in_levels))  # any input of a fusion node
        for node in gfpn_graph(settings.gfpn_depth, settings.out_levels):
            # the resampled inputs and their concatenation, then 1x1 and 3x3 convs with norm and activation
            elems += areas[node.node[1]] * (2 * len(node.inputs) * widest + 4 * max(inner, ch))
    else:
        elems += sum(3 * 2 * ch * a for a in areas.values())  # lateral and output convs, with extras
    # dense head per level: two towers of 4 conv + norm + activation, and the outputs
    elems += sum(a * (2 * 4 * 3 * ch + settings.num_classes + 4 * 17 + 1) for a in areas.values())
    act = int(FLOAT * elems * ALLOC_SLACK)
    weights = 4 * FLOAT * params
    return ExportEstimate(weights + act + OVERHEAD, weights, act, c.total.conv_macs / 1e9,
                          FLOAT * params + (1 << 20))


def admit_detector_export(est: ExportEstimate, limits: Limits, field: str = "onnx") -> None:
    """Refuse an export whose estimate is over the service's evaluation limits (the memory of one
    evaluation, the compute of one forward pass), naming ``field``."""
    if est.memory_bytes > limits.memory_bytes:
        raise AdmissionError(
            f"exporting this detector to ONNX needs an estimated {_fmt_bytes(est.memory_bytes)} (weights "
            f"{_fmt_bytes(est.weight_bytes)}, activations {_fmt_bytes(est.activation_bytes)}); this service's "
            f"limit is {_fmt_bytes(limits.memory_bytes)} (ZENNAS_MAX_SCORE_MEMORY)", field=field)
    if est.gmacs > limits.gmacs:
        raise AdmissionError(
            f"one forward pass of this detector needs an estimated {est.gmacs:.1f} GMACs; this service's limit "
            f"is {limits.gmacs:g} GMACs (ZENNAS_MAX_SCORE_GMACS)", field=field)


class CandidateCheck:
    """The search driver's per-candidate check: which limit a candidate's forward pass (its score,
    its latency run) would break, or None. Cheap: analytic shapes, no model."""

    def __init__(self, spec: Any, limits: Limits) -> None:
        from zennas.search.spec import make_spec_scorer

        self.limits = limits
        scorer = make_spec_scorer(spec)
        self.scorer = scorer if getattr(scorer, "forward_pass", False) else None
        self.latency = spec.latency
        self.height, self.width = spec.height, spec.width

    def __call__(self, structure: Structure, *, score: bool, latency: bool) -> str | None:
        try:
            check_structure(structure, self.limits)
        except AdmissionError:
            return "size"
        if score and self.scorer is not None:
            est = estimate_scorer(self.scorer, structure)
            reason = over(est, self.limits) if est is not None else None
            if reason:
                return reason
        if latency:
            return over(estimate(structure, "latency", height=self.height, width=self.width,
                                 batch=self.latency.batch), self.limits)
        return None
