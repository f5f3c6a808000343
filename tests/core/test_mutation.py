"""Mutation: deterministic given the rng, always a valid structure, and each rule of search.json holds."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path

import pytest

from zennas.cost import costs
from zennas.space import (
    Block,
    Mutator,
    SearchSpace,
    Structure,
    check_structure_in_space,
    from_tinynas,
    get_space,
    smart_round,
    space_names,
)
from zennas.space.kinds import BLOCK_KINDS

DATA = Path(__file__).parent.parent / "data"
SEARCH = json.loads((DATA / "search.json").read_text())
STRUCTURES = json.loads((DATA / "structures.json").read_text())["structures"]
K1 = get_space("detection-k1kxk1")
BUDGET = SEARCH["budgets"]["layers"]  # 91


def _one_round(space: SearchSpace, **rules: object) -> SearchSpace:
    return dataclasses.replace(space, mutation=dataclasses.replace(space.mutation, rounds=1, **rules))


def _walk(
    mutator: Mutator, start: Structure, rng: random.Random, steps: int, budget: int | None = None
) -> list[tuple[Structure, Structure]]:
    """(parent, child) pairs of a random walk that keeps children within the layer budget."""
    pairs = []
    parent = start
    for _ in range(steps):
        child = mutator.mutate(parent, rng)
        pairs.append((parent, child))
        if budget is None or costs(child).layers <= budget:
            parent = child
    return pairs


def _revalidate(s: Structure) -> Structure:
    return Structure.from_dict(s.to_dict())  # the full validation that Structure.trusted skips


@pytest.fixture(scope="module")
def k1_walk() -> list[tuple[Structure, Structure]]:
    """One round per candidate, so each child differs from its parent in one field of one block."""
    m = Mutator(_one_round(K1), budget_layers=BUDGET)
    return _walk(m, K1.start, random.Random(1234), 1500, BUDGET)


def test_smart_round() -> None:
    assert smart_round(3) == 8  # at least the base
    assert smart_round(12) == 16 and smart_round(11.9) == 8
    assert smart_round(100) == 96  # round half to even, as the reference (12.5 -> 12)
    assert smart_round(204.8) == 208
    assert smart_round(20, 4) == 20


# -- determinism -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", space_names())
def test_same_seed_same_sequence(name: str) -> None:
    sp = get_space(name)
    m = Mutator(sp, budget_layers=sp.budgets.layers)
    a = [c for _, c in _walk(m, sp.start, random.Random(7), 60, sp.budgets.layers)]
    b = [c for _, c in _walk(m, sp.start, random.Random(7), 60, sp.budgets.layers)]
    c = [c for _, c in _walk(m, sp.start, random.Random(8), 60, sp.budgets.layers)]
    assert a == b
    assert [x.to_json() for x in a] == [x.to_json() for x in b]
    assert a != c
    assert len(set(a)) > 10  # it does explore


def test_mutate_is_a_function_of_parent_and_rng_state() -> None:
    m = Mutator(K1, budget_layers=BUDGET)
    rng = random.Random(3)
    state = rng.getstate()
    first = m.mutate(K1.start, rng)
    rng.setstate(state)
    assert m.mutate(K1.start, rng) == first
    assert K1.start == get_space("detection-k1kxk1").start  # the parent is untouched


# -- validity --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", space_names())
def test_children_are_valid_structures_of_the_space(name: str) -> None:
    sp = get_space(name)
    m = Mutator(sp, budget_layers=sp.budgets.layers)
    for parent, child in _walk(m, sp.start, random.Random(11), 300, sp.budgets.layers):
        again = _revalidate(child)
        assert again == child and hash(again) == hash(child)
        check_structure_in_space(sp, child)
        assert len(child) == len(parent)
        for prev, b in zip(child.blocks, child.blocks[1:], strict=False):
            assert b.in_channels == prev.out_channels  # chained
        for p, c in zip(parent.blocks, child.blocks, strict=True):
            assert (c.type, c.stride) == (p.type, p.stride)  # types and strides never mutate
        assert child.in_channels == 3
        for b in child.blocks:
            assert b.out_channels <= sp.mutation.max_channels or b.out_channels == 2048
            if b.bottleneck is not None:
                assert b.bottleneck <= sp.mutation.max_channels


@pytest.mark.parametrize("name", space_names())
def test_layer_budget_respected(name: str) -> None:
    sp = get_space(name)
    budget = sp.budgets.layers
    assert budget is not None
    m = Mutator(sp, budget_layers=budget)
    for parent, child in _walk(m, sp.start, random.Random(5), 400, budget):
        assert costs(parent).layers <= budget
        assert costs(child).layers <= budget


def test_layer_budget_tight() -> None:
    # with a budget just above the start, every layer increase that breaks it is retried elsewhere
    budget = costs(K1.start).layers + 6
    m = Mutator(K1, budget_layers=budget)
    for _, child in _walk(m, K1.start, random.Random(9), 300, budget):
        assert costs(child).layers <= budget


def test_no_budget_is_unbounded_but_capped_per_block() -> None:
    m = Mutator(K1)  # no budget: only block 1's cap
    for _, child in _walk(m, K1.start, random.Random(2), 300):
        assert child.blocks[1].layers <= 3


# -- the rules of search.json, each on the field it constrains -------------------------------
def _changed(parent: Structure, child: Structure) -> list[tuple[int, str]]:
    out = []
    for i, (p, c) in enumerate(zip(parent.blocks, child.blocks, strict=True)):
        for f, attr in (
            ("out", "out_channels"),
            ("kernel", "kernel"),
            ("bottleneck", "bottleneck"),
            ("layers", "layers"),
        ):
            if getattr(p, attr) != getattr(c, attr):
                out.append((i, f))
    return out


def test_one_round_changes_one_block(k1_walk: list[tuple[Structure, Structure]]) -> None:
    for parent, child in k1_walk:
        changed = _changed(parent, child)
        assert len({i for i, _ in changed}) <= 1, changed
        if changed:
            i = changed[0][0]
            for j, (p, c) in enumerate(zip(parent.blocks, child.blocks, strict=True)):
                if j not in (i, i + 1):
                    assert p == c  # everything else is shared with the parent
                elif j == i + 1:
                    assert c._replace(in_channels=p.in_channels) == p  # only re-chained


def test_rules_of_the_mutated_field(k1_walk: list[tuple[Structure, Structure]]) -> None:
    seen: set[str] = set()
    cap = BUDGET // 3 // (len(K1.start) - 2)  # 91 // 3 // 4 = 7
    for parent, child in k1_walk:
        for i, what in _changed(parent, child):
            b, p = child.blocks[i], parent.blocks[i]
            nxt = child.blocks[i + 1] if i + 1 < len(child) else None
            if i == 0:  # stem: only out
                seen.add("stem")
                assert what == "out"
                assert b.out_channels <= 32 and b.out_channels % 8 == 0
                assert nxt is not None and b.out_channels <= nxt.out_channels
                continue
            seen.add(what)
            if what == "out":
                assert b.out_channels % 8 == 0
                assert b.in_channels <= b.out_channels <= 2048
                if nxt is not None:
                    floor = smart_round(nxt.out_channels / 4)
                    assert b.out_channels <= nxt.out_channels
                    assert b.out_channels >= floor
                    assert b.out_channels <= max(4 * b.in_channels, floor)
                else:
                    assert b.out_channels <= 4 * b.in_channels
            elif what == "kernel":
                assert b.kernel in (3, 5) and b.kernel != p.kernel
            elif what == "bottleneck":
                assert b.bottleneck is not None
                assert b.bottleneck <= max(b.out_channels, smart_round(b.out_channels / 10))
            elif what == "layers":
                assert b.layers >= 1 and b.layers != p.layers
                assert b.layers <= (3 if i == 1 else cap)
            if what in ("out", "bottleneck") and b.bottleneck is not None:
                assert b.bottleneck >= smart_round(b.out_channels / 10)  # btn >= round8(out / 10)
    assert seen == {"stem", "out", "kernel", "bottleneck", "layers"}  # every rule was exercised


def test_stem_kernel_mutation_when_allowed() -> None:
    sp = _one_round(K1, stem_fields=("out", "kernel"))
    m = Mutator(sp, budget_layers=BUDGET)
    kernels = {c.blocks[0].kernel for _, c in _walk(m, sp.start, random.Random(4), 400, BUDGET)}
    assert kernels == {3, 5}


def test_dw_space_expansion_rules() -> None:
    sp = _one_round(get_space("detection-dw"))
    m = Mutator(sp, budget_layers=sp.budgets.layers)
    for parent, child in _walk(m, sp.start, random.Random(21), 400, sp.budgets.layers):
        for i, what in _changed(parent, child):
            b = child.blocks[i]
            if i and what in ("out", "bottleneck"):
                assert b.bottleneck is not None
                assert b.bottleneck >= b.out_channels  # btn_min_divisor 1: expansion >= 1
            if i and what == "kernel":
                assert b.kernel in (3, 5, 7)


def test_s2d_space_never_gets_a_bottleneck() -> None:
    sp = get_space("giraffe-s2d")
    m = Mutator(sp, budget_layers=sp.budgets.layers)
    for _, child in _walk(m, sp.start, random.Random(8), 300, sp.budgets.layers):
        assert all(b.bottleneck is None for b in child.blocks)
        assert all(b.kernel in (1, 3, 5) for b in child.blocks)
        assert child.blocks[1].layers <= 3


# -- which block is picked -------------------------------------------------------------------
def _last_block_mutations(space: SearchSpace, seed: int, steps: int) -> int:
    m = Mutator(_one_round(space), budget_layers=BUDGET)
    n = len(space.start)
    return sum(
        1
        for p, c in _walk(m, space.start, random.Random(seed), steps, BUDGET)
        if any(i == n - 1 for i, _ in _changed(p, c))
    )


def test_pick_any_reaches_the_last_block() -> None:
    assert _last_block_mutations(K1, 0, 400) > 0


def test_pick_reference_never_mutates_the_last_block() -> None:
    ref = dataclasses.replace(K1, mutation=dataclasses.replace(K1.mutation, pick="reference"))
    assert _last_block_mutations(ref, 0, 600) == 0
    # two rounds (the default) as well: the last block changes only its `in` (re-chaining)
    m = Mutator(ref, budget_layers=BUDGET)
    for p, c in _walk(m, ref.start, random.Random(1), 300, BUDGET):
        assert c.blocks[-1]._replace(in_channels=p.blocks[-1].in_channels) == p.blocks[-1]


# -- kernel shrink at small inputs -----------------------------------------------------------
@pytest.mark.parametrize("size", [64, 32])
def test_kernel_shrink_at_small_resolution(size: int) -> None:
    m = Mutator(K1, budget_layers=BUDGET, height=size, width=size)
    res_in = []
    r = float(size)
    for b in K1.start.blocks:
        res_in.append(r)
        r /= b.stride
    ratio = K1.mutation.kernel_shrink_ratio
    n_checked = 0
    for _, child in _walk(m, K1.start, random.Random(17), 300, BUDGET):
        _revalidate(child)
        for b, res in zip(child.blocks, res_in, strict=True):
            assert b.kernel == 1 or b.kernel * ratio <= res, (b, res)
            assert b.kernel % 2 == 1
            n_checked += 1
    assert n_checked
    # at 64x64 the last two blocks see 4x4 maps: 3 * 1.5 > 4, so their kernels become 1
    if size == 64:
        child = m.mutate(K1.start, random.Random(0))
        assert [b.kernel for b in child.blocks[-2:]] == [1, 1]


def test_kernel_shrink_uses_the_smaller_side() -> None:
    m = Mutator(K1, budget_layers=BUDGET, height=64, width=480)
    child = m.mutate(K1.start, random.Random(0))
    assert [b.kernel for b in child.blocks[-2:]] == [1, 1]


def test_no_shrink_at_480() -> None:
    m = Mutator(K1, budget_layers=BUDGET)
    for _, child in _walk(m, K1.start, random.Random(17), 200, BUDGET):
        assert all(b.kernel in (3, 5) for b in child.blocks[1:])


# -- published structures as parents ---------------------------------------------------------
@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_mutating_published_structures(name: str) -> None:
    s = from_tinynas(STRUCTURES[name]["structure"])
    sp = dataclasses.replace(K1, start=s)
    m = Mutator(sp, budget_layers=BUDGET)
    for _, child in _walk(m, s, random.Random(6), 150, BUDGET):
        _revalidate(child)
        check_structure_in_space(K1, child)


def test_single_block_structure_cannot_mutate() -> None:
    stem_only = Structure((Block("ConvKXBNRELU", 3, 16, 2, 3),))
    sp = dataclasses.replace(K1, stages=1, stage_weights=(1.0,), start=stem_only)
    assert Mutator(sp).mutate(stem_only, random.Random(0)) == stem_only


# -- the raw-tuple hot path ------------------------------------------------------------------
def _slow_mutate(space: SearchSpace, budget: int | None, size: int, parent: Structure, rng: random.Random,
                 fine: bool) -> Structure:
    """The rules of zennas.space.mutation's docstring, restated plainly on dicts (no caches, no tuples,
    no precomputed plans), drawing from ``rng`` in the documented order: per round, per try, the block
    index, then the field, then the multiplier / kernel / layer delta."""
    r = space.mutation
    blocks = [b.to_dict() for b in parent.blocks]
    n = len(blocks)
    res_in, res = [], float(size)
    for b in blocks:
        res_in.append(res)
        res /= b["stride"]

    def pick(seq: list[object] | tuple[object, ...]) -> object:
        return seq[int(rng.random() * len(seq))]

    def rnd(x: float) -> int:
        return max(r.channel_round, round(x / r.channel_round) * r.channel_round)

    def layers_of(bs: list[dict[str, object]]) -> int:
        return sum(BLOCK_KINDS[str(b["type"])].convs_per_unit * int(b.get("layers", 1)) for b in bs)  # type: ignore[call-overload]

    def mutate_one(bs: list[dict[str, object]], i: int) -> dict[str, object] | None:
        b = dict(bs[i])
        kind = BLOCK_KINDS[str(b["type"])]
        nxt = bs[i + 1] if i + 1 < n else None
        if i == 0 and kind.stem:
            if nxt is None:
                return None
            if pick(r.stem_fields) == "out":
                out = min(r.max_channels, rnd(b["out"] * pick(r.channel_multipliers)))  # type: ignore[operator]
                if r.stem_max_out is not None:
                    out = min(out, r.stem_max_out)
                if r.out_max_next:
                    out = min(out, nxt["out"])  # type: ignore[type-var]
                b["out"] = out
            else:
                others = [k for k in r.kernels if k != b["kernel"]]
                b["kernel"] = pick(others) if others else b["kernel"]
            return b
        fields = [f for f in r.block_fields if (f != "bottleneck" or kind.has_bottleneck)
                  and (f != "layers" or kind.max_layers != 1)]
        if fine:
            fields = [f for f in fields if f in ("out", "bottleneck")] or fields
        what = pick(fields)
        if what == "out":
            out = min(r.max_channels, rnd(b["out"] * pick(r.channel_multipliers)))  # type: ignore[operator]
            if r.out_max_in_ratio is not None:
                out = min(out, int(r.out_max_in_ratio * b["in"]))  # type: ignore[operator]
            if r.out_min_in_ratio is not None:
                out = max(out, math.ceil(r.out_min_in_ratio * b["in"]))  # type: ignore[operator]
            if nxt is not None:
                if r.out_max_next:
                    out = min(out, nxt["out"])  # type: ignore[type-var]
                if r.next_out_divisor is not None:
                    out = max(out, rnd(nxt["out"] / r.next_out_divisor))  # type: ignore[operator]
            b["out"] = out
        elif what == "kernel":
            others = [k for k in r.kernels if k != b["kernel"]]
            b["kernel"] = pick(others) if others else b["kernel"]
        elif what == "bottleneck":
            b["bottleneck"] = min(int(b["out"] * r.btn_max_out_ratio),  # type: ignore[operator]
                                  r.max_channels, rnd(b["bottleneck"] * pick(r.channel_multipliers)))  # type: ignore[operator]
        elif what == "layers":
            cur = int(b["layers"])  # type: ignore[call-overload]
            choices = [max(1, cur + d) for d in r.layer_deltas if max(1, cur + d) != cur]
            new = pick(choices) if choices else cur
            if i == 1 and r.first_block_max_layers is not None:
                new = min(new, r.first_block_max_layers)
            elif budget is not None and n > 2:
                new = min(new, max(1, budget // kind.convs_per_unit // (n - 2)))
            if kind.max_layers is not None:
                new = min(new, kind.max_layers)
            b["layers"] = new
        btn = b.get("bottleneck")
        if btn is not None and r.btn_min_divisor is not None and btn < b["out"] / r.btn_min_divisor:  # type: ignore[operator]
            b["bottleneck"] = rnd(b["out"] / r.btn_min_divisor)  # type: ignore[operator]
        return b

    for _ in range(r.rounds):
        candidate = blocks
        for _try in range(n):
            i = int(rng.random() * (n - 1 if r.pick == "reference" else n))
            new = mutate_one(blocks, i)
            if new is None:
                continue
            candidate = [dict(b) for b in blocks]
            candidate[i] = new
            for j in range(1, n):  # re-chain every block's in to the previous out
                candidate[j]["in"] = candidate[j - 1]["out"]
            for j, b in enumerate(candidate):  # shrink kernels too large for their input map
                while b["kernel"] > 1 and b["kernel"] * r.kernel_shrink_ratio > res_in[j]:  # type: ignore[operator]
                    b["kernel"] -= 2  # type: ignore[operator]
            if budget is None or layers_of(candidate) <= budget:
                break
        blocks = candidate
    return Structure(tuple(Block(str(b["type"]), int(b["in"]), int(b["out"]), int(b["stride"]),  # type: ignore[call-overload]
                                 int(b["kernel"]), int(b.get("layers", 1)), b.get("bottleneck"))  # type: ignore[call-overload, arg-type]
                           for b in blocks))


@pytest.mark.parametrize("name", space_names())
@pytest.mark.parametrize(("budget", "size", "fine"), [(91, 480, False), (None, 480, False), (40, 64, False),
                                                       (91, 480, True)])
def test_mutate_equals_a_plain_restatement_of_the_rules(name: str, budget: int | None, size: int,
                                                        fine: bool) -> None:
    """Mutator.mutate (what the search runs) gives, draw for draw, the children of a plain
    restatement of the documented rules, along a 400-step walk."""
    space = get_space(name)
    m = Mutator(space, budget_layers=budget, height=size, width=size)
    rng_a, rng_c = random.Random(5), random.Random(5)
    parents = [space.start]
    for i in range(400):
        j = i % len(parents)
        expected = _slow_mutate(space, budget, size, parents[j], rng_c, fine)
        assert m.mutate(parents[j], rng_a, fine=fine) == expected, f"step {i}"
        assert rng_a.getstate() == rng_c.getstate()
        parents.append(expected)


# -- children are built without re-validation: prove they are valid in every setting ---------
@pytest.mark.parametrize("name", space_names())
@pytest.mark.parametrize(("budget", "size", "fine"), [(91, 480, False), (None, 480, False), (40, 64, False),
                                                       (91, 480, True)])
def test_trusted_children_pass_full_validation(name: str, budget: int | None, size: int, fine: bool) -> None:
    """Mutator.mutate builds children with Structure.trusted (no checks); every child of a long walk
    must pass the full validation and belong to the space."""
    space = get_space(name)
    m = Mutator(space, budget_layers=budget, height=size, width=size)
    rng = random.Random(5)
    parents = [space.start]
    for i in range(400):
        child = m.mutate(parents[i % len(parents)], rng, fine=fine)
        again = _revalidate(child)
        assert again == child and hash(again) == hash(child)
        check_structure_in_space(space, child)
        parents.append(child)
