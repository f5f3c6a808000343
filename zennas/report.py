"""A self-contained HTML report of a finished search: the console's plots as static images.

:func:`render_report` takes a search summary (``SearchResult.summary()``, ``search.json`` or a service
job's ``result``) and, optionally, its trial history (``trials.jsonl`` rows or ``/trials`` pages), and
returns one HTML document. Plots are drawn with matplotlib's Agg canvas (no display, no global pyplot
state) and embedded as base64 PNG data URIs, so the file opens anywhere without network access.

Plots: best score over iterations; the population's score distribution (from the history when
given, else from the last progress event's population statistics when the summary carries them);
the Pareto front (score vs FLOPs) for NSGA-II with the chosen point highlighted; a drawing of the
chosen backbone (blocks with width, depth, kernel and stride, and where C3-C5 are taken).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["load_search_dir", "render_report", "write_report"]

_BLUE, _ORANGE, _GREY, _GREEN = "#1f5fa8", "#d9480f", "#8a8f98", "#2b8a3e"


# -- small helpers -----------------------------------------------------------------------------
def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: Any, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        if math.isnan(x):
            return "–"
        return f"{x:.{digits}g}" if abs(x) < 1e6 else f"{x:.4g}"
    return str(x)


def _giga(x: float | None) -> str:
    return "–" if x is None else f"{x / 1e9:.3f} G"


def _mega(x: float | None) -> str:
    return "–" if x is None else f"{x / 1e6:.3f} M"


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _style(ax: Any) -> None:
    ax.grid(True, color="#e3e6ea", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _blocks(structure: Mapping[str, Any] | Sequence[Any]) -> list[dict[str, Any]]:
    """Block dicts from a structure document, a list of block dicts, or compact history rows."""
    from zennas.search.rows import block_dicts

    raw = structure.get("blocks", []) if isinstance(structure, Mapping) else list(structure)
    return [dict(b) if isinstance(b, Mapping) else block_dicts([b])[0] for b in raw]


def _stages(blocks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The stages of a structure's blocks (the rule is :meth:`zennas.space.structure.Structure.stages`)."""
    from zennas.space.structure import Structure

    return Structure.from_dict({"blocks": list(blocks)}).stage_table()


def _scored(trials: Iterable[Mapping[str, Any]]) -> list[tuple[int, float]]:
    return [(int(t["number"]), float(t["score"])) for t in trials
            if t.get("state") == "complete" and t.get("score") is not None and not math.isnan(float(t["score"]))]


# -- the plots -----------------------------------------------------------------------------------
def plot_best_curve(summary: Mapping[str, Any], trials: Sequence[Mapping[str, Any]] | None = None) -> str | None:
    curve = [(int(a), float(b)) for a, b in summary.get("best_curve") or []]
    if not curve:
        return None
    n = int((summary.get("counts") or {}).get("trials") or curve[-1][0])
    fig = _figure(7.2, 3.4)
    ax = fig.add_subplot()
    _style(ax)
    if trials:
        pts = _scored(trials)
        if pts:
            ax.scatter([p[0] + 1 for p in pts], [p[1] for p in pts], s=3, color=_GREY, alpha=0.25, linewidths=0,
                       label="evaluated candidates", rasterized=True)
    xs = [c[0] for c in curve] + [max(n, curve[-1][0])]
    ys = [c[1] for c in curve] + [curve[-1][1]]
    ax.step(xs, ys, where="post", color=_BLUE, linewidth=2, label="best so far")
    ax.plot([curve[-1][0]], [curve[-1][1]], "o", color=_ORANGE, label=f"best {curve[-1][1]:.4g}")
    ax.set_xlabel("iteration (trial)")
    ax.set_ylabel(f"score ({(summary.get('spec') or {}).get('score', 'score')})")
    ax.set_title("Best score over iterations")
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return _png(fig)


def _final_population(trials: Sequence[Mapping[str, Any]], size: int) -> list[float]:
    """The scores of the ``size`` best distinct structures seen: the evolution's final population
    (its admission rule keeps the best distinct members), reconstructed from the history."""
    best: dict[str, float] = {}
    for t in trials:
        if t.get("state") != "complete" or t.get("score") is None:
            continue
        key = json.dumps(t.get("structure"), sort_keys=True)
        best[key] = max(best.get(key, -math.inf), float(t["score"]))
    return sorted(best.values(), reverse=True)[:size]


def plot_population(summary: Mapping[str, Any], trials: Sequence[Mapping[str, Any]] | None = None) -> str | None:
    spec = summary.get("spec") or {}
    size = int(spec.get("population") or 0) or 256
    pts = _scored(trials) if trials else []
    if pts:
        n = max(p[0] for p in pts) + 1
        windows = max(1, min(12, len(pts) // max(1, size)))
        edges = [round(n * k / windows) for k in range(windows + 1)]
        groups, labels = [], []
        for lo, hi in itertools.pairwise(edges):
            g = [s for num, s in pts if lo <= num < hi]
            if g:
                groups.append(g)
                labels.append(f"{lo}–{hi - 1}" if windows <= 6 else f"{hi}")
        final = _final_population(trials or [], size)
        fig = _figure(7.2, 3.6)
        ax, ax2 = fig.subplots(1, 2, width_ratios=[3, 1], sharey=True)
        _style(ax)
        _style(ax2)
        ax.boxplot(groups, showmeans=True, showfliers=False, patch_artist=True,
                   boxprops={"facecolor": "#dbe7f5", "edgecolor": _BLUE},
                   medianprops={"color": _BLUE, "linewidth": 2},
                   meanprops={"marker": "D", "markerfacecolor": _ORANGE, "markeredgecolor": _ORANGE, "markersize": 4})
        ax.set_xticks(range(1, len(labels) + 1), labels)
        ax.set_xlabel("iterations (window end)" if windows > 6 else "iterations")
        ax.set_ylabel("score of evaluated candidates")
        ax.tick_params(axis="x", labelsize=7, rotation=30 if windows > 6 else 0)
        ax.set_title("Score distribution over the search")
        ax2.boxplot([final], showmeans=True, patch_artist=True,
                    boxprops={"facecolor": "#fde3d4", "edgecolor": _ORANGE},
                    medianprops={"color": _ORANGE, "linewidth": 2},
                    meanprops={"marker": "D", "markerfacecolor": _BLUE, "markeredgecolor": _BLUE, "markersize": 4})
        ax2.set_xticks([1], [f"top {len(final)}"])
        ax2.set_title("Final population" if spec.get("sampler", "evolution") == "evolution" else "Best distinct",
                      fontsize=10)
        return _png(fig)
    pop = summary.get("population")
    if isinstance(pop, Mapping) and pop.get("max") is not None:  # statistics of the last progress event
        fig = _figure(7.2, 1.8)
        ax = fig.add_subplot()
        _style(ax)
        ax.hlines(0, pop["min"], pop["max"], color=_BLUE, linewidth=2)
        ax.plot([pop["min"], pop["max"]], [0, 0], "|", color=_BLUE, markersize=18)
        ax.plot([pop["median"]], [0], "s", color=_BLUE, markersize=9, label=f"median {pop['median']:.4g}")
        ax.plot([pop["mean"]], [0], "D", color=_ORANGE, markersize=7, label=f"mean {pop['mean']:.4g}")
        ax.set_yticks([])
        ax.set_xlabel("score")
        ax.set_title(f"Population score distribution (size {pop.get('size', '?')}: min {pop['min']:.4g}, "
                     f"max {pop['max']:.4g})", fontsize=10)
        ax.legend(loc="upper left", fontsize=8, frameon=False, ncol=2)
        return _png(fig)
    return None


def chosen_point(front: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The Pareto point the search returns (highest score), as the driver chooses it."""
    return max(front, key=lambda p: p["score"]) if front else None


def plot_pareto(summary: Mapping[str, Any], trials: Sequence[Mapping[str, Any]] | None = None) -> str | None:
    spec = summary.get("spec") or {}
    front = list(summary.get("pareto_front") or [])
    if spec.get("sampler") != "nsga2" or not front:
        return None
    fig = _figure(7.2, 3.6)
    ax = fig.add_subplot()
    _style(ax)
    if trials:
        ok = [t for t in trials if t.get("state") == "complete" and t.get("score") is not None]
        ax.scatter([t["flops"] / 1e9 for t in ok], [t["score"] for t in ok], s=4, color=_GREY, alpha=0.3,
                   linewidths=0, label="evaluated candidates", rasterized=True)
    pts = sorted(front, key=lambda p: p["flops"])
    ax.step([p["flops"] / 1e9 for p in pts], [p["score"] for p in pts], where="post", color=_BLUE, alpha=0.5)
    ax.scatter([p["flops"] / 1e9 for p in pts], [p["score"] for p in pts], s=22, color=_BLUE, zorder=3,
               label=f"Pareto front ({len(pts)})")
    c = chosen_point(front)
    assert c is not None
    ax.scatter([c["flops"] / 1e9], [c["score"]], s=120, facecolors="none", edgecolors=_ORANGE, linewidths=2.5,
               zorder=4, label=f"chosen: #{c['number']} ({c['score']:.4g}, {c['flops'] / 1e9:.2f} G)")
    budget = (spec.get("budgets") or {}).get("flops")
    if budget:
        ax.axvline(budget / 1e9, color=_GREEN, linestyle="--", linewidth=1, label=f"FLOPs budget {budget / 1e9:.3g} G")
    ax.set_xlabel("FLOPs (G, MACs + BN/act ops)")
    ax.set_ylabel("score")
    ax.set_title("Pareto front: score vs FLOPs (NSGA-II)")
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return _png(fig)


MAX_DRAWN = 48  # rows of the backbone drawing; a larger structure is drawn one bar per stage
MAX_TABLE_BLOCKS = 200  # rows of the structure table; a larger one shows its first and last blocks
MAX_JSON_ITEMS = 64  # list items per list in the summary JSON shown (the full one is search.json)
MAX_JSON_CHARS = 2000  # characters per string there


def _display_rows(blocks: Sequence[Mapping[str, Any]], stages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """What the drawing shows: one row per block, or for a large structure one row per stage (its
    blocks summed up), and at most MAX_DRAWN rows (the middle ones elided)."""
    rows: list[dict[str, Any]] = []
    if len(blocks) <= MAX_DRAWN:
        for i, b in enumerate(blocks):
            detail = f"k{b['kernel']} · s{b['stride']} · ×{b.get('layers', 1)}"
            if b.get("bottleneck"):
                detail += f" · btn {b['bottleneck']}"
            rows.append({"label": f"{i}  {b['type'].replace('SuperRes', '').replace('BNRELU', '')}",
                         "detail": detail, "in": b["in"], "out": b["out"], "layers": int(b.get("layers", 1)),
                         "first": i, "last": i})
    else:
        for st in stages:
            group = blocks[st["start"]:st["end"] + 1]
            kernels = sorted({int(b["kernel"]) for b in group})
            layers = sum(int(b.get("layers", 1)) for b in group)
            rows.append({"label": f"{st['start']}–{st['end']}  {len(group)} blocks",
                         "detail": f"k{'/'.join(map(str, kernels[:4]))}{'…' if len(kernels) > 4 else ''} · "
                                   f"{layers} layers", "in": group[0]["in"], "out": group[-1]["out"],
                         "layers": min(layers, 10), "first": st["start"], "last": st["end"]})
    if len(rows) > MAX_DRAWN:
        half = MAX_DRAWN // 2
        hidden = rows[half:len(rows) - half]
        gap = {"label": f"… {hidden[-1]['last'] - hidden[0]['first'] + 1} blocks not drawn", "detail": "",
               "in": None, "out": None, "layers": 1, "first": hidden[0]["first"], "last": hidden[-1]["last"]}
        rows = [*rows[:half], gap, *rows[len(rows) - half:]]
    return rows


def plot_backbone(structure: Mapping[str, Any] | Sequence[Any], height: int = 480, width: int | None = None) -> str:
    """Blocks top to bottom: bar length ~ output channels (log), bar thickness ~ depth (layers), kernel
    and stride written beside; stages bracketed on the right, with the outputs the detection neck
    takes (C3-C5) in orange. A structure of more than MAX_DRAWN blocks is drawn one bar per stage, and
    the drawing never holds more than MAX_DRAWN bars, so its size does not grow with the structure."""
    from matplotlib.patches import FancyBboxPatch

    blocks = _blocks(structure)
    stages = _stages(blocks)
    taken = {s["name"] for s in stages[-3:]}
    width = width or height
    shown = _display_rows(blocks, stages)
    rows = [0.62 + 0.1 * min(r["layers"], 10) for r in shown]
    gap = 0.22
    total = sum(rows) + gap * (len(shown) - 1)
    fig = _figure(7.2, max(2.4, 0.42 * total + 0.9))
    ax = fig.add_subplot()
    ax.set_xlim(0, 12)
    ax.set_ylim(total + 0.1, -0.1)
    ax.axis("off")
    maxc = max(math.log2(max(b["out"], 2)) for b in blocks)
    tops, y = [], 0.0
    for h in rows:
        tops.append(y)
        y += h + gap
    stage_of = {i: s for s in stages for i in range(s["start"], s["end"] + 1)} if len(blocks) <= MAX_DRAWN else {
        s["start"]: s for s in stages}
    row_of: dict[int, int] = {}  # block index -> display row, for the first and last block of each row
    for k, (r, h) in enumerate(zip(shown, rows, strict=True)):
        row_of.setdefault(r["first"], k)
        row_of[r["last"]] = k
        y = tops[k]
        ax.text(0.05, y + h * 0.36, r["label"], va="center", fontsize=8.5, fontweight="bold")
        if r["out"] is None:  # the elided middle
            continue
        s = stage_of.get(r["first"])
        hot = s is not None and s["name"] in taken
        out_taken = hot and s is not None and r["last"] == s["end"]
        ax.text(0.05, y + h * 0.74, r["detail"], va="center", fontsize=7.5, color="#3b4250")
        length = 0.5 + 3.6 * math.log2(max(r["out"], 2)) / maxc
        ax.add_patch(FancyBboxPatch((3.4, y), length, h, boxstyle="round,pad=0,rounding_size=0.06",
                                    facecolor="#fde3d4" if hot else "#dbe7f5",
                                    edgecolor=_ORANGE if out_taken else _BLUE, linewidth=2.2 if out_taken else 1.1))
        ax.text(3.4 + length + 0.12, y + h / 2, f"{r['in']}→{r['out']} ch", va="center", fontsize=7.5)
    for s in stages:
        if s["start"] not in row_of or s["end"] not in row_of:
            continue  # elided
        a, b = row_of[s["start"]], row_of[s["end"]]
        y0, y1 = tops[a], tops[b] + rows[b]
        hot = s["name"] in taken
        color = _ORANGE if hot else "#59616d"
        ax.plot([8.85, 8.95, 8.95, 8.85], [y0 + 0.05, y0 + 0.05, y1 - 0.05, y1 - 0.05], color=color, linewidth=1.2)
        mid = tops[b] + rows[b] / 2
        ax.text(9.1, mid, f"{s['name']}  /{s['stride']} · {s['channels']} ch\n"
                          f"{height // s['stride']}×{width // s['stride']}" + ("  → neck" if hot else ""),
                va="center", fontsize=8, color=color, fontweight="bold" if hot else None)
    ax.set_title("Chosen backbone (bar length ~ channels, thickness ~ depth; orange: the C3–C5 outputs the neck takes)"
                 + (f"; {len(blocks)} blocks, one bar per stage" if len(blocks) > MAX_DRAWN else ""), fontsize=9)
    return _png(fig)


def _abridge(x: Any) -> Any:
    """A JSON value cut down for display: long lists keep their first and last items, long strings their start."""
    if isinstance(x, Mapping):
        return {k: _abridge(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        if len(x) > MAX_JSON_ITEMS:
            half = MAX_JSON_ITEMS // 2
            return [*map(_abridge, x[:half]), f"… {len(x) - 2 * half} more items …", *map(_abridge, x[-half:])]
        return [_abridge(v) for v in x]
    if isinstance(x, str) and len(x) > MAX_JSON_CHARS:
        return x[:MAX_JSON_CHARS] + f"… ({len(x) - MAX_JSON_CHARS} more characters)"
    return x


# -- the document ------------------------------------------------------------------------------
_CSS = """
:root{color-scheme:light;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2126}
body{margin:0 auto;max-width:60rem;padding:1.5rem;line-height:1.45}
h1{font-size:1.6rem;margin:.2rem 0 1rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #dde1e6}
table{border-collapse:collapse;margin:.5rem 0;font-size:.92rem}th,td{padding:.25rem .7rem;text-align:left;
border-bottom:1px solid #eceff2;vertical-align:top}th{font-weight:600;background:#f5f7f9}
td.n{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #eceff2}
figcaption{font-size:.9rem;color:#4a5360}.muted{color:#5b6470}code{font-size:.88em}
.kv{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem}
@media (max-width:600px){body{padding:.8rem}table{font-size:.8rem}}
"""


def _kv(rows: Iterable[tuple[str, Any]]) -> str:
    return "<table><tbody>" + "".join(f"<tr><th scope='row'>{_esc(k)}</th><td>{_esc(v)}</td></tr>"
                                      for k, v in rows) + "</tbody></table>"


def _certificate_rows(summary: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The optimality certificate (entropy-analytic searches): the bound and how far below it the best is."""
    cert = summary.get("certificate")
    if not cert:
        return []
    if not cert.get("available"):
        return [("bound", f"none: {cert.get('reason', '')}")]
    rows: list[tuple[str, Any]] = [
        ("bound", f"{_num(cert.get('bound'), 7)}: no structure the search can reach under the budgets scores more"),
        ("gap to the bound", f"{_num(summary.get('gap_pct', cert.get('gap_pct')), 3)} %")]
    if cert.get("best_from"):
        rows.append(("best from", f"the {cert['best_from']} (the evolution's best: {_num(cert.get('search_best'), 7)})"))
    return rows


def _latency_table(lat: Mapping[str, Any] | None) -> str:
    """Predicted vs measured latency of the top candidates a latency-profile search verified on the device."""
    if not lat or not lat.get("candidates"):
        return ""
    p = lat.get("profile") or {}
    head = (f"<h2>Latency on the device</h2><p>Predicted by the profile <code>{_esc(p.get('ref', '?'))}</code> "
            f"({_esc(p.get('runtime', '?'))}, {_esc(p.get('threads', '?'))} thread(s), batch {_esc(p.get('batch', '?'))}); "
            f"{lat.get('measured', len(lat['candidates']))} of the top {len(lat['candidates'])} candidates measured "
            f"({lat.get('measured_during_search', 0)} while the search ran), {_num(lat.get('seconds'), 3)} s after it, "
            "budget "
            f"{_num(lat.get('budget_ms'))} ms. The result is the best-scoring one whose measured latency meets it.</p>"
            "<table class='latency'><thead><tr>" + "".join(f"<th scope='col'>{h}</th>" for h in (
                "#", "trial", "score", "predicted ms", "measured ms", "p10–p90 ms", "error", "budget"))
            + "</tr></thead><tbody>")
    from zennas.search.verify import verdict

    rows = []
    for c in lat["candidates"]:
        err = "–" if c.get("error") is None else f"{100 * c['error']:+.1f} %"
        spread = "–" if c.get("measured_p10_ms") is None else \
            f"{c['measured_p10_ms']:.3f}–{c.get('measured_p90_ms') or 0.0:.3f}"
        mark = (" (result)" if c.get("rank") == lat.get("winner") else "") + \
            ("; measured while the search ran" if c.get("speculative") else "")
        rows.append(f"<tr><td class='n'>{_esc(c.get('rank'))}</td><td class='n'>{_esc(c.get('number'))}</td>"
                    f"<td class='n'>{_num(c.get('score'))}</td><td class='n'>{_num(c.get('predicted_ms'))}</td>"
                    f"<td class='n'>{_num(c.get('measured_ms'))}</td><td class='n'>{_esc(spread)}</td>"
                    f"<td class='n'>{_esc(err)}</td><td>{verdict(c)}{mark}</td></tr>")
    warn = "".join(f"<p class='muted'>warning: {_esc(w)}</p>" for w in lat.get("warnings") or [])
    return head + "".join(rows) + "</tbody></table>" + warn


def render_report(summary: dict[str, Any], trials: list[dict[str, Any]] | None = None, *,
                  title: str | None = None) -> str:
    """One self-contained HTML document (plots as embedded PNGs) for a search summary."""
    spec = summary.get("spec") or {}
    best = summary.get("best") or {}
    counts = summary.get("counts") or {}
    costs = best.get("costs") or {}
    budgets = spec.get("budgets") or {}
    structure = best.get("structure") or {"blocks": []}
    h, w = int(spec.get("height") or 480), int(spec.get("width") or spec.get("height") or 480)
    name = title or f"zennas search {summary.get('search_id', '')}".strip()

    figures: list[tuple[str, str | None, str]] = [
        ("Best score over iterations", plot_best_curve(summary, trials),
         "The best score found so far after each trial" + (" (grey: every evaluated candidate)." if trials else ".")),
        ("Population score distribution", plot_population(summary, trials),
         "Scores of the evaluated candidates per window of iterations, and the final population (the best "
         "distinct structures), reconstructed from the trial history." if trials else
         "Score statistics of the population at the last progress report."),
        ("Pareto front", plot_pareto(summary, trials),
         "NSGA-II's non-dominated candidates (maximize score, minimize FLOPs); the ringed point is the one chosen "
         "(the highest score on the front)."),
        ("Chosen backbone", plot_backbone(structure, h, w) if _blocks(structure) else None,
         ("One bar per block" if len(_blocks(structure)) <= MAX_DRAWN else
          f"{len(_blocks(structure))} blocks, drawn one bar per stage")
         + ", top (input) to bottom; the stage outputs C1..Cn on the right, with the feature maps "
         "the detection neck takes (C3–C5) in orange."),
    ]
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<title>{_esc(name)}</title><style>{_CSS}</style></head><body><main>",
             f"<h1>{_esc(name)}</h1>",
             f"<p class='muted'>Report written {_esc(_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC'))} "
             f"by zennas {_esc((summary.get('provenance') or {}).get('zennas', ''))}.</p>",
             "<h2>Result</h2>",
             _kv([("best score", f"{_num(best.get('score'))} ({spec.get('score', '?')})"),
                  ("FLOPs", f"{_giga(costs.get('flops'))} at {h}×{w} ({costs.get('flops_unit', 'MACs + BN/act ops')})"),
                  ("parameters", _mega(costs.get("params"))), ("layers", costs.get("layers", "–")),
                  ("trials", counts.get("trials", "–")), ("evaluated", counts.get("evaluated", "–")),
                  ("rejected (over budget)", counts.get("rejected", "–")), ("failed", counts.get("failed", "–")),
                  ("seconds", _num(summary.get("seconds"), 3)), *_certificate_rows(summary)]),
             "<h2>Search</h2>",
             _kv([("space", spec.get("space", "–")), ("sampler", spec.get("sampler", "–")),
                  ("objectives", ", ".join(spec.get("objectives") or []) if spec.get("sampler") == "nsga2" else "–"),
                  ("population", spec.get("population", "–")), ("iterations", spec.get("iterations", "–")),
                  ("seed", spec.get("seed", "–")),
                  ("budgets", ", ".join(f"{k} {_num(v)}" for k, v in budgets.items() if v is not None) or "space defaults")]),
             _latency_table(summary.get("latency")),
             "<h2>Plots</h2>"]
    for heading, uri, caption in figures:
        if uri is None:
            continue
        parts.append(f"<figure><img src=\"{uri}\" alt=\"{_esc(heading)}\"><figcaption><strong>{_esc(heading)}."
                     f"</strong> {_esc(caption)}</figcaption></figure>")
    blocks = _blocks(structure)
    if blocks:
        stage_end = {s["end"]: s["name"] for s in _stages(blocks)}
        parts.append("<h2>Structure</h2><table><thead><tr><th scope='col'>#</th><th scope='col'>type</th>"
                     "<th scope='col'>in</th><th scope='col'>out</th><th scope='col'>stride</th>"
                     "<th scope='col'>kernel</th><th scope='col'>layers</th><th scope='col'>bottleneck</th>"
                     "<th scope='col'>stage output</th></tr></thead><tbody>")
        half = MAX_TABLE_BLOCKS // 2
        shown = range(len(blocks)) if len(blocks) <= MAX_TABLE_BLOCKS else [
            *range(half), -1, *range(len(blocks) - half, len(blocks))]
        for i in shown:
            if i < 0:
                parts.append(f"<tr><td colspan='9'>… {len(blocks) - 2 * half} blocks not shown (all "
                             f"{len(blocks)} are in <code>structure.json</code>) …</td></tr>")
                continue
            b = blocks[i]
            parts.append(f"<tr><td class='n'>{i}</td><td><code>{_esc(b['type'])}</code></td>"
                         + "".join(f"<td class='n'>{_esc(b.get(k, '–'))}</td>"
                                   for k in ("in", "out", "stride", "kernel", "layers", "bottleneck"))
                         + f"<td>{_esc(stage_end.get(i, ''))}</td></tr>")
        parts.append("</tbody></table>")
    parts.append("<h2>Summary (JSON)</h2><details><summary>search summary</summary><pre>"
                 + _esc(json.dumps(_abridge({k: v for k, v in summary.items() if k != "best_curve"}), indent=2,
                                   default=str))
                 + "</pre></details>")
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def load_search_dir(path: Any, *, max_trials: int = 200_000) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """``search.json`` and (when present) ``trials.jsonl`` of a ``zennas search --out DIR`` directory.

    A history longer than ``max_trials`` is read in one streaming pass and thinned to every k-th trial,
    plus the rows of the best distinct structures (the final population the plots reconstruct), so
    the memory a report needs stays bounded for a search of any length."""
    import heapq
    from pathlib import Path

    d = Path(path)
    summary = json.loads((d / "search.json").read_text())
    tp = d / "trials.jsonl"
    if not tp.exists():
        return summary, None
    with tp.open() as f:
        n = sum(1 for line in f if line.strip())
    step = max(1, -(-n // max_trials))
    size = int((summary.get("spec") or {}).get("population") or 256)
    kept: dict[int, dict[str, Any]] = {}
    top: list[tuple[float, int]] = []  # (score, number): a min-heap of the best distinct structures
    top_rows: dict[int, tuple[str, dict[str, Any]]] = {}  # number -> (structure key, row)
    top_keys: set[str] = set()
    with tp.open() as f:
        i = 0
        for line in f:
            if not line.strip():
                continue
            t = json.loads(line)
            if i % step == 0:
                kept[int(t["number"])] = t
            i += 1
            if step == 1 or t.get("state") != "complete" or t.get("score") is None:
                continue
            key = json.dumps(t.get("structure"), sort_keys=True)
            score = float(t["score"])
            if key in top_keys or (len(top) >= size and score <= top[0][0]):
                continue
            if len(top) >= size:
                _, gone = heapq.heappop(top)
                top_keys.discard(top_rows.pop(gone)[0])
            heapq.heappush(top, (score, int(t["number"])))
            top_rows[int(t["number"])] = (key, t)
            top_keys.add(key)
    for number, (_, row) in top_rows.items():
        kept.setdefault(number, row)
    return summary, [kept[k] for k in sorted(kept)]


def write_report(out: Any, summary: dict[str, Any], trials: list[dict[str, Any]] | None = None,
                 **kwargs: Any) -> Any:
    from pathlib import Path

    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render_report(summary, trials, **kwargs), encoding="utf-8")
    return p

