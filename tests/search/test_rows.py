"""The compact trial-structure encoding (zennas.search.rows): exact round trip, rows bounded whatever
the structure's size, small structures stored whole, deterministic across a reload of the bases."""

from __future__ import annotations

import json
import random

import pytest
from large_space import large_space_doc

from zennas.search import rows
from zennas.space import get_space
from zennas.space.mutation import Mutator
from zennas.space.space import space_from_dict
from zennas.space.structure import Structure

pytestmark = pytest.mark.timeout(120)


def lineage(space_doc: dict[str, object], n: int, seed: int = 0) -> list[Structure]:
    """``n`` structures as an evolution makes them: each one a mutation of a random earlier one."""
    space = space_from_dict(space_doc, source="test")
    m = Mutator(space, budget_layers=space.budgets.layers)
    rng = random.Random(seed)
    out = [space.start]
    for _ in range(n):
        out.append(m.mutate(out[rng.randrange(max(0, len(out) - 64), len(out))], rng))
    return out[1:]


def stored(encoder: rows.TrialEncoder, structures: list[Structure]) -> tuple[list[str], dict[int, list[list]]]:
    texts = [encoder.encode(i, s) for i, s in enumerate(structures)]
    bases = {b["base"]: rows.unpack_base(b["blocks"]) for b in encoder.new_bases}
    return texts, bases


def test_large_structures_round_trip_in_rows_of_bounded_size() -> None:
    structures = lineage(large_space_doc(2000), 400)
    whole = len(json.dumps(rows.encode(structures[0])))
    texts, bases = stored(rows.TrialEncoder(), structures)
    for s, t in zip(structures, texts, strict=True):
        assert rows.decode(rows.decode_trial(t, bases)) == s
    # a delta holds at most MAX_DIFF blocks: ~1 KB, against ~100 KB for the whole structure
    assert max(map(len, texts)) <= 40 + rows.MAX_DIFF * 60, max(map(len, texts))
    assert whole > 80_000
    assert sum(map(len, texts)) < len(texts) * whole / 100
    # new bases appear only as the lineage drifts, not per trial
    assert 1 <= len(bases) <= len(structures) // 8, len(bases)
    assert rows.referenced_bases(texts) == set(bases)


def test_small_structures_are_stored_whole() -> None:
    structures = lineage(get_space("detection-k1kxk1").to_dict(), 50)
    enc = rows.TrialEncoder()
    texts, bases = stored(enc, structures)
    assert not bases and not enc.new_bases
    for s, t in zip(structures, texts, strict=True):
        assert json.loads(t) == rows.encode(s)
        assert rows.decode(rows.decode_trial(t, {})) == s


def test_encoding_is_the_same_after_reloading_the_newest_bases() -> None:
    """A resumed search reloads the RECENT_BASES newest bases (as decoded, fresh objects) and must
    write the rows an uninterrupted run writes."""
    structures = lineage(large_space_doc(600), 300, seed=1)
    full = rows.TrialEncoder()
    expected = [full.encode(i, s) for i, s in enumerate(structures)]
    first = rows.TrialEncoder()
    head = [first.encode(i, s) for i, s in enumerate(structures[:150])]
    saved = [(b["base"], rows.decode(rows.unpack_base(b["blocks"])).blocks) for b in first.new_bases]
    again = rows.TrialEncoder(saved[-rows.RECENT_BASES:], next_id=saved[-1][0] + 1 if saved else 0)
    tail = [again.encode(150 + i, s) for i, s in enumerate(structures[150:])]
    assert head + tail == expected


def test_block_dicts_match_the_structure_document() -> None:
    s = get_space("detection-k1kxk1").start
    assert rows.block_dicts(rows.encode(s)) == s.to_dict()["blocks"]
