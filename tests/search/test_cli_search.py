"""``zennas search`` end to end, in a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ZENNAS = [sys.executable, "-m", "zennas.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ZENNAS, *args], capture_output=True, text=True, timeout=120)


def test_search_writes_outputs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    p = run("search", "--budget-flops", "188e8", "--budget-layers", "91", "--population", "32",
            "--iterations", "500", "--seed", "0", "--out", str(out), "--json")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["counts"]["trials"] == 500
    assert summary["provenance"]["zennas"]
    assert summary["best"]["costs"]["flops"] <= 188e8
    written = json.loads((out / "search.json").read_text())
    assert written["best"]["score"] == summary["best"]["score"]
    assert (out / "structure.txt").read_text().startswith("[")
    lines = (out / "trials.jsonl").read_text().splitlines()
    assert len(lines) == 500
    # the written structure scores to the reported best
    p2 = run("score", str(out / "structure.json"), "--json")
    assert abs(json.loads(p2.stdout)["score"] - summary["best"]["score"]) < 1e-6


def test_search_resume_from_checkpoint(tmp_path: Path) -> None:
    db = tmp_path / "cp.db"
    args = ["search", "--population", "16", "--iterations", "300", "--checkpoint", str(db), "--json"]
    a = json.loads(run(*args).stdout)
    b = json.loads(run(*args, "--resume").stdout)  # already finished: resume returns the same result
    assert a["best"] == b["best"]


def test_bad_input_exits_2_naming_the_field(tmp_path: Path) -> None:
    p = run("search", "--population", "1")
    assert p.returncode == 2 and "population" in p.stderr
    p = run("search", "--budget-layers", "3")
    assert p.returncode == 2 and "budgets.layers" in p.stderr
    p = run("search", "--space", "nope")
    assert p.returncode == 2 and "space" in p.stderr
