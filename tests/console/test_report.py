"""``zennas.report``: self-contained HTML reports of real (small) searches, the ``zennas report``
command, and the bundle's ``report.html`` part."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

pytest.importorskip("matplotlib")

from zennas.report import _stages, load_search_dir, render_report
from zennas.search import Budgets, Search, SearchSpec, SearchStore
from zennas.search.output import write_outputs

optuna.logging.set_verbosity(optuna.logging.WARNING)
ROOT = Path(__file__).resolve().parents[2]
IMG = '<img src="data:image/png;base64,'
MAEDET = Budgets(flops=188e8, layers=91)


def _search(tmp: Path, **kw: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    spec = SearchSpec(**{"budgets": MAEDET, "population": 32, "iterations": 500, "seed": 0, **kw})
    store = SearchStore.open(tmp / "s.db")
    result = Search(spec, store=store, search_id="r").run()
    out = write_outputs(result, tmp / "out", store)
    summary, trials = load_search_dir(out)
    assert trials is not None and len(trials) == spec.iterations
    return summary, trials


def _pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def _self_contained(html: str) -> None:
    # nothing to fetch: no external scripts, styles or images
    assert not re.search(r"<(script|link)\b", html, re.I)
    assert not re.search(r'\b(src|href)="(?!data:)', html)


def test_render_report_of_a_real_search_embeds_its_plots(tmp_path: Path) -> None:
    summary, trials = _search(tmp_path)
    html = render_report(summary, trials)
    assert html.count(IMG) >= 3  # best score, population distribution, backbone
    pngs = _pngs(html)
    assert len(pngs) == html.count(IMG)
    assert all(p.startswith(b"\x89PNG\r\n\x1a\n") and len(p) > 5000 for p in pngs)
    _self_contained(html)
    for text in ("Best score over iterations", "Population score distribution", "Chosen backbone", "C5"):
        assert text in html
    assert "Pareto front" not in html  # evolution: no front
    assert f"{summary['best']['score']:.4g}" in html


def test_nsga2_report_has_the_pareto_front(tmp_path: Path) -> None:
    summary, trials = _search(tmp_path, sampler="nsga2", population=16, iterations=320)
    assert summary["pareto_front"]
    html = render_report(summary, trials)
    assert html.count(IMG) == 4
    assert "Pareto front" in html and "chosen" in html


def test_report_without_history_and_escaping(tmp_path: Path) -> None:
    summary, _ = _search(tmp_path)
    summary["search_id"] = "<script>alert(1)</script>"
    html = render_report(summary, None)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert html.count(IMG) >= 2  # best score and backbone; no history, no population plot
    summary["population"] = {"size": 32, "min": 1.0, "median": 2.0, "max": 3.0, "mean": 2.1}
    assert render_report(summary, None).count(IMG) == html.count(IMG) + 1  # a progress event's statistics


def test_stages_match_the_backbone_builder() -> None:
    from zennas.blocks.backbone import stages
    from zennas.space import get_space, space_names

    for name in space_names():
        s = get_space(name).start
        mine = _stages([b.to_dict() for b in s.blocks])
        ref = stages(s)
        assert [(m["name"], m["end"], m["channels"], m["stride"]) for m in mine] == \
               [(r.name, r.end_block, r.channels, r.stride) for r in ref], name


def test_cli_report_of_a_search_dir(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "zennas.cli", "search", "--population", "32", "--iterations", "500",
                        "--budget-flops", "188e8", "--budget-layers", "91", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    report = tmp_path / "nested" / "report.html"
    r = subprocess.run([sys.executable, "-m", "zennas.cli", "report", str(out), "--out", str(report)],
                       cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    assert "500 trials" in r.stdout
    html = report.read_text()
    assert html.count(IMG) >= 3
    _self_contained(html)
    # a missing directory is neither a search dir nor reachable as a job: a clean error, no traceback
    r = subprocess.run([sys.executable, "-m", "zennas.cli", "report", str(tmp_path / "empty-dir-that-is-not-there"),
                        "--url", "http://127.0.0.1:9", "--out", str(tmp_path / "x.html")],
                       cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    (tmp_path / "nosummary").mkdir()
    r = subprocess.run([sys.executable, "-m", "zennas.cli", "report", str(tmp_path / "nosummary")],
                       cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert r.returncode == 2 and "search.json" in r.stderr


def test_bundle_includes_the_report(tmp_path: Path) -> None:
    pytest.importorskip("zennas_api")
    from zennas_api.bundle import write_bundle

    summary, _ = _search(tmp_path)
    d = write_bundle(tmp_path / "bundle", {"id": "job1", "tenant": "a", "spec": summary["spec"]}, summary)
    html = (d / "report.html").read_text()
    assert "zennas search job1" in html and html.count(IMG) >= 2
    manifest = json.loads((d / "manifest.json").read_text())
    assert "report.html" in manifest["files"]
    assert not (d / "errors").exists()


def test_a_long_history_is_thinned_to_a_bounded_sample_keeping_the_best(tmp_path: Path) -> None:
    """load_search_dir reads a history longer than max_trials as every k-th trial plus the best
    distinct structures, so the final-population plot is still the true top of the search."""
    summary, trials = _search(tmp_path)
    summary, thin = load_search_dir(tmp_path / "out", max_trials=100)
    assert thin is not None and len(thin) <= 100 + 32
    numbers = [t["number"] for t in thin]
    assert numbers == sorted(set(numbers))
    size = int(summary["spec"]["population"])
    from zennas.report import _final_population

    assert _final_population(thin, size) == _final_population(trials, size)
    assert render_report(summary, thin)
