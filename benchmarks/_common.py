"""Helpers shared by the benchmark scripts: machine description, best-of-N timing, fixtures, tables.

The benchmarks are plain scripts (``python benchmarks/bench_score.py``), not part of the test suite.
Every figure they print is compared with a baseline measured in the same run, so the ratios stay
meaningful on a shared machine where absolute times drift; times are the best of a few repeats.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
T = TypeVar("T")


# -- the machine ------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads_default": torch.get_num_threads(),
    }
    try:
        import optuna

        info["optuna"] = optuna.__version__
    except ImportError:
        pass
    try:
        import ray

        info["ray"] = ray.__version__
    except ImportError:
        pass
    try:
        info["loadavg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    return info


def header(title: str) -> None:
    m = machine()
    print(f"# {title}")
    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print("machine: " + ", ".join(f"{k}={v}" for k, v in m.items()))
    print("note: shared machine; times are the best of the repeats stated (load average above is at start); "
          "'CPU s' is this process's CPU time (time.process_time), steadier than wall time under load")
    print()


def section(title: str) -> None:
    print()
    print(f"## {title}")


# -- timing ----------------------------------------------------------------------------------------
def best_of(fn: Callable[[], T], repeats: int, *, warmup: int = 0) -> tuple[float, T, list[float]]:
    """Run ``fn`` ``warmup`` + ``repeats`` times; (best seconds, last result, all timed seconds)."""
    result: Any = None
    for _ in range(warmup):
        result = fn()
    times: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result, times


def best_of_cpu(fn: Callable[[], T], repeats: int, *, warmup: int = 0) -> tuple[float, float, T, list[float]]:
    """Like :func:`best_of`, also timing this process's CPU time (``time.process_time``): on a shared
    machine the CPU time of a single-threaded run is far steadier than its wall time, since waiting
    for a core is not counted. Returns (best wall, best CPU, last result, all walls)."""
    result: Any = None
    for _ in range(warmup):
        result = fn()
    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        result = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus), result, walls


def pct(value: float, ref: float) -> float:
    """Signed difference of ``value`` from ``ref`` in percent of |ref|."""
    return 100.0 * (value - ref) / abs(ref)


# -- fixtures --------------------------------------------------------------------------------------
def load_structures() -> dict[str, tuple[Any, dict[str, Any]]]:
    """name -> (Structure, fixture entry) for tests/data/structures.json."""
    from zennas.space.formats import from_tinynas

    raw = json.loads((DATA / "structures.json").read_text())["structures"]
    return {name: (from_tinynas(v["structure"]), v) for name, v in raw.items()}


def load_search_fixture() -> dict[str, Any]:
    return json.loads((DATA / "search.json").read_text())


def ray_backend_available() -> tuple[bool, str]:
    """Whether ``from zennas_workers import RayBackend, ray_init`` works here (and why not)."""
    try:
        from zennas_workers import RayBackend, ray_init  # noqa: F401
    except Exception as e:  # ImportError, or anything the package raises on import
        return False, f"{type(e).__name__}: {e}"
    return True, ""


# -- output ----------------------------------------------------------------------------------------
def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A Markdown table (pastes straight into BENCHMARKS.md)."""
    def fmt(x: Any) -> str:
        if isinstance(x, float):
            if x != x:  # nan
                return "-"
            if abs(x) >= 1000:
                return f"{x:,.1f}"
            if abs(x) >= 1:
                return f"{x:.3f}"
            return f"{x:.4g}"
        return "-" if x is None else str(x)

    cells = [[fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    sys.stdout.flush()


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"
