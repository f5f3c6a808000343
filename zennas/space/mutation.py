"""The search space's mutation rules: how a candidate is derived from a parent.

MAE-DET / TinyNAS evolution, as ``search_spaces/*.yaml`` parameterize it. A candidate is the parent
after ``rounds`` rounds; each round picks one block and changes one field of it:

- stem (``stem_fields``): out -> min(stem_max_out, round(out * m)), then <= the next block's out;
- other blocks (``block_fields``): ``out`` (clamped to [in, 4*in], <= next.out, and raised to
  round(next.out / 4)), ``kernel`` (a different choice), ``bottleneck`` (<= out) or ``layers``
  (+delta, >= 1, block 1 at most ``first_block_max_layers``, the others at most
  budget_layers // convs_per_unit // (n_blocks - 2)); after any change a bottleneck below
  out / 10 becomes round(out / 10).

After the change each block's ``in`` is re-chained to the previous ``out`` and any kernel with
k * 1.5 > its input feature-map size shrinks by 2. A round whose result breaks the layer budget is
retried with another block (up to n_blocks tries). Channels round to the nearest multiple of 8
(at least 8) and never exceed ``max_channels``.

Unlike the reference, which draws the block with an exclusive upper bound and so never mutates the
last block, ``pick: any`` draws every block (``pick: reference`` keeps the quirk for comparison).
A mutation touches one or two blocks; everything else is shared with the parent, so costs and
scores are re-evaluated incrementally from per-block caches.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from zennas.space.kinds import BLOCK_KINDS
from zennas.space.space import SearchSpace
from zennas.space.structure import Block, Structure

T = TypeVar("T")


def smart_round(x: float, base: int = 8) -> int:
    """Nearest multiple of ``base`` (Python's round, ties to even, as the reference), at least ``base``."""
    return max(base, round(x / base) * base)


def _block(fields: tuple[str, int, int, int, int, int, int | None]) -> Block:
    return tuple.__new__(Block, fields)


def _chained(b: Block, in_channels: int) -> Block:
    """``b`` re-chained to a new input width (the previous block's new ``out``)."""
    return _block((b.type, in_channels, b.out_channels, b.stride, b.kernel, b.layers, b.bottleneck))


def _pick(rng: random.Random, seq: Sequence[T]) -> T:
    """Uniform choice with one ``random()`` draw (``Random.choice`` costs several calls)."""
    return seq[int(rng.random() * len(seq))]


@dataclass(frozen=True)
class _Plan:
    n: int
    res_in: tuple[float, ...]  # each block's input feature-map size (min of H, W)
    shrink_needed: bool


class Mutator:
    """Mutates structures of one space under one layer budget and input size. Stateless per call:
    all randomness comes from the ``rng`` passed in, so a candidate is a function of (parent, rng)."""

    def __init__(self, space: SearchSpace, *, budget_layers: int | None = None, height: int | None = None,
                 width: int | None = None) -> None:
        self.space = space
        self.rules = space.mutation
        self.budget_layers = budget_layers
        h = height or space.budgets.height
        w = width or space.budgets.width
        res = float(min(h, w))
        res_in: list[float] = []
        for b in space.start.blocks:
            res_in.append(res)
            res /= b.stride
        max_k = max(self.rules.kernels + tuple(b.kernel for b in space.start.blocks))
        self._plan = _Plan(len(space.start.blocks), tuple(res_in),
                           any(max_k * self.rules.kernel_shrink_ratio > r for r in res_in))
        n = self._plan.n
        self._layer_cap: dict[str, int | None] = {}
        for name, kind in BLOCK_KINDS.items():
            cap = None
            if budget_layers is not None and n > 2:
                cap = max(1, budget_layers // kind.convs_per_unit // (n - 2))
            self._layer_cap[name] = cap
        # the fields a mutation may change, per block type
        self._fields: dict[str, tuple[str, ...]] = {}
        for name, kind in BLOCK_KINDS.items():
            f = self.rules.block_fields
            if not kind.has_bottleneck:
                f = tuple(x for x in f if x != "bottleneck")
            if kind.max_layers == 1:
                f = tuple(x for x in f if x != "layers")
            self._fields[name] = f
        self._kernel_choices: dict[int, tuple[int, ...]] = {}
        self._fine_fields = {name: tuple(x for x in f if x in ("out", "bottleneck")) or f
                             for name, f in self._fields.items()}
        self._stems = frozenset(name for name, kind in BLOCK_KINDS.items() if kind.stem)
        self._max_layers = {name: kind.max_layers for name, kind in BLOCK_KINDS.items()}
        self._convs_per_unit = {name: kind.convs_per_unit for name, kind in BLOCK_KINDS.items()}  # the kinds now

        self._layer_choices: dict[int, tuple[int, ...]] = {}  # current layers -> the values a change may give
        self._parent_layers: dict[Structure, int] = {}

    # -- one field of one block ---------------------------------------------------------------
    def mutate_block(self, blocks: tuple[Block, ...], idx: int, rng: random.Random,
                     fine: bool = False) -> Block | None:
        """Block ``idx`` with one field changed (its ``in`` not yet re-chained), or None if it cannot
        change (a stem standing last). Hot path: ``_pick`` is inlined (same draws)."""
        typ, cin, out, stride, k, layers, btn = blocks[idx]
        nxt = blocks[idx + 1] if idx + 1 < len(blocks) else None
        rand = rng.random
        r = self.rules
        mults = r.channel_multipliers
        base = r.channel_round
        if idx == 0 and typ in self._stems:
            if nxt is None:
                return None  # the last block of the list is never a stem mutation
            sf = r.stem_fields
            if sf[int(rand() * len(sf))] == "out":
                out = min(r.max_channels, smart_round(out * mults[int(rand() * len(mults))], base))
                if r.stem_max_out is not None and out > r.stem_max_out:
                    out = r.stem_max_out
                if r.out_max_next and out > nxt.out_channels:
                    out = nxt.out_channels
                return _block((typ, cin, out, stride, k, layers, btn))
            return _block((typ, cin, out, stride, self._kernel(k, rng), layers, btn))

        fields = self._fine_fields[typ] if fine else self._fields[typ]
        what = fields[int(rand() * len(fields))]
        if what == "out":
            out = min(r.max_channels, smart_round(out * mults[int(rand() * len(mults))], base))
            if r.out_max_in_ratio is not None:
                out = min(out, int(r.out_max_in_ratio * cin))
            if r.out_min_in_ratio is not None:
                out = max(out, math.ceil(r.out_min_in_ratio * cin))
            if nxt is not None:
                if r.out_max_next and out > nxt.out_channels:
                    out = nxt.out_channels
                if r.next_out_divisor is not None:
                    floor = smart_round(nxt.out_channels / r.next_out_divisor, base)
                    if out < floor:
                        out = floor
        elif what == "kernel":
            k = self._kernel(k, rng)
        elif what == "bottleneck" and btn is not None:
            btn = min(int(out * r.btn_max_out_ratio),
                      min(r.max_channels, smart_round(btn * mults[int(rand() * len(mults))], base)))
        elif what == "layers":
            choices = self._layer_choices.get(layers)
            if choices is None:
                choices = self._layer_choices[layers] = tuple(
                    v for v in (max(1, layers + d) for d in r.layer_deltas) if v != layers)
            new = choices[int(rand() * len(choices))] if choices else layers
            if idx == 1 and r.first_block_max_layers is not None:
                new = min(r.first_block_max_layers, new)
            else:
                cap = self._layer_cap[typ]
                if cap is not None:
                    new = min(cap, new)
            kmax = self._max_layers[typ]
            if kmax is not None:
                new = min(kmax, new)
            layers = new
        if btn is not None and r.btn_min_divisor is not None and btn < out / r.btn_min_divisor:
            btn = smart_round(out / r.btn_min_divisor, base)
        return _block((typ, cin, out, stride, k, layers, btn))

    def _kernel(self, k: int, rng: random.Random) -> int:
        choices = self._kernel_choices.get(k)
        if choices is None:
            choices = self._kernel_choices[k] = tuple(c for c in self.rules.kernels if c != k)
        return _pick(rng, choices) if choices else k

    # -- a whole candidate ----------------------------------------------------------------------
    def _layers_of(self, s: Structure) -> int:
        """Main-path layers of a parent (cached: a population member is mutated many times)."""
        n = self._parent_layers.get(s)
        if n is None:
            if len(self._parent_layers) >= 1 << 12:
                self._parent_layers.clear()  # bounded: members come and go
            n = self._parent_layers[s] = sum([self._convs_per_unit[b.type] * b.layers for b in s.blocks])
        return n

    def _shrink(self, b: Block, idx: int) -> Block:
        k = b.kernel
        res = self._plan.res_in[idx]
        while k > 1 and k * self.rules.kernel_shrink_ratio > res:
            k -= 2
        return b if k == b.kernel else b._replace(kernel=k)

    def mutate(self, parent: Structure, rng: random.Random, *, fine: bool = False) -> Structure:
        """A child of ``parent``: ``rounds`` rounds, each changing one field of one block (a round that
        breaks the layer budget is retried with another block, up to n tries). ``fine``
        (coarse-to-fine's second phase, TinyNAS's "minor mutation") changes only channel widths (out,
        bottleneck), keeping depths and kernels. All randomness comes from ``rng``.

        The child is valid by construction (channels re-chained, strides and types kept, fields within
        the kinds' bounds), so it is built without re-validation; tests/core/test_mutation.py
        re-validates every child of long walks in every shipped space."""
        blocks = parent.blocks
        n = len(blocks)
        last_pick = n - 1 if self.rules.pick == "reference" else n
        cpu = self._convs_per_unit
        budget = self.budget_layers
        layers = self._layers_of(parent) if budget is not None else 0
        shrink = self._plan.shrink_needed
        mutate_block = self.mutate_block
        for _ in range(self.rules.rounds):
            candidate = blocks
            cand_layers = layers
            for _try in range(n):
                idx = int(rng.random() * last_pick)
                new = mutate_block(blocks, idx, rng, fine)
                if new is None:
                    continue
                if idx + 1 < n:
                    nxt = blocks[idx + 1]
                    if nxt.in_channels != new.out_channels:
                        nxt = _chained(nxt, new.out_channels)
                    candidate = (*blocks[:idx], new, nxt, *blocks[idx + 2:])
                else:
                    candidate = (*blocks[:idx], new)
                if shrink:
                    candidate = tuple([self._shrink(b, i) for i, b in enumerate(candidate)])
                old = blocks[idx]
                cand_layers = layers - cpu[old.type] * old.layers + cpu[new.type] * new.layers
                if budget is None or cand_layers <= budget:
                    break
            blocks, layers = candidate, cand_layers
        return Structure.trusted(blocks)
