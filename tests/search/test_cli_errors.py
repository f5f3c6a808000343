"""Every error a user can cause is one line naming the field, no traceback: exit 2 for bad input, 1 for
a runtime failure (a :class:`~zennas.errors.RunFailure`). Real subprocesses for the CLI cases."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from zennas.errors import NotFoundError, RunFailure, SpecError, ZenNASError

ZENNAS = [sys.executable, "-m", "zennas.cli"]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ZENNAS, *args], capture_output=True, text=True, timeout=timeout)


def one_line(p: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    return lines[0]


@pytest.mark.timeout(60)
def test_unreachable_ray_address_exits_1_fast_naming_ray_address() -> None:
    t0 = time.monotonic()
    p = run("search", "--score", "entropy", "--score-resolution", "32", "--population", "8", "--iterations", "8",
            "--ray-address", "127.0.0.1:1", "--json", timeout=50)
    assert time.monotonic() - t0 < 30
    assert p.returncode == 1, p.stderr
    line = one_line(p)
    assert line.startswith("error: ray_address:") and "127.0.0.1:1" in line
    assert p.stdout == ""


def test_malformed_ray_address_and_unusable_paths_exit_2(tmp_path: Path) -> None:
    p = run("search", "--score", "entropy", "--population", "8", "--iterations", "8", "--ray-address", "foo")
    assert p.returncode == 2 and one_line(p).startswith("error: ray_address:")
    (tmp_path / "a-file").write_text("")
    p = run("search", "--iterations", "8", "--checkpoint", str(tmp_path / "a-file" / "cp.db"))  # under a file
    assert p.returncode == 2 and "a-file" in one_line(p)


@pytest.mark.timeout(120)
def test_bad_out_indices_is_one_line_exit_2(tmp_path: Path) -> None:
    p = run("export-onnx", "examples/maedet_s.txt", "--out", str(tmp_path / "b.pt"), "--torchscript",
            "--out-indices", "1,9", "--resolution", "64")
    assert p.returncode == 2, p.stderr
    assert "out_stages" in one_line(p)
    assert not (tmp_path / "b.pt").exists()


def test_library_errors_are_zennas_errors_with_a_field(tmp_path: Path) -> None:
    from zennas_workers.backend import RayConnectError, VersionMismatchError, WorkerPoolError, check_reachable

    from zennas.blocks.backbone import Backbone
    from zennas.blocks.base import make_act
    from zennas.search.export import export_optuna
    from zennas.search.population import Population
    from zennas.search.store import SearchStore
    from zennas.space import get_space

    with pytest.raises(SpecError) as e1:
        Population(1)
    assert e1.value.field == "population" and e1.value.exit_code == 2
    with pytest.raises(SpecError) as e2:
        Backbone(get_space("detection-k1kxk1").start, out_stages=[3, 1])
    assert e2.value.field == "out_stages"
    with pytest.raises(SpecError) as e3:
        make_act("gelu")
    assert e3.value.field == "act"
    with pytest.raises(NotFoundError) as e4:
        export_optuna(SearchStore.open("sqlite://"), "nope", tmp_path / "j.log")
    assert e4.value.field == "search_id" and isinstance(e4.value, KeyError) and str(e4.value).startswith("no search")
    with pytest.raises(RayConnectError) as e5:
        check_reachable("ray://127.0.0.1:1", timeout=5)
    assert e5.value.field == "ray_address" and e5.value.exit_code == 1
    pool = WorkerPoolError("no evaluator actor started")
    mismatch = VersionMismatchError("n1", "ray", "2.0", "2.1")
    for e in (pool, mismatch):
        assert isinstance(e, RunFailure) and isinstance(e, ZenNASError) and e.exit_code == 1 and e.field
    assert mismatch.field == "ray" and "runs ray 2.1, the driver runs ray 2.0" in str(mismatch)
