"""The evolution's population, kept incrementally: O(log n) insert/evict, O(1) uniform pick."""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable

from zennas.errors import SpecError
from zennas.space.structure import Structure


class Population:
    """At most ``size`` structures with their scores. A candidate enters if it is not already a member
    and the population is not full or it beats the current worst, which it then replaces.
    Deterministic: ties between equal scores are broken by insertion order (oldest evicted first)."""

    def __init__(self, size: int) -> None:
        if size < 2:
            raise SpecError(f"population_size must be >= 2, got {size}", field="population")
        self.size = size
        self._members: list[tuple[Structure, float]] = []  # position -> member, for O(1) picks
        self._owner: list[int] = []  # position -> entry id
        self._pos: dict[int, int] = {}  # entry id -> position
        self._heap: list[tuple[float, int]] = []  # (score, entry id): the worst on top
        self._keys: dict[Structure, int] = {}  # structure -> how many members hold it (deduplication)
        self._seq = 0
        self.best: tuple[Structure, float] | None = None

    def __len__(self) -> int:
        return len(self._members)

    def seed(self, structure: Structure, score: float, copies: int) -> None:
        """Fill with copies of the start structure, as the reference does (copies are not deduplicated)."""
        for _ in range(min(copies, self.size - len(self))):
            self._add(structure, score)

    def _add(self, s: Structure, score: float, eid: int | None = None) -> None:
        if eid is None:
            eid = self._seq
            self._seq += 1
        self._pos[eid] = len(self._members)
        self._members.append((s, score))
        self._owner.append(eid)
        heapq.heappush(self._heap, (score, eid))
        self._keys[s] = self._keys.get(s, 0) + 1
        if self.best is None or score > self.best[1]:
            self.best = (s, score)

    def _remove_worst(self) -> None:
        _, eid = heapq.heappop(self._heap)
        pos = self._pos.pop(eid)
        s, _ = self._members[pos]
        if self._keys[s] == 1:
            del self._keys[s]
        else:
            self._keys[s] -= 1
        last = len(self._members) - 1
        if pos != last:  # swap-remove; fix the moved entry's position
            self._members[pos] = self._members[last]
            moved = self._owner[last]
            self._owner[pos] = moved
            self._pos[moved] = pos
        self._members.pop()
        self._owner.pop()

    def insert(self, s: Structure, score: float) -> bool:
        if s in self._keys:
            return False
        if len(self._members) >= self.size:
            if score <= self._heap[0][0]:
                return False
            self._remove_worst()
        self._add(s, score)
        return True

    def resize(self, size: int) -> None:
        """Change the capacity (the warm-up's growth to the full population). Shrinking evicts the worst."""
        if size < 2:
            raise SpecError(f"population_size must be >= 2, got {size}", field="population")
        while len(self._members) > size:
            self._remove_worst()
        self.size = size

    def pick(self, rng: random.Random) -> Structure:
        return self._members[rng.randrange(len(self._members))][0]

    def scores(self) -> list[float]:
        return [sc for _, sc in self._members]

    def items(self) -> list[tuple[Structure, float]]:
        return list(self._members)

    def state(self) -> dict[str, object]:
        """Everything needed to continue exactly: members at their positions (picks index them),
        their entry ids (ties evict the oldest), the id counter and the current capacity."""
        return {"members": [(s, sc, eid) for (s, sc), eid in zip(self._members, self._owner, strict=True)],
                "seq": self._seq, "best": self.best, "size": self.size}

    def worst(self) -> float:
        return self._heap[0][0]

    @classmethod
    def restore(cls, size: int, members: Iterable[tuple[Structure, float, int]], seq: int,
                best: tuple[Structure, float] | None) -> Population:
        """Rebuild from :meth:`state`: same members, positions and ids, so the run replays exactly."""
        p = cls(size)
        for s, sc, eid in members:
            p._add(s, sc, eid)
        p._seq = seq
        p.best = best
        return p
