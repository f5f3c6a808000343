"""``entropy``: MAE-DET's forward-pass multi-scale differential entropy (arXiv 2111.13336).

The backbone is run at Gaussian init with BN and ReLU skipped and residuals ignored: only the
main-path convolutions, in order. Weights are N(0, 1) (init_std), the input N(0, 1). Each conv's
output is divided by its own std and the log of that std is accumulated; for a Gaussian feature the
differential entropy is log std plus a constant, so the accumulated log-std up to the end of a stage
is the stage's entropy (the paper's Eq. 5 up to constants). Stage i scores
``S_i = accumulated log std + log(C_i)`` and the total is ``sum_i w_i * S_i`` with detection weights
[0, 0, 1, 1, 6]: the deepest (C5) features carry the most weight, as in the paper.

The reference settings (480x480, batch 32, repeat 4, zero padding) cost ~40-90 s per backbone on
one thread. The score is a log-std ratio: zero padding shrinks the std of outputs near a border, and
at small feature maps that bias matters far more than sample count (−1.2 % at 96x96). The default
therefore pads circularly, which gives every output its full fan-in and makes the score nearly
independent of the resolution, and runs one image at 128x128 (one repeat, channels_last, inference
mode), with the model built on the meta device and its main-path weights taken as views of a cached
per-seed Gaussian stream: within 0.3 % of the reference settings on the fixtures at several hundred
times their speed (BENCHMARKS.md). ``padding="zeros"`` at 480 reproduces the reference most closely;
``reference=True`` restores the reference settings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from zennas.blocks import build_backbone
from zennas.cost import check_size
from zennas.errors import SpecError
from zennas.score._torch import torch_threads
from zennas.score.base import (
    DETECTION_WEIGHTS,
    ScoreResult,
    check_counts,
    check_positive,
    check_seed,
    check_threads,
    check_weights,
    weigh,
)
from zennas.space.structure import Structure

_CHUNK = 1 << 24  # floats per chunk of a seed's Gaussian stream (64 MiB)
_STREAMS: dict[int, list[torch.Tensor]] = {}  # seed -> its chunks so far; most recently used seed last
STREAM_CACHE_BYTES = 512 << 20  # what the cache keeps between evaluations (see trim_streams)


def _chunk(seed: int, i: int) -> torch.Tensor:
    chunks = _STREAMS.pop(seed, [])
    _STREAMS[seed] = chunks  # most recently used last
    while len(chunks) <= i:  # chunk j depends only on (seed, j): deterministic whatever is asked first
        g = torch.Generator().manual_seed((seed << 20) ^ len(chunks))
        chunks.append(torch.randn(_CHUNK, generator=g))
        trim_streams(keep=seed)
    return chunks[i]


def stream_cache_bytes() -> int:
    return sum(c.numel() * c.element_size() for chunks in _STREAMS.values() for c in chunks)


def trim_streams(limit: int | None = None, *, keep: int | None = None) -> None:
    """Bound the stream cache to ``limit`` bytes (default :data:`STREAM_CACHE_BYTES`): the least
    recently used seeds go first, then the last chunks of the most recent one. ``keep`` (the seed
    being drawn) loses nothing while its evaluation runs; :meth:`Entropy.__call__` trims afterwards.
    A dropped chunk is drawn again when needed, identical (it depends only on seed and index)."""
    limit = STREAM_CACHE_BYTES if limit is None else limit
    for seed in list(_STREAMS):
        if stream_cache_bytes() <= limit:
            return
        if seed != keep:
            del _STREAMS[seed]
    if keep is not None:
        return
    for chunks in _STREAMS.values():
        while chunks and stream_cache_bytes() > limit:
            chunks.pop()


def _layout(repeat: int, sizes: list[int]) -> Iterator[tuple[int, int] | None]:
    """Where each weight of repeat ``repeat`` lies in the stream: (chunk, offset), or None for a weight
    larger than a chunk (drawn on its own). The one rule both :func:`gaussian_views` and
    :func:`stream_floats` (the admission estimate) follow."""
    total = sum(min(n, _CHUNK) for n in sizes)
    pos = repeat * total
    for n in sizes:
        if n > _CHUNK:
            yield None
            continue
        i, off = divmod(pos, _CHUNK)
        if off + n > _CHUNK:  # never straddle chunks
            i, off = i + 1, 0
        yield i, off
        pos = i * _CHUNK + off + n


def stream_floats(seed: int, repeat: int, sizes: list[int]) -> int:
    """Floats an evaluation with ``repeat`` repeats of these main-path weights holds at its peak: the
    stream's chunks up to the last one it touches, plus the weights drawn on their own."""
    last = -1
    for r in range(repeat):
        for at in _layout(r, sizes):
            if at is not None:
                last = max(last, at[0])
    big = sum(n for n in sizes if n > _CHUNK)  # drawn per repeat; the next repeat's are drawn before
    return (last + 1) * _CHUNK + big * (2 if repeat > 1 else 1)  # the previous ones are released


def gaussian_views(seed: int, repeat: int, sizes: list[int]) -> list[torch.Tensor]:
    """Independent N(0, 1) tensors of the given sizes, as views into a cached per-seed stream.

    Drawing ~20M Gaussians for every candidate cost more than its forward pass; a stream generated
    once per process and seed, sliced without copying, costs nothing per candidate. Repeat ``r`` uses
    a different part of the stream; within a repeat no two weights overlap. (Different candidates
    share the stream: common random numbers, which only reduces noise when comparing them.)
    """
    out: list[torch.Tensor] = []
    for n, at in zip(sizes, _layout(repeat, sizes), strict=True):
        if at is None:  # a single weight larger than a chunk: draw it on its own
            g = torch.Generator().manual_seed((seed << 20) ^ (1 << 19) ^ repeat ^ (n << 4))
            out.append(torch.randn(n, generator=g))
            continue
        i, off = at
        out.append(_chunk(seed, i)[off : off + n])
    return out


def circular_pad(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    """Pad the last two dims periodically (the map tiled around itself), also when the padding
    exceeds the map, where ``F.pad(mode="circular")`` refuses: a 2x2 map under a 7x7 conv wraps twice."""
    h, w = x.shape[-2], x.shape[-1]
    if ph <= h and pw <= w:
        return F.pad(x, (pw, pw, ph, ph), mode="circular")
    th, tw = -(-ph // h), -(-pw // w)  # whole tiles needed on each side
    t = x.repeat(1, 1, 2 * th + 1, 2 * tw + 1)
    return t[..., th * h - ph : th * h + h + ph, tw * w - pw : tw * w + w + pw]


REFERENCE_SETTINGS: dict[str, Any] = {"height": 480, "width": 480, "batch": 32, "repeat": 4, "padding": "zeros"}
FAST_SETTINGS: dict[str, Any] = {"height": 128, "width": 128, "batch": 1, "repeat": 1, "padding": "circular"}
PADDINGS = ("zeros", "circular")


@dataclass(frozen=True)
class Entropy:
    height: int = FAST_SETTINGS["height"]  # forward-pass input height (its own setting, not the budget's)
    width: int = FAST_SETTINGS["width"]
    batch: int = FAST_SETTINGS["batch"]
    repeat: int = FAST_SETTINGS["repeat"]  # independent inits averaged
    seed: int = 0
    init_std: float = 1.0
    stage_weights: tuple[float, ...] = DETECTION_WEIGHTS
    channels_last: bool = True
    padding: str = FAST_SETTINGS["padding"]  # how convs pad: "zeros" (the reference) or "circular"
    threads: int | None = None  # torch intra-op threads; None leaves the process setting
    name: str = "entropy"
    forward_pass: bool = True

    def __post_init__(self) -> None:
        check_size(self.height, self.width)
        check_counts(self, "batch", "repeat")
        check_seed(self)
        check_threads(self)
        check_positive(self, "init_std")
        if not isinstance(self.channels_last, bool):
            raise SpecError(f"channels_last must be true or false, got {self.channels_last!r}", field="channels_last")
        if self.padding not in PADDINGS:
            raise SpecError(f"padding must be one of {', '.join(PADDINGS)}, got {self.padding!r}", field="padding")
        object.__setattr__(self, "stage_weights", check_weights(self.stage_weights))

    def settings(self) -> dict[str, Any]:
        return {"height": self.height, "width": self.width, "batch": self.batch, "repeat": self.repeat,
                "seed": self.seed, "init_std": self.init_std, "stage_weights": list(self.stage_weights),
                "channels_last": self.channels_last, "padding": self.padding, "bn": "skipped", "relu": "skipped",
                "residual": "ignored"}

    def __call__(self, structure: Structure) -> ScoreResult:
        try:
            return self._run(structure)
        finally:
            trim_streams()  # what this evaluation drew beyond the cache's bound is released

    def _run(self, structure: Structure) -> ScoreResult:
        t0 = time.perf_counter()
        with torch_threads(self.threads), torch.inference_mode():
            with torch.device("meta"):  # no allocation, no default init: only main-path weights get values
                model = build_backbone(structure)
            # The main path, block by block: [(ops of unit 0, ops of unit 1, ...), ...]
            blocks = [[u.main_ops() for u in blk.units] for blk in model.block_modules()]  # type: ignore[operator]
            stage_ends = {s.end_block: s.channels for s in model.stages}
            convs = [op for blk in blocks for unit in blk for op in unit if isinstance(op, nn.Conv2d)]
            circular = self.padding == "circular"
            gen = torch.Generator().manual_seed(self.seed)
            fmt = torch.channels_last if self.channels_last else torch.contiguous_format
            per_repeat: list[float] = []
            stage_sum = [0.0] * len(model.stages)
            sizes = [c.weight.numel() for c in convs]
            for r in range(self.repeat):
                # N(0, init_std) weights, fresh for every repeat: views into this seed's Gaussian stream
                for c, w in zip(convs, gaussian_views(self.seed, r, sizes), strict=True):
                    w = w.view(c.weight.shape)
                    c.weight = nn.Parameter(w if self.init_std == 1.0 else w * self.init_std, requires_grad=False)
                x = torch.randn(self.batch, structure.in_channels, self.height, self.width, generator=gen)
                x = x.contiguous(memory_format=fmt)
                acc = 0.0
                values: list[float] = []
                for bi, blk in enumerate(blocks):
                    for unit in blk:
                        for op in unit:
                            if circular and isinstance(op, nn.Conv2d) and op.padding != (0, 0):
                                ph, pw = (int(p) for p in op.padding)  # a tuple of ints for a numeric padding
                                x = F.conv2d(circular_pad(x, ph, pw), op.weight, None,
                                             op.stride, 0, op.dilation, op.groups)
                            else:
                                x = op(x)  # type: ignore[operator]
                            if isinstance(op, nn.Conv2d):
                                std = x.std()
                                x.div_(std)  # each conv output normalized by its own std
                                acc += math.log(float(std))
                    if bi in stage_ends:
                        values.append(acc + math.log(stage_ends[bi]))
                weighted = weigh(values, self.stage_weights, len(values))
                per_repeat.append(math.fsum(weighted))
                stage_sum = [a + v for a, v in zip(stage_sum, values, strict=True)]
        vals = tuple(v / self.repeat for v in stage_sum)
        return ScoreResult(
            self.name,
            math.fsum(per_repeat) / self.repeat,
            vals,
            weigh(vals, self.stage_weights, len(vals)),
            tuple(per_repeat),
            (self.height, self.width),
            self.settings(),
            time.perf_counter() - t0,
        )


def _first(*values: Any) -> Any:
    """The first value given (not None); 0 is a value, and is then rejected by validation."""
    return next(v for v in values if v is not None)


def _make(*, resolution: int | None = None, height: int | None = None, width: int | None = None,
          batch: int | None = None, repeat: int | None = None, seed: int = 0, init_std: float = 1.0,
          stage_weights: Sequence[float] = DETECTION_WEIGHTS, reference: bool = False,
          channels_last: bool = True, padding: str | None = None, threads: int | None = None) -> Entropy:
    if not isinstance(reference, bool):
        raise SpecError(f"reference must be true or false, got {reference!r}", field="reference")
    base = REFERENCE_SETTINGS if reference else FAST_SETTINGS
    h = _first(height, resolution, base["height"])
    w = _first(width, resolution, base["width"])
    return Entropy(height=h, width=w, batch=_first(batch, base["batch"]), repeat=_first(repeat, base["repeat"]),
                   seed=seed, init_std=init_std, stage_weights=check_weights(stage_weights),
                   channels_last=channels_last, padding=_first(padding, base["padding"]), threads=threads)
