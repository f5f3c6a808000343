"""Reports stay small for any structure: a 10,000-block best structure (and start, in the spec) gives a
report of well under a megabyte (it was 66 MB), drawn one bar per stage, its table abridged, while a
small structure keeps one bar and one table row per block."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "search"))
from large_space import large_space_doc

from zennas.report import MAX_DRAWN, MAX_TABLE_BLOCKS, _display_rows, _stages, render_report
from zennas.space import get_space

pytestmark = pytest.mark.timeout(120)


def summary_of(blocks: list[dict[str, object]]) -> dict[str, object]:
    structure = {"format": "zennas.structure", "version": 1, "blocks": blocks}
    return {"search_id": "big", "spec": {"space": "large", "score": "entropy-analytic", "height": 64, "width": 64,
                                         "start": structure, "population": 16, "iterations": 96, "seed": 0},
            "best": {"score": 1.0, "structure": structure, "costs": {"flops": 1e9, "params": 1e6, "layers": 3}},
            "counts": {"trials": 96, "evaluated": 90, "rejected": 6, "failed": 0}, "seconds": 1.0,
            "best_curve": [[1, 0.5], [50, 1.0]]}


def test_a_10000_block_report_is_small() -> None:
    blocks = large_space_doc(10_000)["start"]
    html = render_report(summary_of(blocks))
    assert len(html) < 1_000_000, len(html)
    assert "one bar per stage" in html and "blocks not shown" in html
    rows = re.findall(r"<tr><td class='n'>(\d+)</td>", html)
    assert len(rows) == MAX_TABLE_BLOCKS and rows[0] == "0" and rows[-1] == str(len(blocks) - 1)
    assert "more items" in html  # the summary JSON abridged
    shown = _display_rows(blocks, _stages(blocks))
    assert len(shown) <= MAX_DRAWN + 1 and shown[-1]["last"] == len(blocks) - 1


def test_a_small_structure_is_drawn_and_listed_block_by_block() -> None:
    blocks = get_space("detection-k1kxk1").to_dict()["start"]
    html = render_report(summary_of(blocks))
    assert "one bar per stage" not in html and "blocks not shown" not in html
    assert len(re.findall(r"<tr><td class='n'>(\d+)</td>", html)) == len(blocks)
    assert [r["first"] for r in _display_rows(blocks, _stages(blocks))] == list(range(len(blocks)))
