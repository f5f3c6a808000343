"""The compact forms of a structure in storage: the one place that defines them.

**Block rows.** A structure as a list of ``[type, in, out, stride, kernel, layers, bottleneck]`` lists
(checkpoints, the trial history as callers read it, ``trials.jsonl``, ``/trials``):
:func:`encode` / :func:`decode` / :func:`block_dicts`.

**Trial rows** (the ``structure`` column of ``search_trials``). A mutation changes one or two blocks
(and the next block's input width), so a trial's structure is stored as a *delta*: the blocks in
which it differs from a *base* structure stored once per search in ``search_structures``
(zlib-compressed block rows)::

    {"base": 3, "diff": [[17, "SuperResK1KXK1", 64, 128, 1, 5, 2, 32], ...]}   # [index, *block row]

A structure of fewer than :data:`WHOLE_BELOW` blocks is stored whole, as its block rows (a list):
the delta would save little and cost a comparison per trial. A delta holds at most
:data:`MAX_DIFF` blocks; a structure that differs from each of the :data:`RECENT_BASES` newest bases
in more blocks becomes a base itself (its row is ``{"base": k, "diff": []}``). So a trial row is at
most ~MAX_DIFF blocks long whatever the structure's size (a 10,000-block structure: ~100 bytes
instead of ~410 KB), and bases appear only as fast as the population drifts.

The encoder is deterministic given the bases already stored: the ``RECENT_BASES`` newest ones (by
id), tried newest first. A resumed search reloads them, so it writes the very rows an uninterrupted
run writes.
"""

from __future__ import annotations

import base64
import json
import operator
import zlib
from collections.abc import Iterable, Mapping, Sequence
from itertools import compress
from typing import Any

from zennas.space.structure import Block, Structure

BLOCK_KEYS = ("type", "in", "out", "stride", "kernel", "layers", "bottleneck")
WHOLE_BELOW = 48  # blocks: smaller structures are stored whole (~40 bytes per block)
MAX_DIFF = 16  # blocks a delta may hold before the structure becomes a new base
RECENT_BASES = 16  # bases a new structure is compared with, newest first
ROW_OVERHEAD_BYTES = 200  # a trial row's other columns and the database's per-row cost (estimates)
BLOCK_ROW_BYTES = 48  # one block row as JSON, e.g. ["SuperResK1KXK1",256,256,1,5,3,128] (estimates)


# -- block rows -----------------------------------------------------------------------------------
def encode(s: Structure) -> list[list[Any]]:
    """Block rows: ``[[type, in, out, stride, kernel, layers, bottleneck], ...]``."""
    return _rows(s.blocks)


def _rows(blocks: Sequence[Block]) -> list[list[Any]]:
    return [[b.type, b.in_channels, b.out_channels, b.stride, b.kernel, b.layers, b.bottleneck] for b in blocks]


def decode(rows: Iterable[Sequence[Any]]) -> Structure:
    return Structure(tuple(Block(*r) for r in rows))


def block_dicts(rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """Block rows as the JSON document's block dicts (``bottleneck`` omitted when None)."""
    return [{k: v for k, v in zip(BLOCK_KEYS, r, strict=False) if v is not None} for r in rows]


# -- trial rows -----------------------------------------------------------------------------------
def pack_base(blocks: Sequence[Block]) -> bytes:
    """A base structure as stored: its block rows as JSON, zlib-compressed."""
    return zlib.compress(json.dumps(_rows(blocks), separators=(",", ":")).encode(), 6)


def unpack_base(data: bytes) -> list[list[Any]]:
    return json.loads(zlib.decompress(data))  # type: ignore[no-any-return]


def _diff(base: Sequence[Block], blocks: Sequence[Block], limit: int) -> list[int] | None:
    """Indices where ``blocks`` differs from ``base`` (same length), or None past ``limit``.
    Blocks a mutation did not touch are the parent's very objects, so an identity pass in C finds
    the candidates and only those are compared by value."""
    out = []
    for i in compress(range(len(blocks)), map(operator.is_not, base, blocks)):
        if base[i] != blocks[i]:
            out.append(i)
            if len(out) > limit:
                return None
    return out


class TrialEncoder:
    """Encodes one search's trial structures (see the module docstring). ``new_bases`` collects the
    bases created since the last :meth:`committed`, as rows of ``search_structures``; the caller
    writes them in the transaction that writes the trial rows referring to them."""

    def __init__(self, bases: Iterable[tuple[int, Sequence[Block]]] = (), next_id: int = 0) -> None:
        self.recent: list[tuple[int, tuple[Block, ...]]] = [(i, tuple(b)) for i, b in bases]
        del self.recent[:-RECENT_BASES]
        self.next_id = next_id
        self.new_bases: list[dict[str, Any]] = []

    def encode(self, number: int, s: Structure) -> str:
        blocks = s.blocks
        if len(blocks) < WHOLE_BELOW:
            return json.dumps(_rows(blocks), separators=(",", ":"))
        n = len(blocks)
        for base_id, base in reversed(self.recent):
            if len(base) != n:
                continue
            d = _diff(base, blocks, MAX_DIFF)
            if d is not None:
                return json.dumps({"base": base_id, "diff": [[i, *_rows((blocks[i],))[0]] for i in d]},
                                  separators=(",", ":"))
        base_id = self.next_id
        self.next_id += 1
        self.recent.append((base_id, blocks))
        del self.recent[:-RECENT_BASES]
        self.new_bases.append({"base": base_id, "number": number, "blocks": pack_base(blocks)})
        return json.dumps({"base": base_id, "diff": []}, separators=(",", ":"))

    def committed(self) -> None:
        self.new_bases = []


def referenced_bases(texts: Iterable[str]) -> set[int]:
    """The base ids a batch of stored trial structures refers to."""
    out = set()
    for t in texts:
        if t.startswith("{"):
            out.add(int(json.loads(t)["base"]))
    return out


def decode_trial(text: str, bases: Mapping[int, list[list[Any]]]) -> list[list[Any]]:
    """A stored trial structure as block rows; ``bases`` maps base id -> block rows."""
    v = json.loads(text)
    if isinstance(v, list):
        return v  # stored whole
    rows = list(bases[int(v["base"])])
    for d in v["diff"]:
        rows[d[0]] = list(d[1:])
    return rows


# -- checkpoint documents ---------------------------------------------------------------------------
PACK_ABOVE = 64 * 1024  # characters: a larger JSON document (spec, checkpoint state) is stored compressed
_PACKED = "zlib:"


def pack_json(obj: Any) -> str:
    """A JSON document as stored in a text column: plain when small, else ``zlib:`` + base64 of the
    zlib-compressed JSON (a checkpoint of 32 members of a 10,000-block structure: ~12 MB -> ~0.1 MB,
    since members share most of their blocks)."""
    text = json.dumps(obj)
    if len(text) <= PACK_ABOVE:
        return text
    return _PACKED + base64.b64encode(zlib.compress(text.encode(), 1)).decode("ascii")


def unpack_json(text: str) -> Any:
    if text.startswith(_PACKED):
        return json.loads(zlib.decompress(base64.b64decode(text[len(_PACKED):])))
    return json.loads(text)


def estimate_bytes(n_blocks: int, iterations: int, population: int) -> int:
    """A search's storage, roughly: its trial rows plus a checkpoint of ``population`` members (whole
    block rows, before compression). Bases are not counted: they appear only as the population drifts."""
    row = ROW_OVERHEAD_BYTES + BLOCK_ROW_BYTES * (n_blocks if n_blocks < WHOLE_BELOW else MAX_DIFF // 2)
    return iterations * row + population * n_blocks * BLOCK_ROW_BYTES
